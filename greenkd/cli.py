"""The `greenkd` command line: parses flags, calls the library, prints.

Heavy libraries (TensorFlow, pandas, plotly) are imported inside the commands
that need them, so `greenkd profile` and `greenkd sensors` start fast.
"""

from __future__ import annotations

import sys

import typer

from greenkd import cli_distill
from greenkd.errors import GreenkdError
from profilers import cli as profilers_cli

app = typer.Typer(
    name="greenkd",
    help="Energy-aware parallel blockwise knowledge distillation: distill, profile, sweep, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# `greenkd profile -- CMD` and `greenkd sensors` (profilers/cli.py; no TensorFlow on this path).
profilers_cli.register(app)
# `greenkd distill`, `greenkd targets`, `greenkd teacher train` (greenkd/cli_distill.py).
cli_distill.register(app)


@app.command("report")
def report_command(
    results: str = typer.Argument(
        ..., help="A sweep directory (results/<sweep>) or a results directory holding sweeps."
    ),
    out: str = typer.Option(
        "reports", "--out", help="Where to write <sweep>/report.html and index.html."
    ),
    open_report: bool = typer.Option(
        False, "--open", help="Open the report (or the index, for several) in a browser."
    ),
) -> None:
    """Write one self-contained HTML report per sweep (speedup, efficiency, greenup, timelines) and an index."""
    import webbrowser
    from pathlib import Path

    from greenkd.report import write_reports  # pandas and plotly load here only

    paths = write_reports(results, out)
    for path in paths:
        typer.echo(str(path))
    index = Path(out) / "index.html"
    if len(paths) > 1:
        typer.echo(f"index: {index}")
    if open_report:
        webbrowser.open((paths[0] if len(paths) == 1 else index).resolve().as_uri())


@app.command("sweep")
def sweep_command(
    experiment: str | None = typer.Option(
        None,
        "--experiment",
        "-e",
        help="An experiment TOML (experiments/NAME.toml) or a preset name; default: the small embedded run.",
    ),
    gpus: str | None = typer.Option(
        None, "--gpus", help="Device counts: 1-4, 1,2,4 or 2 (GPUs, else CPU workers)."
    ),
    sched: str | None = typer.Option(
        None, "--sched", help="Schedulers, comma-separated: rr, binpack, ws, opt."
    ),
    data_threads: str | None = typer.Option(
        None,
        "--data-threads",
        help="tf.data settings, comma-separated: autotune, or N parallel calls with intra-op 1.",
    ),
    backend: str | None = typer.Option(None, "--backend", help="local, mpi or dask."),
    repeat: int | None = typer.Option(
        None, "--repeat", help="Runs of every configuration (medians and spread)."
    ),
    out: str = typer.Option(
        "results", "--out", help="Results directory; the sweep goes to OUT/NAME."
    ),
    reports: str = typer.Option("reports", "--reports", help="Where the HTML report is written."),
    resume: bool = typer.Option(
        False, "--resume", help="Finish a sweep: complete runs are kept, the others run again."
    ),
    name: str | None = typer.Option(
        None, "--name", help="The sweep's name (default: the experiment's)."
    ),
    idle_seconds: float | None = typer.Option(
        None, "--idle-seconds", help="Idle power baseline before each run (s)."
    ),
    allow_oversubscribe: bool = typer.Option(
        False, "--allow-oversubscribe", help="Allow more devices than the machine has."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress; print the report's path only."
    ),
) -> None:
    """Run distillations over device counts x schedulers x tf.data threads, each profiled; write the report."""
    # No TensorFlow in this process: the runs and the teacher are child processes.
    from greenkd.config import SweepSpec
    from greenkd.sweep import run_sweep

    spec = SweepSpec.build(
        experiment,
        gpus=gpus,
        sched=sched,
        data_threads=data_threads,
        backend=backend,
        repeat=repeat,
        name=name,
        idle_seconds=idle_seconds,
        allow_oversubscribe=allow_oversubscribe or None,
    )
    result = run_sweep(spec, out, reports, resume=resume, name_given=name is not None, quiet=quiet)
    if result.failed:
        print(
            f"greenkd: {len(result.failed)} of {len(result.records)} runs did not complete: "
            + ", ".join(f"{r.run} ({r.status})" for r in result.failed),
            file=sys.stderr,
        )
    typer.echo(f"report: {result.report}" if not quiet else str(result.report))
    if result.failed:
        raise typer.Exit(1)


@app.command("plan")
def plan_command(
    timings: str = typer.Option(
        ..., "--timings", help="CSV with task,seconds[,prefix_seconds], or a run's tasks.csv."
    ),
    gpus: str = typer.Option("1-8", "--gpus", help="Device counts to plan for: 1-8, 1,2,4 or 4."),
    sched: str = typer.Option(
        "rr,binpack,ws,opt", "--sched", help="Policies, comma-separated: rr, binpack, ws, opt."
    ),
    fused: bool = typer.Option(
        False, "--fused/--no-fused", help="Fused teacher passes: one prefix per device."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON record per policy and device count."
    ),
    time_limit_s: float = typer.Option(
        5.0, "--time-limit", help="Seconds opt may search per device count."
    ),
) -> None:
    """Predict makespan, speedup and per-device load of each policy from task times, training nothing."""
    import json

    from greenkd import schedule  # pure Python, no TensorFlow
    from greenkd.config import parse_choice_list, parse_int_list

    device_counts = parse_int_list(gpus, what="devices")
    policies = parse_choice_list(sched, schedule.POLICIES, what="scheduler")
    if time_limit_s <= 0:
        raise GreenkdError(f"--time-limit must be > 0 seconds, got {time_limit_s}")
    costs = schedule.load_timings_file(timings)
    predictions = schedule.simulate(
        costs,
        device_counts,
        policies,
        fused=fused,
        cost_source="timings-file",
        time_limit_s=time_limit_s,
    )
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in predictions], indent=1))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a pipe or file: do not wrap rows at rich's default 80 columns
        console = Console(width=160)
    title = (
        f"{len(costs)} tasks from {timings}, {sum(c.seconds for c in costs):.0f} s run one by one"
    )
    console.print(schedule.predictions_table(predictions, title=title))


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except GreenkdError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("greenkd: interrupted; results written so far are kept on disk", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

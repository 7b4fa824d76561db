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
    results: str = typer.Argument(..., help="A sweep directory (results/<sweep>) or a results directory holding sweeps."),
    out: str = typer.Option("reports", "--out", help="Where to write <sweep>/report.html and index.html."),
    open_report: bool = typer.Option(False, "--open", help="Open the report (or the index, for several) in a browser."),
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


@app.command("plan")
def plan_command(
    timings: str = typer.Option(..., "--timings", help="CSV with task,seconds[,prefix_seconds], or a run's tasks.csv."),
    gpus: str = typer.Option("1-8", "--gpus", help="Device counts to plan for: 1-8, 1,2,4 or 4."),
    sched: str = typer.Option("rr,binpack,ws,opt", "--sched", help="Policies, comma-separated: rr, binpack, ws, opt."),
    fused: bool = typer.Option(False, "--fused/--no-fused", help="Fused teacher passes: one prefix per device."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per policy and device count."),
    time_limit_s: float = typer.Option(5.0, "--time-limit", help="Seconds opt may search per device count."),
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
        costs, device_counts, policies, fused=fused, cost_source="timings-file", time_limit_s=time_limit_s
    )
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in predictions], indent=1))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a pipe or file: do not wrap rows at rich's default 80 columns
        console = Console(width=160)
    title = f"{len(costs)} tasks from {timings}, {sum(c.seconds for c in costs):.0f} s run one by one"
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

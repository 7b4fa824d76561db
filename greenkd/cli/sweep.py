"""`greenkd sweep`: the grid of profiled distillation runs, then its report (no TensorFlow here)."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)


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
    framework: str | None = typer.Option(
        None,
        "--framework",
        help="Frameworks under Keras, comma-separated: tensorflow, jax; each runs the whole grid "
        "with its own 1-device baseline, and the report compares them.",
    ),
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
    power_model: str | None = typer.Option(
        None,
        "--power-model",
        help="Opt-in energy estimate where nothing measures it: cpu:IDLE_W:MAX_W (watts per CPU "
        "package at 0 and 100 % utilisation). Reported as an estimate, never added to measured energy.",
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
    from greenkd.sweep import SweepSpec, run_sweep

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
        power_model=power_model,
        framework=framework,
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

"""`greenkd plan`: predicted schedules from task times, training nothing (pure Python)."""

from __future__ import annotations

import typer

from greenkd.errors import GreenkdError


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)


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

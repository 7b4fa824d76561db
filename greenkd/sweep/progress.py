"""What a sweep draws: bars over its runs and the running run's layer tasks, and a line per run.

The bars live only on a terminal; a log or a pipe gets the per-run lines alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from greenkd.fileio import read_json
from greenkd.sweep.state import RunRecord

_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


@contextlib.contextmanager
def run_progress(
    console: Console, run_name: str, run_dir: Path, position: tuple[int, int], n_targets: int
) -> Iterator[None]:
    """A bar over the sweep's runs and one over this run's layer tasks (tasks.csv rows)."""
    if console.quiet or not console.is_terminal:  # a log gets the per-run lines only
        yield
        return
    done, total = position
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
    )
    progress.add_task(f"runs · {run_name}", total=total, completed=done)
    tasks_bar = progress.add_task("layer tasks", total=n_targets or None)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            rows = _count_rows(run_dir / "tasks.csv")
            note = "layer tasks"
            if n_targets and rows >= n_targets:
                note = "assembling and fine-tuning"
            progress.update(tasks_bar, completed=rows, description=note)
            progress.refresh()

    progress.start()
    # The poller must not take SIGINT/SIGTERM/SIGCHLD: the profiler waits for them in this
    # (the main) thread to forward them to the run; a new thread inherits the blocked mask.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        poller = threading.Thread(target=poll, name="greenkd-sweep-progress", daemon=True)
        poller.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        yield
    finally:
        stop.set()
        poller.join()
        progress.stop()


def print_run_line(console: Console, run_name: str, record: RunRecord, run_dir: Path) -> None:
    """One line per finished run: time, accuracy, accepted blocks and energy, or why it failed."""
    if record.status != "complete":
        console.print(f"  {run_name:<22} [red]{record.status}[/]  {record.error}")
        return
    summary = read_json(run_dir / "summary.json") or {}
    profile = read_json(run_dir / "profile.json") or {}
    energy_j = (profile.get("total") or {}).get("energy_j")
    energy = f"{energy_j / 1e3:.2f} kJ" if isinstance(energy_j, int | float) else "energy n/a"
    accepted = len(summary.get("accepted") or [])
    console.print(
        f"  {run_name:<22} [green]complete[/] {record.seconds or 0:7.1f} s  "
        f"top-1 {summary.get('student_accuracy', float('nan')):.2%} "
        f"(teacher {summary.get('teacher_accuracy', float('nan')):.2%})  "
        f"{accepted}/{summary.get('n_targets', '?')} blocks  {energy}"
    )


def _count_rows(path: Path) -> int:
    """Data rows in a CSV being appended to: complete lines less the header."""
    try:
        with path.open("rb") as fh:
            return max(0, sum(1 for line in fh if line.endswith(b"\n")) - 1)
    except FileNotFoundError:
        return 0

"""Which task costs a run plans with (paper §3.3, issue 5): the first source that applies.

1. `--timings FILE` ("timings-file"): every task must be in it;
2. the timing store ("store"): times measured by earlier runs with the same key (model,
   dataset, the settings that change a task's time, the hardware);
3. calibration ("calibration"): a few timed training steps of every task, measured by the
   caller (greenkd.distill.calibrate), when asked for;
4. the analytic model ("analytic"), which costs nothing and only has to rank the tasks
   (rr ignores costs; ws adapts at run time).

Measured times are whole tasks run one at a time (end - start), whose teacher-prefix
share, which fused plans need, is the analytic model's fraction; or tasks of a fused pass,
its time split by its measured per-block costs, each with its own prefix share
(greenkd.distill.planning.fused_costs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from greenkd.errors import GreenkdError
from greenkd.paths import cache_dir
from greenkd.schedule.costs import STORE_ENV, TaskCost, TimingStore, load_timings_file


def store() -> TimingStore:
    """The timing store: $GREENKD_TIMINGS, else timings.json in the greenkd cache."""
    path = os.environ.get(STORE_ENV)
    return TimingStore(Path(path) if path else cache_dir() / "timings.json")


def check_timings_file(path: str | None) -> None:
    """Fail early (before a teacher is trained) on a timings file that cannot be read."""
    if path:
        load_timings_file(path)


def from_file(path: str, names: Sequence[str]) -> list[TaskCost]:
    """Costs for `names` (in that order) from a timings file; every task must be in it."""
    given = {c.name: c for c in load_timings_file(path)}
    missing = [n for n in names if n not in given]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise GreenkdError(
            f"timings file {path} has no time for {shown}; it must list every layer task "
            f"of this model ({len(names)} tasks)"
        )
    return [given[n] for n in names]


def with_prefix_share(measured: Sequence[TaskCost], analytic: Sequence[TaskCost]) -> list[TaskCost]:
    """Measured seconds, with the analytic model's prefix fraction where none was measured."""
    model = {c.name: c for c in analytic}
    out = []
    for c in measured:
        if c.prefix_seconds > 0 or c.name not in model or model[c.name].seconds <= 0:
            out.append(c)
            continue
        share = model[c.name].prefix_seconds / model[c.name].seconds
        out.append(TaskCost(c.name, c.seconds, c.seconds * share))
    return out


def task_costs(
    names: Sequence[str],
    *,
    analytic: Sequence[TaskCost],
    store_key: str,
    timings_file: str | None = None,
    calibrate: Callable[[], list[TaskCost]] | None = None,
) -> tuple[list[TaskCost], str]:
    """The costs to plan with, in the order of `names`, and their source (module docstring)."""
    if timings_file:
        return with_prefix_share(from_file(timings_file, names), analytic), "timings-file"
    stored = store().lookup(store_key, names)
    if stored is not None:
        return with_prefix_share(stored, analytic), "store"
    if calibrate is not None:
        return calibrate(), "calibration"
    return list(analytic), "analytic"


def record(store_key: str, measured: Sequence[TaskCost]) -> int:
    """Merge measured task times into the store under `store_key`; return how many."""
    if measured:
        store().put(store_key, measured)
    return len(measured)

"""What tasks.csv says about a schedule: busy time per device, fused passes, the makespan bound."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd


def makespan_lower_bound(task_seconds: Iterable[float], n_devices: int) -> float:
    """No schedule of these tasks on n devices ends before max(sum / n, longest task)."""
    seconds = [float(s) for s in task_seconds]
    if not seconds or n_devices < 1:
        return math.nan
    return max(sum(seconds) / n_devices, max(seconds))


def interval_union_s(starts: Iterable[float], ends: Iterable[float]) -> float:
    """Seconds covered by at least one interval: a fused pass's tasks share one interval, counted once."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(zip(starts, ends, strict=True)):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return float(total)


def device_load(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per device: tasks run, busy seconds (a fused pass once), and idle seconds within the task phase."""
    t0, t1 = tasks["start"].min(), tasks["end"].max()
    load = (
        tasks.groupby("device", sort=True)
        .agg(
            n_tasks=("task", "size"),
            first_start=("start", "min"),
            last_end=("end", "max"),
        )
        .reset_index()
    )
    busy = {str(d): interval_union_s(g["start"], g["end"]) for d, g in tasks.groupby("device")}
    load["busy_s"] = load["device"].astype(str).map(busy)
    load["idle_s"] = (t1 - t0) - load["busy_s"]
    load["first_start"] -= t0
    load["last_end"] -= t0
    return load


def has_fused_passes(tasks: pd.DataFrame) -> bool:
    """Whether tasks.csv records fused passes (tasks trained together share one start and end)."""
    if "fused_group" not in tasks.columns:
        return False
    group = tasks["fused_group"]
    return bool((group.notna() & (group.astype(str).str.strip() != "")).any())

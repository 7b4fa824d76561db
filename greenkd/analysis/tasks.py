"""What tasks.csv says about a schedule: busy time per device, fused passes, the makespan bound."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

TRUNK_INDEX = -1  # the shared trunk of fused passes, drawn as its own bar before layer 0
TRUNK_TASK = "shared trunk"


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


def fused_pass_segments(tasks: pd.DataFrame) -> pd.DataFrame | None:
    """tasks.csv as bars on a time axis, a fused pass split into the blocks trained inside it.

    A fused pass trains its blocks together, step by step behind one teacher forward, so no block
    has an interval of its own. Its interval is drawn as consecutive segments: the shared trunk
    first, then each block in model order, each as long as its share of the pass's measured
    cost (`seconds_trunk` once, plus every `seconds_block`). Segment lengths are true in
    proportion, their order is not an order in time. Independent tasks keep their own interval.

    Columns: task, index, device, start, end, seconds (of the task or pass, as tasks.csv has
    them), seg_start, seg_seconds (the drawn segment), measured_s (the block's or trunk's own
    cost; an independent task's seconds), share (of the pass; NaN for an independent task),
    pass_key (device and fused group; "" for an independent task), trunk (bool). None where a
    fused pass has no per-block costs: any split of it would be made up.
    """
    group = tasks["fused_group"] if "fused_group" in tasks.columns else pd.Series("", tasks.index)
    fused = group.notna() & (group.astype(str).str.strip() != "")
    if fused.any() and (
        "seconds_block" not in tasks.columns
        or tasks.loc[fused, ["seconds_block", "seconds_trunk"]].isna().any().any()
    ):
        return None
    cols = ["task", "index", "device", "start", "end", "seconds"]
    alone = tasks.loc[~fused, cols]
    alone = alone.assign(
        seg_start=alone["start"],
        seg_seconds=alone["seconds"],
        measured_s=alone["seconds"],
        share=math.nan,
        pass_key="",
        trunk=False,
    )
    frames = [alone] if len(alone) else []
    for (device, group), rows in tasks[fused].groupby(["device", "fused_group"], sort=False):
        rows = rows.sort_values("index")
        first = rows.iloc[0]
        trunk = pd.DataFrame(
            [{**first[cols].to_dict(), "task": TRUNK_TASK, "index": TRUNK_INDEX}]
        ).assign(measured_s=float(first["seconds_trunk"]), trunk=True)
        part = pd.concat(
            [trunk, rows[cols].assign(measured_s=rows["seconds_block"], trunk=False)],
            ignore_index=True,
        )
        total = part["measured_s"].sum()
        part["share"] = part["measured_s"] / total if total > 0 else 1 / len(part)
        pass_s = float(first["end"] - first["start"])
        part["seg_seconds"] = part["share"] * pass_s
        part["seg_start"] = float(first["start"]) + part["seg_seconds"].cumsum().shift(fill_value=0)
        part["pass_key"] = f"{device}:{group}"
        frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else alone

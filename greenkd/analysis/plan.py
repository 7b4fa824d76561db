"""The schedule greenkd predicted (plan.json) against the one tasks.csv measured.

Measured makespan = last task end - first task start; per device, span = its last end - its first
start and busy = its task seconds (a fused pass counted once); ratios are measured / predicted, so
above 1 the run was slower than predicted. Measured values exist only when every planned task
finished: a run cut short has no makespan to compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from greenkd.analysis.tables import group_key
from greenkd.analysis.tasks import interval_union_s
from greenkd.rundir.read import PLAN_FILE, REQUIRED_TASK_COLUMNS, SweepData, finite

PLAN_DEVICE_COLUMNS = (
    "order",
    "device",
    "planned_tasks",
    "measured_tasks",
    "predicted_load_s",
    "measured_span_s",
    "measured_busy_s",
    "span_ratio",
    "busy_ratio",
    "note",
)
NO_PLAN = f"no {PLAN_FILE} (runs written before greenkd recorded its schedule have none)"


@dataclass(frozen=True)
class PlanComparison:
    """A run's predicted schedule next to the measured one; NaN, with `reason`, where they do not compare."""

    policy: str
    cost_source: str
    fused: bool | None
    optimal: bool | None
    predicted_makespan_s: float
    lower_bound_s: float  # the plan's own bound, on its predicted costs
    measured_makespan_s: float
    makespan_ratio: float  # measured / predicted
    moved_tasks: float  # tasks run on another device than planned; NaN without device labels
    reason: str  # why the makespans are not compared; "" when they are
    notes: tuple[
        str, ...
    ]  # what a reader needs to weigh the numbers (fused plan, work stealing, ...)
    devices: (
        pd.DataFrame
    )  # PLAN_DEVICE_COLUMNS, plan devices in plan order, then any others tasks.csv names

    def row(self) -> dict[str, Any]:
        """The run-level fields as one table row (notes joined)."""
        return {
            "policy": self.policy,
            "cost_source": self.cost_source,
            "fused": self.fused,
            "optimal": self.optimal,
            "predicted_makespan_s": self.predicted_makespan_s,
            "plan_bound_s": self.lower_bound_s,
            "measured_makespan_s": self.measured_makespan_s,
            "makespan_ratio": self.makespan_ratio,
            "moved_tasks": self.moved_tasks,
            "plan_reason": self.reason,
            "plan_note": "; ".join(self.notes),
        }


def compare_plan(plan: dict[str, Any] | None, tasks: pd.DataFrame | None) -> PlanComparison:
    """The plan's predicted makespan and per-device loads next to those measured in tasks.csv.

    Plan device i is `plan["devices"][i]`, the label tasks.csv writes in its `device` column. Measured
    values exist only when every planned task finished: a run cut short has no makespan to compare.
    """
    plan = plan if isinstance(plan, dict) else None
    if plan is None:
        return _no_comparison(NO_PLAN)
    assignment = _str_lists(plan.get("assignment"))
    loads = plan.get("predicted_load_s")
    loads = (
        [float(x) if finite(x) else math.nan for x in loads] if isinstance(loads, list) else None
    )
    labels = plan.get("devices")
    labels = [str(x) for x in labels] if isinstance(labels, list) else None
    fused = plan.get("fused") if isinstance(plan.get("fused"), bool) else None
    optimal = plan.get("optimal") if isinstance(plan.get("optimal"), bool) else None
    predicted = (
        float(plan["predicted_makespan_s"])
        if finite(plan.get("predicted_makespan_s"))
        else math.nan
    )
    bound = float(plan["lower_bound_s"]) if finite(plan.get("lower_bound_s")) else math.nan
    policy, source = str(plan.get("policy") or ""), str(plan.get("cost_source") or "")

    reason = ""
    finished = tasks if tasks is not None else pd.DataFrame(columns=list(REQUIRED_TASK_COLUMNS))
    planned = [name for names in assignment or [] for name in names]
    if assignment is None:
        reason = f"{PLAN_FILE} has no task assignment"
    elif math.isnan(predicted):
        reason = f"{PLAN_FILE} has no predicted_makespan_s"
    elif finished.empty:
        reason = "no finished task in tasks.csv"
    else:
        missing = set(planned) - set(finished["task"].astype(str))
        if missing:
            reason = (
                f"tasks.csv lacks {len(missing)} of the plan's {len(planned)} tasks "
                "(the run did not finish them): nothing measured to compare"
            )
    measured = math.nan if reason else float(finished["end"].max() - finished["start"].min())

    notes: list[str] = []
    if fused:
        notes.append(
            "fused plan: a device's predicted load is its deepest teacher prefix plus its blocks, and "
            "its tasks ran in one pass (one shared interval in tasks.csv, counted once)"
        )
    if source == "analytic":
        notes.append(
            "costs from the analytic model: predicted seconds assume a nominal FLOP rate, not this machine's"
        )
    devices_ok = (
        assignment is not None
        and labels is not None
        and loads is not None
        and len(labels) == len(assignment) == len(loads)
    )
    moved = math.nan
    if not devices_ok:
        notes.append(
            f"{PLAN_FILE} has no device labels matching its assignment: no per-device comparison"
        )
        devices = pd.DataFrame(columns=list(PLAN_DEVICE_COLUMNS))
    else:
        devices, moved = _device_comparison(assignment, loads, labels, finished, reason)
        if policy == "ws" and not math.isnan(moved):
            notes.append(
                f"work stealing: the plan is the initial split; {moved:g} task(s) ran elsewhere"
            )
        elif moved > 0:  # False for NaN: without matching labels nothing is known to have moved
            notes.append(f"{moved:g} task(s) ran on another device than planned")
    ratio = measured / predicted if predicted > 0 and not math.isnan(measured) else math.nan
    return PlanComparison(
        policy=policy,
        cost_source=source,
        fused=fused,
        optimal=optimal,
        predicted_makespan_s=predicted,
        lower_bound_s=bound,
        measured_makespan_s=measured,
        makespan_ratio=ratio,
        moved_tasks=moved,
        reason=reason,
        notes=tuple(notes),
        devices=devices,
    )


def _no_comparison(reason: str) -> PlanComparison:
    return PlanComparison(
        policy="",
        cost_source="",
        fused=None,
        optimal=None,
        predicted_makespan_s=math.nan,
        lower_bound_s=math.nan,
        measured_makespan_s=math.nan,
        makespan_ratio=math.nan,
        moved_tasks=math.nan,
        reason=reason,
        notes=(),
        devices=pd.DataFrame(columns=list(PLAN_DEVICE_COLUMNS)),
    )


def _str_lists(value: Any) -> list[list[str]] | None:
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        return None
    return [[str(x) for x in v] for v in value]


def _device_comparison(
    assignment: list[list[str]],
    loads: list[float],
    labels: list[str],
    tasks: pd.DataFrame,
    reason: str,
) -> tuple[pd.DataFrame, float]:
    """Per plan device (then per device only tasks.csv names): predicted load next to span and busy time."""
    by_device = (
        {str(d): g for d, g in tasks.groupby("device", sort=False)} if not tasks.empty else {}
    )
    matched = bool(set(by_device) & set(labels))
    rows = []
    for i, (label, names, load) in enumerate(zip(labels, assignment, loads, strict=True)):
        g = by_device.get(label)
        row = {
            "order": i,
            "device": label,
            "planned_tasks": len(names),
            "predicted_load_s": load,
            "measured_tasks": 0 if g is None else len(g),
            "note": "",
        }
        if reason:
            row["note"] = reason
        elif not matched:
            row["note"] = (
                f"none of tasks.csv's devices ({', '.join(sorted(by_device))}) is a device of the plan"
            )
        else:
            # A plan device no task ran on measured nothing: zero, not missing.
            row["measured_span_s"] = 0.0 if g is None else float(g["end"].max() - g["start"].min())
            row["measured_busy_s"] = 0.0 if g is None else interval_union_s(g["start"], g["end"])
        rows.append(row)
    for label, g in by_device.items():
        if label not in labels:
            rows.append(
                {
                    "order": len(rows),
                    "device": label,
                    "planned_tasks": 0,
                    "measured_tasks": len(g),
                    "predicted_load_s": math.nan,
                    "measured_span_s": float(g["end"].max() - g["start"].min()),
                    "measured_busy_s": interval_union_s(g["start"], g["end"]),
                    "note": "not a device of the plan",
                }
            )
    out = pd.DataFrame(rows, columns=list(PLAN_DEVICE_COLUMNS))
    for col in ("predicted_load_s", "measured_span_s", "measured_busy_s"):
        out[col] = out[col].astype(float)
    positive = out["predicted_load_s"].where(out["predicted_load_s"] > 0)
    out["span_ratio"] = out["measured_span_s"] / positive
    out["busy_ratio"] = out["measured_busy_s"] / positive
    if not matched:
        return out, math.nan
    planned_on = {name: labels[d] for d, names in enumerate(assignment) for name in names}
    ran_on = dict(zip(tasks["task"].astype(str), tasks["device"].astype(str), strict=True))
    moved = float(
        sum(1 for name, dev in ran_on.items() if name in planned_on and planned_on[name] != dev)
    )
    return out, moved


def plan_tables(sweep: SweepData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run, and per run and device, the predicted schedule next to the measured one."""
    rows, frames = [], []
    for run in sweep.runs:
        comparison = compare_plan(run.plan, run.tasks)
        key = {
            "run": run.name,
            "group": group_key(run.config) if run.config else "",
            "devices": run.devices,
            "repeat": run.repeat,
        }
        rows.append(
            {**key, "sched": run.config.get("sched", ""), "usable": run.usable, **comparison.row()}
        )
        if not comparison.devices.empty:
            frames.append(comparison.devices.assign(**key))
    device_columns = ["run", "group", "devices", "repeat", *PLAN_DEVICE_COLUMNS]
    per_device = (
        pd.concat(frames, ignore_index=True)[device_columns]
        if frames
        else pd.DataFrame(columns=device_columns)
    )
    return pd.DataFrame(rows), per_device


def makespan_ratio_medians(compared: pd.DataFrame) -> pd.DataFrame:
    """Median measured / predicted makespan per group, cost source and device count (plan_tables rows)."""
    return (
        compared.groupby(["group", "cost_source", "devices"], sort=False)
        .agg(ratio=("makespan_ratio", "median"), runs=("run", "size"))
        .reset_index()
    )

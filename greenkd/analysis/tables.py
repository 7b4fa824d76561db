"""Per run and per group tables: time, energy and utilisation per run; speedup, efficiency, greenup,
powerup per group and device count; layer runtimes; the aggregates the report's sections show.

A group is every config field except `gpus` and `out`; the repeat index lives in `meta`. On one
device every scheduler runs the same tasks one after another, so a group without a 1-device run
of its own borrows the one its other settings share (a sweep runs it once).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from greenkd.analysis.hosts import run_energy_across_hosts
from greenkd.analysis.tasks import TRUNK_INDEX, TRUNK_TASK, has_fused_passes, makespan_lower_bound
from greenkd.analysis.timeline import mean_in_window
from greenkd.rundir.phases import PARTS, whole_run
from greenkd.rundir.read import Run, SweepData, finite

PHASES = ("setup", "tasks", "select", "assemble", "finetune")  # select: target mode only
# Config fields that do not define a group: the device count varies inside a group, `out` is a path.
NOT_GROUP_FIELDS = ("gpus", "out")
# On one device every scheduler runs the same tasks one after another: a 1-device run is the
# baseline of every scheduler's group that shares its other settings (a sweep runs it once).
# Nor do the hosts of an MPI run: a 1-device run is on one host, the baseline of every host count
# (greenup across host counts, greenkd.analysis.hosts).
NOT_BASELINE_FIELDS = (*NOT_GROUP_FIELDS, "sched", "hosts", "hostfile")


def threads_label(config: dict[str, Any], meta: dict[str, Any]) -> str:
    """The tf.data thread setting as the sweep named it (meta), else from the config."""
    if meta.get("data_threads_label"):
        return str(meta["data_threads_label"])
    threads = config.get("data_threads") or {}
    if not isinstance(threads, dict):
        return str(threads)
    from greenkd.config import DataThreads

    known = {
        k: threads.get(k)
        for k in ("parallel_calls", "max_intra_op_parallelism", "private_threadpool_size")
    }
    return DataThreads(**known).label


def group_key(config: dict[str, Any]) -> str:
    """Every config field but the device count and the output path, canonically."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in NOT_GROUP_FIELDS}, sort_keys=True, default=str
    )


def baseline_key(config: dict[str, Any]) -> str:
    """The group key without the scheduler: 1-device runs with equal keys are interchangeable."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in NOT_BASELINE_FIELDS},
        sort_keys=True,
        default=str,
    )


def shared_baselines(groups: dict[str, tuple[str, bool]]) -> dict[str, list[str]]:
    """For each group without a 1-device run of its own, the groups whose 1-device runs it borrows.

    `groups` maps a group key to (its baseline key, whether it has a usable 1-device run).
    """
    owners: dict[str, list[str]] = {}
    for group, (base, has_one) in groups.items():
        if has_one:
            owners.setdefault(base, []).append(group)
    return {group: owners.get(base, []) for group, (base, has_one) in groups.items() if not has_one}


def run_table(sweep: SweepData) -> pd.DataFrame:
    """One row per run: status, group, time by phase, energy by domain, power, utilisation, accuracy."""
    rows = []
    for run in sweep.runs:
        s = run.summary or {}
        seconds = s.get("seconds") or {}
        row: dict[str, Any] = {
            "run": run.name,
            "status": run.status,
            "usable": run.usable,
            "reason": run.reason or "",
            "notes": "; ".join(run.notes),
            "group": group_key(run.config) if run.config else "",
            "baseline_key": baseline_key(run.config) if run.config else "",
            "devices": run.devices,
            "repeat": run.repeat,
            "sched": run.config.get("sched", ""),
            "threads": threads_label(run.config, run.meta) if run.config else "",
            "backend": run.config.get("backend", ""),
            "model": run.config.get("model", ""),
            "dataset": run.config.get("dataset", ""),
            "device_kind": s.get("device_kind") or run.meta.get("device_kind") or "",
            "wall_s": run.wall_s,
        }
        for phase in PHASES:
            value = seconds.get(phase)
            row[f"{phase}_s"] = float(value) if finite(value) else math.nan
        row.update(_whole_run_columns(s, seconds, run.devices))
        energy = run_energy_across_hosts(
            run
        )  # run_energy, summed over the hosts of a run on several
        energy.pop("gpu_j")
        energy.pop("energy_by_host")
        row.update(energy)
        row["avg_power_w"] = row["energy_node_j"] / row["wall_s"] if row["wall_s"] > 0 else math.nan
        row["estimate_power_w"] = (
            row["estimate_j"] / row["wall_s"] if row["wall_s"] > 0 else math.nan
        )
        window = run.window
        cpu_util = gpu_util = math.nan
        if window:
            cpu_util = mean_in_window(run.samples, "utilization", "procstat", ["cpu"], *window)
            used = [str(d) for d in run.meta.get("devices") or [] if str(d).startswith("gpu")]
            gpu_util = mean_in_window(run.samples, "utilization", "nvml", used, *window)
        row["cpu_util_pct"], row["gpu_util_pct"] = cpu_util, gpu_util
        for key in (
            "teacher_accuracy",
            "student_accuracy",
            "student_accuracy_before_finetune",
            "teacher_params",
            "student_params",
            "teacher_flops",
            "student_flops",
        ):
            row[key] = float(s[key]) if finite(s.get(key)) else math.nan
        row["n_tasks"], row["tasks_makespan_s"], row["makespan_lb_s"] = 0, math.nan, math.nan
        if run.tasks is not None and not run.tasks.empty:
            row["n_tasks"] = len(run.tasks)
            row["tasks_makespan_s"] = float(run.tasks["end"].max() - run.tasks["start"].min())
            # A fused pass's tasks have no separate times, so no bound follows from them.
            if run.devices and not has_fused_passes(run.tasks):
                row["makespan_lb_s"] = makespan_lower_bound(run.tasks["seconds"], run.devices)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["label"] = group_labels(sweep, table)
    return table


def group_labels(sweep: SweepData, table: pd.DataFrame) -> pd.Series:
    """A short name per group: scheduler and thread setting, plus any other field that varies."""
    configs = {group_key(r.config): r for r in sweep.runs if r.config}
    varying: list[str] = []
    fields = sorted(
        {k for r in configs.values() for k in r.config}
        - set(NOT_GROUP_FIELDS)
        - {"sched", "data_threads"}
    )
    for k in fields:
        if (
            len(
                {json.dumps(r.config.get(k), sort_keys=True, default=str) for r in configs.values()}
            )
            > 1
        ):
            varying.append(k)
    labels = {}
    for key, r in configs.items():
        parts = [str(r.config.get("sched", "?")), threads_label(r.config, r.meta)]
        parts += [f"{k}={r.config.get(k)}" for k in varying if k not in HOST_FIELDS]
        parts += [_host_label(r)] if any(k in HOST_FIELDS for k in varying) else []
        labels[key] = " · ".join(p for p in parts if p)
    return table["group"].map(labels).fillna("")


HOST_FIELDS = ("hosts", "hostfile")  # config fields of an MPI run across hosts


def _host_label(run: Run) -> str:
    """'2 hosts' for a run across hosts (summary.json `hosts`, else its --hosts list); '' on one
    host, so that a sweep's single-host groups keep their names."""
    block = (run.summary or {}).get("hosts")
    n = block.get("n_hosts") if isinstance(block, dict) else None
    if not finite(n) and run.config.get("hosts"):
        n = len(str(run.config["hosts"]).split(","))
    return f"{int(n)} hosts" if finite(n) and n > 1 else ""


def scaling_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group and device count: medians and spread of T, E, P; speedup, efficiency, greenup, powerup."""
    usable = runs[runs["usable"]]
    borrowed: dict[str, list[str]] = {}
    if "baseline_key" in usable.columns:
        borrowed = shared_baselines(
            {
                group: (str(g["baseline_key"].iloc[0]), bool((g["devices"] == 1).any()))
                for group, g in usable.groupby("group", sort=False)
            }
        )
    rows = []
    for group, g in usable.groupby("group", sort=False):
        first = g.iloc[0]
        shared = usable[usable["group"].isin(borrowed.get(group, [])) & (usable["devices"] == 1)]
        g = pd.concat([shared, g]) if len(shared) else g
        base = g[g["devices"] == 1]
        t1 = base["wall_s"]
        e1, p1 = _complete_energy(base, "energy_node_j"), _complete_energy(base, "avg_power_w")
        base_scope = set(base.loc[base["energy_node_j"].notna(), "energy_scope"])
        for n, gn in sorted(g.groupby("devices"), key=lambda item: item[0]):
            n = int(n)
            tn = gn["wall_s"]
            en, pn = _complete_energy(gn, "energy_node_j"), _complete_energy(gn, "avg_power_w")
            scope = set(gn.loc[gn["energy_node_j"].notna(), "energy_scope"])
            notes: list[str] = _host_notes(gn)
            row: dict[str, Any] = {
                "group": group,
                "label": first["label"],
                "sched": first["sched"],
                "threads": first["threads"],
                "devices": n,
                "hosts": int(gn["n_hosts"].max()) if "n_hosts" in gn.columns else 1,
                "repeats": len(gn),
                "runs": ", ".join(gn["run"]),
                "time_s": tn.median(),
                "time_min_s": tn.min(),
                "time_max_s": tn.max(),
                "energy_j": en.median() if len(en) else math.nan,
                "energy_min_j": en.min() if len(en) else math.nan,
                "energy_max_j": en.max() if len(en) else math.nan,
                "power_w": pn.median() if len(pn) else math.nan,
                "energy_scope": " / ".join(sorted(scope)),
                "tasks_makespan_s": gn["tasks_makespan_s"].median(),
                "makespan_lb_s": gn["makespan_lb_s"].median(),
                **{c: gn[c].median() for c in WHOLE_RUN_COLUMNS if c in gn.columns},
            }
            if n == 1 and len(shared):
                notes.append(
                    "the 1-device run shared by every scheduler (one device runs the tasks in turn)"
                )
            if t1.empty:
                row.update(speedup=math.nan, speedup_lo=math.nan, speedup_hi=math.nan)
                notes.append(
                    "no complete 1-device run in this group: speedup, greenup and powerup need one"
                )
            else:
                row["speedup"] = t1.median() / row["time_s"]
                row["speedup_lo"], row["speedup_hi"] = t1.min() / tn.max(), t1.max() / tn.min()
            row["efficiency"] = row["speedup"] / n
            row["efficiency_lo"], row["efficiency_hi"] = (
                row["speedup_lo"] / n,
                row["speedup_hi"] / n,
            )
            row["greenup"] = row["greenup_lo"] = row["greenup_hi"] = row["powerup"] = math.nan
            if not t1.empty:
                if en.empty or e1.empty:
                    reason = _first(gn["energy_note"]) if en.empty else _first(base["energy_note"])
                    notes.append(
                        f"energy not measured ({reason})" if reason else "energy not measured"
                    )
                elif len(scope | base_scope) > 1:
                    notes.append(
                        f"energy scopes differ ({' vs '.join(sorted(base_scope | scope))}): no greenup"
                    )
                else:
                    row["greenup"] = e1.median() / row["energy_j"]
                    row["greenup_lo"], row["greenup_hi"] = e1.min() / en.max(), e1.max() / en.min()
                    row["powerup"] = row["power_w"] / p1.median()
                    if len(en) < len(gn) or len(e1) < len(base):
                        notes.append("energy from the repeats that have it")
            row.update(_estimate_greenup(base, gn, notes) if not t1.empty else {})
            row["note"] = "; ".join(notes)
            row["notes"] = tuple(notes)  # the same, one by one (`shared_notes`)
            rows.append(row)
    columns = [
        "group",
        "label",
        "sched",
        "threads",
        "devices",
        "hosts",
        "repeats",
        "runs",
        "time_s",
        "time_min_s",
        "time_max_s",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "efficiency",
        "efficiency_lo",
        "efficiency_hi",
        "energy_j",
        "energy_min_j",
        "energy_max_j",
        "greenup",
        "greenup_lo",
        "greenup_hi",
        "power_w",
        "powerup",
        "energy_scope",
        "energy_estimate_j",
        "greenup_estimate",
        "estimate_model",
        "tasks_makespan_s",
        "makespan_lb_s",
        *WHOLE_RUN_COLUMNS,
        "note",
        "notes",
    ]
    return pd.DataFrame(rows, columns=columns)


def _complete_energy(rows: pd.DataFrame, column: str) -> pd.Series:
    """`column` of the rows whose energy is complete: a run across hosts whose host went silent
    has partial energy (too low by what the silent host burnt after), kept out of greenup."""
    if "energy_status" in rows.columns:
        rows = rows[rows["energy_status"] != "partial"]
    return rows[column].dropna()


def _host_notes(rows: pd.DataFrame) -> list[str]:
    """What a scaling row says about runs across hosts: how their energy was summed, and which
    runs' energy is partial (a host went silent) and so left out."""
    if "n_hosts" not in rows.columns or not (rows["n_hosts"] > 1).any():
        return []
    notes = [
        f"node energy summed over {int(rows['n_hosts'].max())} hosts: the run's own host over "
        "the whole run, each other host over the task phase its sampler covered"
    ]
    if "energy_status" in rows.columns:
        for r in rows[rows["energy_status"] == "partial"].itertuples():
            what = getattr(r, "silent_hosts", "") or "a host's samples hold no energy"
            notes.append(f"{r.run}: energy partial ({what}), left out of energy and greenup")
    return notes


# Per run (medians per group and device count in the scaling table): each part's share of the
# run (greenkd.rundir.phases) and the Amdahl bound of efficiency its serial parts set.
WHOLE_RUN_COLUMNS = (*(f"share_{part}" for part in PARTS), "amdahl_efficiency")


def _whole_run_columns(summary: dict[str, Any], seconds: dict[str, Any], devices: Any) -> dict:
    """A run's WHOLE_RUN_COLUMNS: from its summary's `whole_run`, or, for a run written before
    there was one, from its `seconds` with the task phase as its only parallel part."""
    whole = summary.get("whole_run")
    if not whole and finite(seconds.get("total")) and devices:
        whole = whole_run(seconds, int(devices))
    if not whole:
        return dict.fromkeys(WHOLE_RUN_COLUMNS, math.nan)
    shares = whole.get("shares") or {}
    row = {f"share_{p}": float(shares[p]) if finite(shares.get(p)) else math.nan for p in PARTS}
    bound = whole.get("amdahl_efficiency")
    row["amdahl_efficiency"] = float(bound) if finite(bound) else math.nan
    return row


def _estimate_greenup(base: pd.DataFrame, gn: pd.DataFrame, notes: list[str]) -> dict[str, Any]:
    """Greenup from the power model's estimates (`--power-model`), in columns of its own.

    Never mixed with measured energy: both sides are estimates from the same model, or there is
    none; `notes` gets a line saying it is an estimate.
    """
    if "estimate_j" not in gn.columns:
        return {}
    e1, en = base["estimate_j"].dropna(), gn["estimate_j"].dropna()
    if en.empty:
        return {}
    models = set(base.loc[base["estimate_j"].notna(), "estimate_model"]) | set(
        gn.loc[gn["estimate_j"].notna(), "estimate_model"]
    )
    out = {"energy_estimate_j": en.median(), "estimate_model": " / ".join(sorted(models))}
    if e1.empty:
        return out
    if len(models) > 1:
        notes.append(f"power models differ ({' vs '.join(sorted(models))}): no estimated greenup")
        return out
    out["greenup_estimate"] = e1.median() / en.median()
    notes.append(f"estimated greenup: from the power model {out['estimate_model']}, not measured")
    return out


def shared_notes(table: pd.DataFrame) -> tuple[list[str], pd.Series]:
    """The notes every row of a scaling (or energy) table has, and each row's other notes joined.

    A reason all rows share (no energy sensor on the machine) is said once above the table, not
    in every row; a table of one row keeps its notes.
    """
    if "notes" not in table.columns or len(table) < 2:
        return [], table["note"] if "note" in table.columns else pd.Series(dtype=str)
    lists = [tuple(n) if isinstance(n, tuple | list) else () for n in table["notes"]]
    shared = [n for n in lists[0] if all(n in other for other in lists[1:])]
    rest = ["; ".join(n for n in notes if n not in shared) for notes in lists]
    return shared, pd.Series(rest, index=table.index, dtype=str)


def layer_runtimes(sweep: SweepData) -> pd.DataFrame:
    """Per usable run's task: group, device count, position in the model, seconds (Fig. 5c/d)."""
    frames = []
    usable = [r for r in sweep.runs if r.usable]
    groups: dict[str, tuple[str, bool]] = {}
    for run in usable:
        key = group_key(run.config)
        has_one = groups.get(key, ("", False))[1] or run.devices == 1
        groups[key] = (baseline_key(run.config), has_one)
    borrowers: dict[
        str, list[str]
    ] = {}  # a group with 1-device runs -> the groups that borrow them
    for group, owners in shared_baselines(groups).items():
        for owner in owners:
            borrowers.setdefault(owner, []).append(group)
    notes: list[str] = []
    for run in usable:
        if run.tasks is None or run.tasks.empty:
            continue
        tasks = per_block_tasks(run.tasks)
        if tasks is None:
            notes.append(
                f"{run.name}: fused passes without per-block costs in tasks.csv (run with "
                "--no-block-costs, or before greenkd measured them): its layers share their "
                "pass's time, not drawn"
            )
            continue
        key = group_key(run.config)
        for group in [key, *(borrowers.get(key, []) if run.devices == 1 else [])]:
            t = tasks[["task", "index", "device", "seconds"]].copy()
            t["run"], t["group"], t["devices"], t["repeat"] = (
                run.name,
                group,
                run.devices,
                run.repeat,
            )
            frames.append(t)
    if not frames:
        out = pd.DataFrame(
            columns=["task", "index", "device", "seconds", "run", "group", "devices", "repeat"]
        )
    else:
        out = pd.concat(frames, ignore_index=True)
    out.attrs["notes"] = notes
    return out


def per_block_tasks(tasks: pd.DataFrame) -> pd.DataFrame | None:
    """Tasks with each layer's own seconds: fused rows get their measured `seconds_block`, and
    each pass's trunk (`seconds_trunk`, counted once) is a row of its own at TRUNK_INDEX.

    Independent tasks keep their seconds. None where a fused pass has no per-block costs: its
    rows would all show the pass's time, which is true of no layer.
    """
    if not has_fused_passes(tasks):
        return tasks
    fused = tasks["fused_group"].fillna("").astype(str) != ""
    if "seconds_block" not in tasks.columns or tasks.loc[fused, "seconds_block"].isna().any():
        return None
    out = tasks.copy()
    out.loc[fused, "seconds"] = out.loc[fused, "seconds_block"]
    trunks = (
        tasks[fused]
        .groupby(["device", "fused_group"], sort=False)
        .agg(seconds=("seconds_trunk", "first"))
        .reset_index()
        .assign(task=TRUNK_TASK, index=TRUNK_INDEX)
    )
    return pd.concat([out, trunks[["task", "index", "device", "seconds"]]], ignore_index=True)


def _first(values: Iterable[str]) -> str:
    return next((v for v in values if v), "")


def best_row(scaling: pd.DataFrame, metric: str) -> pd.Series | None:
    """The scaling row with the largest `metric` over n > 1 devices; None if no such row has one."""
    rows = scaling[scaling["devices"] > 1].dropna(subset=[metric])
    if rows.empty:
        return None
    return rows.loc[rows[metric].idxmax()]


def median_accuracy(runs: pd.DataFrame) -> dict[str, float] | None:
    """Median student and teacher top-1 over the usable runs that have both, and the change in points."""
    usable = runs[runs["usable"]].dropna(subset=["teacher_accuracy", "student_accuracy"])
    if usable.empty:
        return None
    return {
        "student": usable["student_accuracy"].median(),
        "teacher": usable["teacher_accuracy"].median(),
        "change_points": (usable["student_accuracy"] - usable["teacher_accuracy"]).median() * 100,
    }


def largest_runs(sweep: SweepData, runs: pd.DataFrame) -> list[Run]:
    """Per group, the usable run with the most devices (its first repeat), groups in sweep order."""
    by_name = {r.name: r for r in sweep.runs}
    usable = runs[runs["usable"]].sort_values(["devices", "repeat"], ascending=[False, True])
    # Groups in the sweep's own order (e.g. --sched rr,binpack puts round robin first, as in Fig. 6c/d).
    order = {g: i for i, g in enumerate(dict.fromkeys(runs["group"]))}
    picked = usable.drop_duplicates("group").sort_values("group", key=lambda col: col.map(order))
    return [by_name[name] for name in picked["run"]]


def layer_medians(layers: pd.DataFrame) -> pd.DataFrame:
    """Per group (in `layers` order), device count and layer position: median seconds over runs."""
    columns = ["group", "devices", "index", "seconds", "task"]
    frames = [
        g.groupby(["devices", "index"])
        .agg(seconds=("seconds", "median"), task=("task", "first"))
        .reset_index()
        .assign(group=group)[columns]
        for group, g in layers.groupby("group", sort=False)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def energy_table(runs: pd.DataFrame, scaling: pd.DataFrame) -> pd.DataFrame:
    """Scaling rows with each group and device count's median energy by domain and utilisation."""
    usable = runs[runs["usable"]]
    per_run = (
        usable.groupby(["group", "devices"], sort=False)
        .agg(
            cpu_package_j=("cpu_package_j", "median"),
            cpu_cores_j=("cpu_cores_j", "median"),
            cpu_node_j=("cpu_node_j", "median"),
            gpu_used_j=("gpu_used_j", "median"),
            gpu_node_j=("gpu_node_j", "median"),
            cpu_util_pct=("cpu_util_pct", "median"),
            gpu_util_pct=("gpu_util_pct", "median"),
            energy_source=("energy_source", "first"),
            energy_note=("energy_note", "first"),
        )
        .reset_index()
    )
    return scaling.merge(per_run, on=["group", "devices"], how="left")


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group label and device count: medians of accuracy, parameters and FLOPs, and their ratios."""
    usable = runs[runs["usable"]].dropna(subset=["teacher_accuracy"], how="all")
    if usable.empty:
        return pd.DataFrame()
    df = (
        usable.groupby(["label", "devices"], sort=False)
        .agg(
            repeats=("run", "size"),
            teacher_accuracy=("teacher_accuracy", "median"),
            before=("student_accuracy_before_finetune", "median"),
            student_accuracy=("student_accuracy", "median"),
            teacher_params=("teacher_params", "median"),
            student_params=("student_params", "median"),
            teacher_flops=("teacher_flops", "median"),
            student_flops=("student_flops", "median"),
        )
        .reset_index()
    )
    df["change"] = (df["student_accuracy"] - df["teacher_accuracy"]) * 100
    df["params_ratio"] = df["teacher_params"] / df["student_params"]
    df["flops_ratio"] = df["teacher_flops"] / df["student_flops"]
    return df

"""Frameworks side by side: the same setting and device count on TensorFlow and on JAX.

A sweep of several frameworks (`greenkd sweep --framework tensorflow,jax`) runs one grid per
framework; `framework` is a config field, so every framework's groups are groups of their own
and each has its own 1-device baseline (speedup, efficiency and greenup are within a framework,
`scaling_table`). This module pairs the groups whose settings are equal but for the framework.
A run directory from before frameworks were a setting has no `framework`: it ran TensorFlow.
"""

from __future__ import annotations

import json
import math

import pandas as pd

DEFAULT_FRAMEWORK = "tensorflow"
_KEY_COLUMNS = ["setting", "label", "devices"]


def framework_of(group: str) -> str:
    """The framework of a group key (a run's config as JSON, greenkd.analysis.tables.group_key)."""
    try:
        config = json.loads(group)
    except (TypeError, ValueError):
        return ""
    return str(config.get("framework") or DEFAULT_FRAMEWORK) if isinstance(config, dict) else ""


def setting_of(group: str) -> str:
    """The group key without its framework: the groups of one setting on every framework share it."""
    try:
        config = json.loads(group)
    except (TypeError, ValueError):
        return group
    if not isinstance(config, dict):
        return group
    config.pop("framework", None)
    return json.dumps(config, sort_keys=True, default=str)


def label_without_framework(label: str) -> str:
    """'round robin · autotune · framework=jax' -> 'round robin · autotune'."""
    return " · ".join(p for p in str(label).split(" · ") if not p.startswith("framework="))


def frameworks_in(runs: pd.DataFrame) -> list[str]:
    """The frameworks of the usable runs, TensorFlow (the default) first, then by name."""
    usable = runs[runs["usable"]] if "usable" in runs.columns else runs
    found = {framework_of(g) for g in usable.get("group", pd.Series(dtype=str)) if g}
    found.discard("")
    return sorted(found, key=lambda f: (f != DEFAULT_FRAMEWORK, f))


def framework_table(runs: pd.DataFrame, scaling: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, device count and framework: time, energy, speedup and greenup (each
    against its own framework's 1-device run), top-1 of teacher and student, and time and energy
    as a ratio to the reference framework's (TensorFlow where it ran, else the first).

    Empty unless the usable runs span more than one framework."""
    frameworks = frameworks_in(runs)
    if len(frameworks) < 2 or scaling.empty:
        return pd.DataFrame()
    usable = runs[runs["usable"]]
    accuracy = (
        usable.groupby(["group", "devices"], sort=False)[["teacher_accuracy", "student_accuracy"]]
        .median()
        .reset_index()
    )
    rows = scaling[["group", "label", "devices", "repeats", "time_s", "energy_j"]].copy()
    rows["speedup"], rows["greenup"] = scaling["speedup"], scaling["greenup"]
    rows = rows.merge(accuracy, on=["group", "devices"], how="left")
    rows["framework"] = rows["group"].map(framework_of)
    rows["setting"] = rows["group"].map(setting_of)
    rows["label"] = rows["label"].map(label_without_framework)
    reference = frameworks[0]
    ref = rows[rows["framework"] == reference].set_index(["setting", "devices"])
    ratios = {"time_ratio": [], "energy_ratio": []}
    for _, row in rows.iterrows():
        key = (row["setting"], row["devices"])
        base = ref.loc[key] if key in ref.index else None
        for column, value in (("time_ratio", "time_s"), ("energy_ratio", "energy_j")):
            ratio = math.nan
            if base is not None and base[value] > 0:
                ratio = row[value] / base[value]
            ratios[column].append(ratio)
    rows["time_ratio"], rows["energy_ratio"] = ratios["time_ratio"], ratios["energy_ratio"]
    rows["reference"] = reference
    order = {f: i for i, f in enumerate(frameworks)}
    rows["_order"] = rows["framework"].map(order)
    first_seen = {s: i for i, s in enumerate(dict.fromkeys(rows["setting"]))}
    rows["_setting"] = rows["setting"].map(first_seen)
    rows = rows.sort_values(["_setting", "devices", "_order"]).drop(columns=["_order", "_setting"])
    columns = [
        *_KEY_COLUMNS,
        "framework",
        "repeats",
        "time_s",
        "speedup",
        "energy_j",
        "greenup",
        "teacher_accuracy",
        "student_accuracy",
        "time_ratio",
        "energy_ratio",
        "reference",
    ]
    return rows[columns].reset_index(drop=True)

"""Rates over time from the samples (power in W, utilisation in %): window means and per-device lines.

A CPU worker is a set of cores (`cpuset0`, `cpuset1` ...); config.json's meta `device_cores` says
which, and /proc/stat's per-CPU rows (`cpu0`, `cpu1` ...) give their utilisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from greenkd.rundir.read import Run
from profilers.naming import device_sort_key

Line = tuple[np.ndarray, np.ndarray]  # (ts, value)


def mean_in_window(
    samples: pd.DataFrame | None,
    metric: str,
    sensor: str,
    devices: Iterable[str],
    start_ts: float,
    end_ts: float,
) -> float:
    """Mean of a rate metric (W, %) over the window, across the given devices; NaN if absent."""
    if samples is None:
        return math.nan
    devices = list(devices)
    rows = samples[
        (samples["metric"] == metric)
        & (samples["sensor"] == sensor)
        & samples["device"].isin(devices)
        & samples["ts"].between(start_ts, end_ts)
    ]
    if rows.empty:
        return math.nan
    return float(rows.groupby("device")["value"].mean().mean())


def worker_cpus(meta: dict[str, Any]) -> dict[str, list[str]]:
    """Each CPU worker's procstat CPUs, from meta `device_cores`: {'cpuset0': ['cpu0', 'cpu1']}.

    Empty for a run on GPUs: a GPU worker is pinned to cores too, but its work is on the GPU.
    """
    if meta.get("device_kind") != "cpu":
        return {}
    cores = meta.get("device_cores")
    if not isinstance(cores, dict):
        return {}
    return {
        str(label): [f"cpu{int(c)}" for c in ids]
        for label, ids in cores.items()
        if isinstance(ids, list)
        and all(isinstance(c, int) and not isinstance(c, bool) for c in ids)
    }


def power_lines(samples: pd.DataFrame) -> dict[str, Line]:
    """CPU packages summed (one line), and each GPU."""
    power = samples[samples["metric"] == "power"]
    lines: dict[str, Line] = {}
    pkg = power[
        power["sensor"].isin(("msr", "powercap")) & power["device"].str.startswith("package")
    ]
    if not pkg.empty:
        best = "msr" if (pkg["sensor"] == "msr").any() else "powercap"
        summed = pkg[pkg["sensor"] == best].groupby("ts")["value"].sum()
        lines["CPU packages"] = (summed.index.to_numpy(), summed.to_numpy())
    lines.update(_per_device(power[power["sensor"] == "nvml"]))
    return lines


def utilisation_lines(run: Run) -> dict[str, Line]:
    """The node's CPU, each CPU worker's core set (the mean of its cores), and each GPU."""
    samples = run.samples
    util = samples[samples["metric"] == "utilization"]
    lines: dict[str, Line] = {}
    procstat = util[util["sensor"] == "procstat"]
    cpu = procstat[procstat["device"] == "cpu"]
    if not cpu.empty:
        lines["CPU (all)"] = (cpu["ts"].to_numpy(), cpu["value"].to_numpy())
    cpus_of = worker_cpus(run.meta)
    used = run.tasks["device"] if run.tasks is not None else []
    for worker in sorted({str(d) for d in used if cpus_of.get(str(d))}, key=device_sort_key):
        rows = procstat[procstat["device"].isin(cpus_of[worker])]
        if not rows.empty:
            mean = rows.groupby("ts")["value"].mean()
            lines[worker] = (mean.index.to_numpy(), mean.to_numpy())
    lines.update(_per_device(util[util["sensor"] == "nvml"]))
    return lines


def _per_device(rows: pd.DataFrame) -> dict[str, Line]:
    groups = {str(device): g for device, g in rows.groupby("device")}
    return {
        device: (groups[device]["ts"].to_numpy(), groups[device]["value"].to_numpy())
        for device in sorted(groups, key=device_sort_key)
    }

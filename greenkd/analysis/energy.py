"""Energy from the profiler's cumulative rows: per domain over a window, per run, per task.

Which domains make up the node is `profilers.energy.node_domains`, the one definition the
profiler's summary (`total.energy_j`), `greenkd profile` and this analysis share: the AMD MSR
packages, else powercap's psys zone, else its packages and DRAM zones, plus every NVML GPU of
the node, used or idle (paper §4.5). CPU cores are a sub-domain of their package: reported,
never added.

Rows of the opt-in power model (`sensor=model`, `--power-model`) are estimates: `run_energy` keeps
them in `estimate_j` and never adds them to, or lets them stand in for, a measured figure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from greenkd.rundir.read import Run
from profilers.energy import CPU_SENSORS as CPU_ENERGY_SENSORS
from profilers.energy import GPU_SENSOR, interpolate_energy_j, node_domains
from profilers.sensors.model import MODEL_SENSOR

# A cumulative series may stop this close to a window end (one 1 Hz sample and a half): the
# profiler samples on a fixed schedule, so a run can end up to a period after its last sample.
EDGE_TOLERANCE_S = 1.5


def physical_gpu(device: str) -> str:
    """The NVML label of the GPU a device runs on: `gpu0` for `gpu0` and for `gpu0.1`."""
    return device.split(".")[0] if device.startswith("gpu") else device


def cumulative_at(ts: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A cumulative series (sorted ts) read at times `at` by the profiler's own interpolation.

    Within EDGE_TOLERANCE_S of the sampled span the profiler clamps (it measured nothing there);
    farther out the value is NaN, so that a run the samples do not cover gets no energy at all.
    """
    ts = np.asarray(ts, dtype=float)
    at = np.asarray(at, dtype=float)
    out = np.full(at.shape, np.nan)
    if len(ts) < 2:
        return out
    points = list(zip(ts.tolist(), np.asarray(values, dtype=float).tolist(), strict=True))
    for i, t in enumerate(at.tolist()):
        if ts[0] - EDGE_TOLERANCE_S <= t <= ts[-1] + EDGE_TOLERANCE_S:
            out[i] = interpolate_energy_j(points, t)
    return out


def energy_series(samples: pd.DataFrame | None) -> dict[tuple[str, str], pd.DataFrame]:
    """Each (sensor, device) cumulative energy series, sorted by time."""
    if samples is None or samples.empty:
        return {}
    rows = samples[samples["metric"] == "energy"]
    return {
        (str(sensor), str(device)): g[["ts", "value"]].sort_values("ts")
        for (sensor, device), g in rows.groupby(["sensor", "device"], sort=True)
    }


def window_energy(samples: pd.DataFrame | None, start_ts: float, end_ts: float) -> pd.DataFrame:
    """Energy (J) of every (sensor, device) domain over [start_ts, end_ts]; NaN where not covered."""
    rows = []
    for (sensor, device), g in energy_series(samples).items():
        e0, e1 = cumulative_at(
            g["ts"].to_numpy(), g["value"].to_numpy(), np.array([start_ts, end_ts])
        )
        rows.append(
            {
                "sensor": sensor,
                "device": device,
                "energy_j": e1 - e0,
                "first_ts": g["ts"].iloc[0],
                "last_ts": g["ts"].iloc[-1],
            }
        )
    return pd.DataFrame(rows, columns=["sensor", "device", "energy_j", "first_ts", "last_ts"])


def node_energy_domains(domains: pd.DataFrame) -> pd.DataFrame:
    """The rows of `domains` (columns sensor, device) that add up to the node, in `node_domains` order."""
    chosen = node_domains(zip(domains["sensor"], domains["device"], strict=True))
    rank = {key: i for i, key in enumerate(chosen)}
    keys = list(zip(domains["sensor"], domains["device"], strict=True))
    picked = domains[[key in rank for key in keys]]
    order = [rank[key] for key in zip(picked["sensor"], picked["device"], strict=True)]
    return picked.iloc[np.argsort(order, kind="stable")]


def node_scope(domains: pd.DataFrame) -> str:
    """What a node total sums, e.g. '2 CPU packages + 4 GPUs', '1 CPU package + 1 DRAM', 'psys + 2 GPUs'."""
    pairs = list(zip(domains["sensor"], domains["device"], strict=True))
    cpu = [d for s, d in pairs if s != GPU_SENSOR]
    gpus = [d for s, d in pairs if s == GPU_SENSOR]
    parts = ["psys"] if "psys" in cpu else []
    for count, noun in (
        (sum(d.startswith("package") for d in cpu), "CPU package"),
        (sum(d.startswith("dram") for d in cpu), "DRAM"),
        (len(gpus), "GPU"),
    ):
        if count:
            parts.append(f"{count} {noun}{'s' * (count > 1)}")
    return " + ".join(parts)


def cpu_package_domains(domains: pd.DataFrame) -> pd.DataFrame:
    """One row per CPU package: msr where it has the package, else powercap (never both)."""
    rows = domains[
        domains["sensor"].isin(CPU_ENERGY_SENSORS) & domains["device"].str.startswith("package")
    ]
    rank = rows["sensor"].map({s: i for i, s in enumerate(CPU_ENERGY_SENSORS)})
    return (
        rows.assign(_rank=rank).sort_values("_rank").drop_duplicates("device").drop(columns="_rank")
    )


def cpu_core_domains(domains: pd.DataFrame) -> pd.DataFrame:
    """Per-core energy rows (msr `coreN`, powercap `coresP`): inside the package, never added to it."""
    rows = domains[
        domains["sensor"].isin(CPU_ENERGY_SENSORS) & domains["device"].str.match(r"cores?\d+$")
    ]
    if rows.empty:
        return rows
    best = min(rows["sensor"], key=CPU_ENERGY_SENSORS.index)
    return rows[rows["sensor"] == best]


def cpu_sums(domains: pd.DataFrame, node: pd.DataFrame) -> dict[str, float]:
    """The CPU side of a node's energy: `cpu_package_j`, `cpu_cores_j` (a sub-domain, never
    added) and `cpu_node_j` (the CPU domains that count towards the node), each where measured."""
    out = {}
    cpu = node[node["sensor"] != GPU_SENSOR]
    for key, part in (
        ("cpu_package_j", cpu_package_domains(domains)),
        ("cpu_cores_j", cpu_core_domains(domains)),
        ("cpu_node_j", cpu),
    ):
        if not part.empty:
            out[key] = float(part["energy_j"].sum())
    return out


def run_energy(run: Run) -> dict[str, Any]:
    """A run's energy by domain over its own window, its scope and source, or why it is missing.

    energy_node_j is the sum of the node's domains (`node_domains`): cpu_node_j, their CPU side
    (packages, packages + DRAM, or psys), plus gpu_node_j, every GPU. cpu_package_j and
    cpu_cores_j are the packages and their cores whether or not the node total counts them
    (under psys it does not); gpu_used_j is the GPUs the run trained on.
    """
    out: dict[str, Any] = {
        "cpu_package_j": math.nan,
        "cpu_cores_j": math.nan,
        "cpu_node_j": math.nan,
        "gpu_used_j": math.nan,
        "gpu_node_j": math.nan,
        "energy_node_j": math.nan,
        "energy_scope": "",
        "energy_source": "",
        "energy_note": "",
        "gpu_j": {},
        "estimate_j": math.nan,
        "estimate_model": "",
    }
    window = run.window
    if run.samples is None:
        out["energy_note"] = "not profiled (no samples.csv)"
        return out
    if window is None:
        out["energy_note"] = "summary.json has no start_ts/end_ts to place the run in the samples"
        return out
    domains = window_energy(run.samples, *window)
    out.update(_estimate(domains, run.profile))
    domains = domains[domains["sensor"] != MODEL_SENSOR]
    if domains.empty:
        out["energy_note"] = "no energy sensor: " + (
            _missing_text(run.profile) or "samples hold no energy rows"
        )
        return out
    uncovered = domains[domains["energy_j"].isna()]
    if not uncovered.empty:
        names = ", ".join(f"{r.sensor}/{r.device}" for r in uncovered.itertuples())
        out["energy_note"] = f"energy samples do not cover the run window for {names}"
        return out
    node = node_energy_domains(domains)
    gpus = node[node["sensor"] == GPU_SENSOR]
    gpu_j = dict(zip(gpus["device"], gpus["energy_j"], strict=True))
    out["gpu_j"] = gpu_j
    out.update(cpu_sums(domains, node))
    if gpu_j:
        out["gpu_node_j"] = float(sum(gpu_j.values()))
        # the physical GPUs the run trained on: gpu0.0 and gpu0.1 (oversubscribed) are gpu0
        used = sorted(
            {
                physical_gpu(str(d))
                for d in run.meta.get("devices") or []
                if str(d).startswith("gpu")
            }
        )
        shared = sorted({str(d) for d in run.meta.get("devices") or [] if "." in str(d)})
        if used and all(d in gpu_j for d in used):
            out["gpu_used_j"] = float(sum(gpu_j[d] for d in used))
            if shared:  # oversubscribed: the energy is the physical GPUs', not each device's
                out["energy_note"] = (
                    f"devices {', '.join(shared)} share their GPUs: each GPU's energy counts "
                    "once, for all the devices on it"
                )
        elif used:
            out["energy_note"] = (
                f"no energy samples for used GPU(s) {', '.join(d for d in used if d not in gpu_j)}"
            )
    if node.empty:
        out["energy_note"] = "no CPU package or GPU energy domain in the samples"
        return out
    out["energy_node_j"] = float(np.nansum([out["cpu_node_j"], out["gpu_node_j"]]))
    out["energy_scope"] = node_scope(node)
    if (node["sensor"] == GPU_SENSOR).all():  # no CPU domain counts towards the node
        out["energy_note"] = (
            "GPUs only: no CPU package energy ("
            + (_missing_text(run.profile, "msr") or "no msr/powercap rows")
            + ")"
        )
    out["energy_source"] = _sources(run.profile, node)
    return out


def _estimate(domains: pd.DataFrame, profile: dict[str, Any] | None) -> dict[str, Any]:
    """The power model's estimate over the run's window (its packages summed), apart from any measurement."""
    modelled = domains[domains["sensor"] == MODEL_SENSOR]
    if modelled.empty or modelled["energy_j"].isna().any():
        return {}
    estimate = (profile or {}).get("estimate") or {}
    return {
        "estimate_j": float(modelled["energy_j"].sum()),
        "estimate_model": str(estimate.get("model") or "power model"),
    }


def _sources(profile: dict[str, Any] | None, domains: pd.DataFrame) -> str:
    """'msr: counter; nvml: counter' from profile.json, the profiler's word on each domain."""
    known = {
        (d.get("sensor"), d.get("device")): d.get("source")
        for d in (profile or {}).get("domains") or []
    }
    by_sensor: dict[str, set[str]] = {}
    for r in domains.itertuples():
        by_sensor.setdefault(r.sensor, set()).add(
            known.get((r.sensor, r.device)) or "source unknown"
        )
    return "; ".join(f"{s}: {', '.join(sorted(v))}" for s, v in by_sensor.items())


def _missing_text(profile: dict[str, Any] | None, sensor: str | None = None) -> str:
    items = [
        m
        for m in (profile or {}).get("missing") or []
        if sensor is None or m.get("sensor") == sensor
    ]
    return "; ".join(f"{m.get('sensor')}: {m.get('reason')}" for m in items)


def split_energy(
    starts: np.ndarray, ends: np.ndarray, ts: np.ndarray, cumulative_j: np.ndarray
) -> np.ndarray:
    """Each interval's share of a domain's energy: every elementary slice split among those running."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    if len(starts) == 0:
        return np.zeros(0)
    edges = np.unique(np.concatenate([starts, ends]))
    energy_at = cumulative_at(ts, cumulative_j, edges)
    slice_j = np.diff(energy_at)
    lo, hi = edges[:-1], edges[1:]
    running = (starts[:, None] <= lo[None, :]) & (ends[:, None] >= hi[None, :])
    count = running.sum(axis=0)
    share = np.where(count > 0, slice_j / np.maximum(count, 1), 0.0)
    return (running * share[None, :]).sum(axis=1)


def task_energy(tasks: pd.DataFrame, samples: pd.DataFrame | None) -> pd.DataFrame:
    """Per task: its GPU's energy (GPU tasks) and its share of the node's CPU side; NaN when unmeasured.

    Rule: within each slice between consecutive task starts/ends, a domain's energy goes in equal
    parts to the tasks running on it; a GPU is the domain of the tasks on it, the node's CPU
    domains (all of them summed: packages, packages + DRAM, or psys, as `node_domains` says) the
    domain of every task, as the CPU prepares every worker's data.
    """
    out = tasks[["task", "device", "start", "end", "seconds"]].copy()
    out["gpu_energy_j"] = math.nan
    out["cpu_energy_j"] = math.nan
    series = energy_series(samples)
    if not series or tasks.empty:
        out["energy_j"] = math.nan
        return out
    cpu = [key for key in node_domains(series) if key[0] != GPU_SENSOR]
    if cpu:
        # Sum the CPU domains at a common time grid, the union of their sample times.
        grid = np.unique(np.concatenate([series[key]["ts"].to_numpy() for key in cpu]))
        total = sum(
            cumulative_at(series[key]["ts"].to_numpy(), series[key]["value"].to_numpy(), grid)
            for key in cpu
        )
        ok = ~np.isnan(total)
        out["cpu_energy_j"] = split_energy(
            out["start"].to_numpy(), out["end"].to_numpy(), grid[ok], total[ok]
        )
    # an oversubscribed device (gpu0.1) shares its physical GPU's energy with the others on it
    physical = out["device"].astype(str).map(physical_gpu)
    for device, idx in out.groupby(physical).groups.items():
        key = (GPU_SENSOR, str(device))
        if key in series:
            g = series[key]
            rows = out.loc[idx]
            out.loc[idx, "gpu_energy_j"] = split_energy(
                rows["start"].to_numpy(),
                rows["end"].to_numpy(),
                g["ts"].to_numpy(),
                g["value"].to_numpy(),
            )
    out["energy_j"] = out[["gpu_energy_j", "cpu_energy_j"]].sum(axis=1, min_count=1)
    return out

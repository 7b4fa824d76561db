"""Sweep analysis: time, energy and utilisation per run; speedup, efficiency, greenup, powerup per group.

Definitions (paper §4.2 and §4.5), all on whole runs (setup, layer tasks, assembly, fine-tuning):

- wall time T: `summary.json` seconds.total, else end_ts - start_ts.
- energy E of a domain: its cumulative energy samples (J) interpolated at the run's start and end.
  Node energy = CPU packages + every GPU of the node (idle GPUs burn energy too, §4.5); CPU cores
  are a sub-domain of their package and are reported, never added.
- average power P = E_node / T.
- speedup_n = T_1 / T_n, efficiency_n = speedup_n / n, greenup_n = E_1 / E_n (eq. 7),
  powerup_n = P_n / P_1, where n is the device count and 1 the same group's 1-device run.
  With repeats, medians; the spread is the envelope (best against worst repeat).
- makespan lower bound = max(sum of task seconds / n, longest task).
- per-task energy: between consecutive task starts and ends, a domain's energy is split equally
  among the tasks running on it then; a GPU task is charged its GPU, and every task its share of
  the CPU packages (the CPU feeds every worker).
- predicted vs measured schedule (plan.json against tasks.csv): measured makespan = last task end -
  first task start; per device, span = its last end - its first start and busy = its task seconds
  (a fused pass counted once); ratios are measured / predicted, so above 1 the run was slower.

A group is every config field except `gpus` and `out`; the repeat index lives in `meta`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenkd.errors import GreenkdError
from greenkd.fileio import read_json
from profilers.energy import interpolate_energy_j

SAMPLE_COLUMNS = ("ts", "sensor", "device", "metric", "value", "unit")
TASK_COLUMNS = ("task", "device", "start", "end")
PHASES = ("setup", "tasks", "assemble", "finetune")
# Config fields that do not define a group: the device count varies inside a group, `out` is a path.
NOT_GROUP_FIELDS = ("gpus", "out")
# On one device every scheduler runs the same tasks one after another: a 1-device run is the
# baseline of every scheduler's group that shares its other settings (a sweep runs it once).
NOT_BASELINE_FIELDS = (*NOT_GROUP_FIELDS, "sched")
# A cumulative energy series may stop this close to a window end (one 1 Hz sample and a half): the
# profiler samples on a fixed schedule, so a run can end up to a period after its last sample.
EDGE_TOLERANCE_S = 1.5
CPU_ENERGY_SENSORS = ("msr", "powercap")  # in order of preference for the same package
PLAN_FILE = "plan.json"


@dataclass
class Run:
    """One run directory, read as it is on disk."""

    name: str
    path: Path
    status: str  # complete | partial | failed
    reason: str | None  # why the run is left out of the scaling figures; None when it is usable
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    tasks: pd.DataFrame | None = None
    samples: pd.DataFrame | None = None
    profile: dict[str, Any] | None = None
    plan: dict[str, Any] | None = (
        None  # plan.json (else summary.json's "plan"): the schedule as predicted
    )
    notes: list[str] = field(default_factory=list)  # files missing or unreadable, and what follows

    @property
    def usable(self) -> bool:
        """Complete, with a wall time and a device count: fit for the scaling figures."""
        return self.reason is None

    @property
    def devices(self) -> int | None:
        """The device count n (config `gpus`: GPUs, or CPU workers where there is no GPU)."""
        value = self.config.get("gpus")
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    @property
    def repeat(self) -> int:
        """The repeat index the sweep gave this run (0 without --repeat)."""
        return int(self.meta.get("repeat") or 0)

    @property
    def window(self) -> tuple[float, float] | None:
        """The run's (start_ts, end_ts) from summary.json."""
        s = self.summary or {}
        start, end = s.get("start_ts"), s.get("end_ts")
        if _finite(start) and _finite(end) and end > start:
            return float(start), float(end)
        return None

    @property
    def wall_s(self) -> float:
        """Wall time: summary seconds.total, else end_ts - start_ts, else NaN."""
        s = self.summary or {}
        total = (s.get("seconds") or {}).get("total")
        if _finite(total):
            return float(total)
        window = self.window
        return window[1] - window[0] if window else math.nan


@dataclass
class SweepData:
    """A sweep directory: its spec and every run found in it."""

    name: str
    path: Path
    created_ts: float | None
    spec: dict[str, Any]
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def find_sweeps(path: str | Path) -> list[Path]:
    """The sweep directories at `path`: itself if it is one, else its subdirectories that are."""
    root = Path(path)
    if not root.exists():
        raise GreenkdError(
            f"no results at {root}: give a sweep directory (with sweep.json) or a results "
            "directory holding sweeps"
        )
    if not root.is_dir():
        raise GreenkdError(f"{root} is a file; give a sweep directory or a results directory")
    if (root / "config.json").is_file() and not (root / "sweep.json").is_file():
        raise GreenkdError(
            f"{root} is one run; give its sweep directory ({root.parent}) or a results directory"
        )
    if _is_sweep_dir(root):
        return [root]
    sweeps = sorted(p for p in root.iterdir() if p.is_dir() and _is_sweep_dir(p))
    if not sweeps:
        raise GreenkdError(
            f"{root} holds no runs: expected sweep.json or run directories with config.json "
            "(run `greenkd sweep` first)"
        )
    return sweeps


def _is_sweep_dir(path: Path) -> bool:
    return (path / "sweep.json").is_file() or any(_run_dirs(path))


def _run_dirs(path: Path) -> Iterable[Path]:
    return (p for p in sorted(path.iterdir()) if p.is_dir() and (p / "config.json").is_file())


def load_sweep(path: str | Path) -> SweepData:
    """Read a sweep directory: sweep.json and every run directory; unreadable parts become notes."""
    root = Path(path)
    if not root.is_dir():
        raise GreenkdError(f"no sweep directory at {root}")
    notes: list[str] = []
    listed: list[dict[str, Any]] = []
    spec: dict[str, Any] = {}
    name, created_ts = root.name, None
    sweep_json = root / "sweep.json"
    if sweep_json.is_file():
        payload = read_json(sweep_json)
        if payload is None:
            notes.append("sweep.json is not valid JSON; runs were found from their directories")
        else:
            name = str(payload.get("name") or root.name)
            created_ts = payload.get("created_ts") if _finite(payload.get("created_ts")) else None
            spec = payload.get("spec") or {}
            listed = [r for r in payload.get("runs") or [] if isinstance(r, dict) and r.get("run")]
    else:
        notes.append("no sweep.json; runs were found from their directories")
    by_name = {str(r["run"]): r for r in listed}
    names = list(by_name)
    names += [p.name for p in _run_dirs(root) if p.name not in by_name]
    if not names:
        raise GreenkdError(
            f"{root} holds no runs: sweep.json lists none and no run directory has config.json"
        )
    runs = [load_run(root / n, listed=by_name.get(n)) for n in names]
    return SweepData(name=name, path=root, created_ts=created_ts, spec=spec, runs=runs, notes=notes)


def load_run(path: str | Path, listed: dict[str, Any] | None = None) -> Run:
    """Read one run directory; `listed` is its entry in sweep.json (status and error), if any."""
    path = Path(path)
    listed = listed or {}
    run = Run(name=path.name, path=path, status="partial", reason=None)
    if not path.is_dir():
        run.status = str(listed.get("status") or "failed")
        run.reason = f"{run.status}: {listed.get('error') or 'no run directory'}"
        return run
    payload = read_json(path / "config.json")
    if payload is None or not isinstance(payload.get("config", payload), dict):
        run.reason = "config.json missing or not valid JSON"
        run.status = str(listed.get("status") or "failed")
        return run
    run.config = dict(payload.get("config", payload))
    run.meta = dict(payload.get("meta") or {})

    summary = read_json(path / "summary.json")
    if summary is None:
        if listed.get("status") == "failed":
            run.status, run.reason = "failed", f"failed: {listed.get('error') or 'no summary.json'}"
        else:
            run.status = "partial"
            run.reason = "partial: no summary.json (the run did not finish)"
    else:
        run.summary = summary
        run.status = str(summary.get("status") or listed.get("status") or "partial")
        error = summary.get("error") or listed.get("error")
        if run.status != "complete":
            run.reason = f"{run.status}: {error or 'no error recorded'}"
        elif not math.isfinite(run.wall_s):
            run.reason = "summary.json has neither seconds.total nor start_ts/end_ts"
        elif run.devices is None:
            run.reason = "config.json has no device count (gpus)"

    run.tasks = _read_tasks(path / "tasks.csv", run.notes)
    run.samples = _read_samples(path / "samples.csv", run.notes)
    run.profile = read_json(path / "profile.json")
    if run.profile is None and (path / "profile.json").exists():
        run.notes.append("profile.json is not valid JSON")
    run.plan = read_json(path / PLAN_FILE)
    if run.plan is None:
        if (path / PLAN_FILE).exists():
            run.notes.append(f"{PLAN_FILE} is not valid JSON: no predicted schedule")
        plan = (run.summary or {}).get("plan")
        run.plan = plan if isinstance(plan, dict) else None
    return run


def _read_tasks(path: Path, notes: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        notes.append("no tasks.csv: per-layer runtimes and task allocation are not available")
        return None
    try:
        tasks = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        notes.append(f"tasks.csv unreadable ({exc})")
        return None
    missing = [c for c in TASK_COLUMNS if c not in tasks.columns]
    if missing:
        notes.append(f"tasks.csv lacks columns {', '.join(missing)}")
        return None
    for col in ("start", "end"):
        tasks[col] = pd.to_numeric(tasks[col], errors="coerce")
    # A killed run may leave a half-written last line; keep the rows that are whole.
    tasks = tasks.dropna(subset=["start", "end"]).copy()
    tasks["device"] = tasks["device"].astype(str)
    tasks["seconds"] = tasks["end"] - tasks["start"]
    if "index" not in tasks.columns:
        tasks["index"] = range(len(tasks))
    return tasks.reset_index(drop=True)


def _read_samples(path: Path, notes: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        notes.append("no samples.csv: the run was not profiled, so no energy, power or utilisation")
        return None
    try:
        samples = pd.read_csv(
            path, dtype={"sensor": str, "device": str, "metric": str, "unit": str}
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        notes.append(f"samples.csv unreadable ({exc}): no energy, power or utilisation")
        return None
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        notes.append(f"samples.csv lacks columns {', '.join(missing)}: not used")
        return None
    samples["ts"] = pd.to_numeric(samples["ts"], errors="coerce")
    samples["value"] = pd.to_numeric(samples["value"], errors="coerce")
    samples = samples.dropna(subset=["ts", "value", "sensor", "device", "metric"])
    return samples.sort_values("ts", kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- energy


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


def gpu_domains(domains: pd.DataFrame) -> pd.DataFrame:
    """Per-GPU energy rows from NVML."""
    return domains[(domains["sensor"] == "nvml") & domains["device"].str.match(r"gpu\d+$")]


def run_energy(run: Run) -> dict[str, Any]:
    """A run's energy by domain over its own window, its scope and source, or why it is missing."""
    out: dict[str, Any] = {
        "cpu_package_j": math.nan,
        "cpu_cores_j": math.nan,
        "gpu_used_j": math.nan,
        "gpu_node_j": math.nan,
        "energy_node_j": math.nan,
        "energy_scope": "",
        "energy_source": "",
        "energy_note": "",
        "gpu_j": {},
    }
    window = run.window
    if run.samples is None:
        out["energy_note"] = "not profiled (no samples.csv)"
        return out
    if window is None:
        out["energy_note"] = "summary.json has no start_ts/end_ts to place the run in the samples"
        return out
    domains = window_energy(run.samples, *window)
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
    packages, cores, gpus = (
        cpu_package_domains(domains),
        cpu_core_domains(domains),
        gpu_domains(domains),
    )
    gpu_j = dict(zip(gpus["device"], gpus["energy_j"], strict=True))
    out["gpu_j"] = gpu_j
    parts = []
    if not packages.empty:
        out["cpu_package_j"] = float(packages["energy_j"].sum())
        parts.append(f"{len(packages)} CPU package{'s' * (len(packages) > 1)}")
    if not cores.empty:
        out["cpu_cores_j"] = float(cores["energy_j"].sum())
    if gpu_j:
        out["gpu_node_j"] = float(sum(gpu_j.values()))
        parts.append(f"{len(gpu_j)} GPU{'s' * (len(gpu_j) > 1)}")
        used = [d for d in run.meta.get("devices") or [] if str(d).startswith("gpu")]
        if used and all(d in gpu_j for d in used):
            out["gpu_used_j"] = float(sum(gpu_j[d] for d in used))
        elif used:
            out["energy_note"] = (
                f"no energy samples for used GPU(s) {', '.join(d for d in used if d not in gpu_j)}"
            )
    if not parts:
        out["energy_note"] = "no CPU package or GPU energy domain in the samples"
        return out
    out["energy_node_j"] = float(np.nansum([out["cpu_package_j"], out["gpu_node_j"]]))
    out["energy_scope"] = " + ".join(parts)
    if packages.empty:
        out["energy_note"] = (
            "GPUs only: no CPU package energy ("
            + (_missing_text(run.profile, "msr") or "no msr/powercap rows")
            + ")"
        )
    out["energy_source"] = _sources(run.profile, pd.concat([packages, gpus]))
    return out


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


# ----------------------------------------------------------------------------- tasks


def makespan_lower_bound(task_seconds: Iterable[float], n_devices: int) -> float:
    """No schedule of these tasks on n devices ends before max(sum / n, longest task)."""
    seconds = [float(s) for s in task_seconds]
    if not seconds or n_devices < 1:
        return math.nan
    return max(sum(seconds) / n_devices, max(seconds))


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
    """Per task: its GPU's energy (GPU tasks) and its share of the CPU packages; NaN when unmeasured.

    Rule: within each slice between consecutive task starts/ends, a domain's energy goes in equal
    parts to the tasks running on it; a GPU is the domain of the tasks on it, the CPU packages (all of
    them summed) the domain of every task, as the CPU prepares every worker's data.
    """
    out = tasks[["task", "device", "start", "end", "seconds"]].copy()
    out["gpu_energy_j"] = math.nan
    out["cpu_energy_j"] = math.nan
    series = energy_series(samples)
    if not series or tasks.empty:
        out["energy_j"] = math.nan
        return out
    packages = cpu_package_domains(
        pd.DataFrame([{"sensor": s, "device": d} for s, d in series], columns=["sensor", "device"])
    )
    if not packages.empty:
        # Sum the packages at a common time grid, the union of their sample times.
        grid = np.unique(
            np.concatenate(
                [series[(r.sensor, r.device)]["ts"].to_numpy() for r in packages.itertuples()]
            )
        )
        total = sum(
            cumulative_at(
                series[(r.sensor, r.device)]["ts"].to_numpy(),
                series[(r.sensor, r.device)]["value"].to_numpy(),
                grid,
            )
            for r in packages.itertuples()
        )
        ok = ~np.isnan(total)
        out["cpu_energy_j"] = split_energy(
            out["start"].to_numpy(), out["end"].to_numpy(), grid[ok], total[ok]
        )
    for device, idx in out.groupby("device").groups.items():
        key = ("nvml", str(device))
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


# ----------------------------------------------------------------------------- predicted vs measured

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
        [float(x) if _finite(x) else math.nan for x in loads] if isinstance(loads, list) else None
    )
    labels = plan.get("devices")
    labels = [str(x) for x in labels] if isinstance(labels, list) else None
    fused = plan.get("fused") if isinstance(plan.get("fused"), bool) else None
    optimal = plan.get("optimal") if isinstance(plan.get("optimal"), bool) else None
    predicted = (
        float(plan["predicted_makespan_s"])
        if _finite(plan.get("predicted_makespan_s"))
        else math.nan
    )
    bound = float(plan["lower_bound_s"]) if _finite(plan.get("lower_bound_s")) else math.nan
    policy, source = str(plan.get("policy") or ""), str(plan.get("cost_source") or "")

    reason = ""
    finished = tasks if tasks is not None else pd.DataFrame(columns=list(TASK_COLUMNS))
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


def interval_union_s(starts: Iterable[float], ends: Iterable[float]) -> float:
    """Seconds covered by at least one interval: a fused pass's tasks share one interval, counted once."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(zip(starts, ends, strict=True)):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return float(total)


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


# ----------------------------------------------------------------------------- tables


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
            row[f"{phase}_s"] = float(value) if _finite(value) else math.nan
        energy = run_energy(run)
        energy.pop("gpu_j")
        row.update(energy)
        row["avg_power_w"] = row["energy_node_j"] / row["wall_s"] if row["wall_s"] > 0 else math.nan
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
            row[key] = float(s[key]) if _finite(s.get(key)) else math.nan
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
        parts += [f"{k}={r.config.get(k)}" for k in varying]
        labels[key] = " · ".join(parts)
    return table["group"].map(labels).fillna("")


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
        e1 = base["energy_node_j"].dropna()
        p1 = base["avg_power_w"].dropna()
        base_scope = set(base.loc[base["energy_node_j"].notna(), "energy_scope"])
        for n, gn in sorted(g.groupby("devices"), key=lambda item: item[0]):
            n = int(n)
            tn, en, pn = gn["wall_s"], gn["energy_node_j"].dropna(), gn["avg_power_w"].dropna()
            scope = set(gn.loc[gn["energy_node_j"].notna(), "energy_scope"])
            notes: list[str] = []
            row: dict[str, Any] = {
                "group": group,
                "label": first["label"],
                "sched": first["sched"],
                "threads": first["threads"],
                "devices": n,
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
            row["note"] = "; ".join(notes)
            rows.append(row)
    columns = [
        "group",
        "label",
        "sched",
        "threads",
        "devices",
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
        "tasks_makespan_s",
        "makespan_lb_s",
        "note",
    ]
    return pd.DataFrame(rows, columns=columns)


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
    for run in usable:
        if run.tasks is None or run.tasks.empty:
            continue
        key = group_key(run.config)
        for group in [key, *(borrowers.get(key, []) if run.devices == 1 else [])]:
            t = run.tasks[["task", "index", "device", "seconds"]].copy()
            t["run"], t["group"], t["devices"], t["repeat"] = (
                run.name,
                group,
                run.devices,
                run.repeat,
            )
            frames.append(t)
    if not frames:
        return pd.DataFrame(
            columns=["task", "index", "device", "seconds", "run", "group", "devices", "repeat"]
        )
    return pd.concat(frames, ignore_index=True)


def _first(values: Iterable[str]) -> str:
    return next((v for v in values if v), "")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_CPU_RANGE = re.compile(r"^cpu(\d+)(?:-cpu(\d+))?$")


def cpu_set(device: str) -> list[str]:
    """The procstat CPUs of a CPU worker device: `cpu2-cpu3` -> [cpu2, cpu3]; [] for a GPU."""
    match = _CPU_RANGE.match(device)
    if not match:
        return []
    lo = int(match.group(1))
    hi = int(match.group(2)) if match.group(2) is not None else lo
    return [f"cpu{i}" for i in range(lo, hi + 1)]

"""The summary: streams the sample rows into per-domain energy, the idle split, node totals and
the CO2e estimate, and assembles summary.json from what the sampler observed (`build_summary`).

Rows with ts <= the work's start belong to the idle baseline, later rows to the work; a domain's
idle power is its baseline energy over the baseline's length, and its idle energy that power
over the work's length. The node total adds only `energy.node_domains`, so nothing is counted
twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from profilers.energy import SOURCE_COUNTER, Row
from profilers.metadata import collect_metadata
from profilers.naming import device_sort_key
from profilers.sensors import missing_from
from profilers.sensors.base import GpuProcess, Problem, Sensor, Status
from profilers.sensors.model import MODEL_SENSOR, MODEL_SOURCE, PowerModelSensor


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class _DomainStats:
    first: tuple[float, float] | None = None
    boundary: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    peak_power_w: float | None = None


@dataclass
class _UtilStats:
    last_ts: float | None = None
    weighted_pct_s: float = 0.0
    seconds: float = 0.0
    rows: int = 0


@dataclass
class _ProcessStats:
    first_ts: float
    last_ts: float
    samples: int = 0
    used_memory_mib: float | None = None


@dataclass
class SummaryBuilder:
    """Streams rows into what the summary needs, without keeping them.

    Rows with ts <= `work_start_ts` belong to the idle baseline, later rows to
    the work. Utilization rows cover the interval since the previous row of
    the same device and are averaged weighted by that interval's length.
    """

    work_start_ts: float | None = None
    energy: dict[tuple[str, str], _DomainStats] = field(default_factory=dict)
    utilization: dict[tuple[str, str], _UtilStats] = field(default_factory=dict)
    processes: dict[tuple[str, str, int], _ProcessStats] = field(default_factory=dict)

    def in_work(self, ts: float) -> bool:
        """Whether a row at `ts` is past the idle baseline."""
        return self.work_start_ts is not None and ts > self.work_start_ts

    def add(self, row: Row) -> None:
        """Account one row."""
        key = (row.sensor, row.device)
        work = self.in_work(row.ts)
        if row.metric == "energy":
            stats = self.energy.setdefault(key, _DomainStats())
            point = (row.ts, row.value)
            if stats.first is None:
                stats.first = point
            if not work or stats.boundary is None:
                # The last idle-phase reading is the baseline's end; a domain
                # first seen during the work starts its accounting there.
                stats.boundary = point
            stats.last = point
        elif row.metric == "power" and work:
            stats = self.energy.setdefault(key, _DomainStats())
            if stats.peak_power_w is None or row.value > stats.peak_power_w:
                stats.peak_power_w = row.value
        elif row.metric == "utilization":
            util = self.utilization.setdefault(key, _UtilStats())
            if work and util.last_ts is not None:
                dt = row.ts - util.last_ts
                util.weighted_pct_s += row.value * dt
                util.seconds += dt
                util.rows += 1
            util.last_ts = row.ts

    def add_process(self, sensor: str, ts: float, process: GpuProcess) -> None:
        """Account one sighting of a foreign GPU process: when first and last seen, its peak memory."""
        key = (sensor, process.device, process.pid)
        stats = self.processes.setdefault(key, _ProcessStats(ts, ts))
        stats.last_ts = ts
        stats.samples += 1
        if process.used_memory_mib is not None and (
            stats.used_memory_mib is None or process.used_memory_mib > stats.used_memory_mib
        ):
            stats.used_memory_mib = process.used_memory_mib

    def foreign_processes(self, is_used: dict[str, Callable[[str], bool]]) -> list[dict[str, Any]]:
        """The summary's `gpu_foreign_processes`; `is_used` maps a sensor to its `is_used`."""
        out = [
            {
                "gpu": device,
                "pid": pid,
                "first_ts": stats.first_ts,
                "last_ts": stats.last_ts,
                "samples": stats.samples,
                "used_memory_mib": stats.used_memory_mib,
                "used": is_used[sensor](device) if sensor in is_used else True,
            }
            for (sensor, device, pid), stats in self.processes.items()
        ]
        out.sort(key=lambda p: (device_sort_key(p["gpu"]), p["pid"]))
        return out

    def domains(
        self,
        sources: dict[tuple[str, str], str],
        used: dict[tuple[str, str], bool],
        in_total: set[tuple[str, str]],
        failed: set[tuple[str, str]],
        resets: dict[tuple[str, str], list[float]] | None = None,
    ) -> list[dict[str, Any]]:
        """The summary's `domains` list, one entry per energy domain.

        `resets`: when each counter was found reset (its `counter_resets`).
        """
        out = []
        for (sensor, device), stats in self.energy.items():
            if stats.first is None or stats.boundary is None or stats.last is None:
                continue
            (t_first, e_first), (t_work, e_work), (t_last, e_last) = (
                stats.first,
                stats.boundary,
                stats.last,
            )
            energy_j = e_last - e_work
            seconds = t_last - t_work
            idle_seconds = t_work - t_first
            idle_power_w = (e_work - e_first) / idle_seconds if idle_seconds > 0 else None
            idle_energy_j = idle_power_w * seconds if idle_power_w is not None else None
            out.append(
                {
                    "sensor": sensor,
                    "device": device,
                    "energy_j": energy_j,
                    "source": sources.get((sensor, device), SOURCE_COUNTER),
                    "avg_power_w": energy_j / seconds if seconds > 0 else None,
                    "peak_power_w": stats.peak_power_w,
                    "idle_power_w": idle_power_w,
                    "idle_energy_j": idle_energy_j,
                    "dynamic_energy_j": energy_j - idle_energy_j
                    if idle_energy_j is not None
                    else None,
                    "used": used.get((sensor, device), True),
                    "in_total": (sensor, device) in in_total,
                    "complete": (sensor, device) not in failed,
                    "start_ts": t_work,
                    "end_ts": t_last,
                    "counter_resets": list((resets or {}).get((sensor, device), [])),
                }
            )
        out.sort(key=lambda d: (d["sensor"], device_sort_key(d["device"])))
        return out

    def utilizations(self) -> list[dict[str, Any]]:
        """The summary's `utilization` list: time-weighted average over the work."""
        out = [
            {"sensor": sensor, "device": device, "avg_pct": stats.weighted_pct_s / stats.seconds}
            for (sensor, device), stats in self.utilization.items()
            if stats.seconds > 0
        ]
        out.sort(key=lambda d: (d["sensor"], device_sort_key(d["device"])))
        return out


def totals(domains: list[dict[str, Any]]) -> dict[str, Any]:
    """Node energy: the sum of the domains that do not overlap (packages or psys, DRAM, every GPU)."""
    parts = [d for d in domains if d["in_total"]]
    if not parts:
        return {"energy_j": None, "idle_energy_j": None, "dynamic_energy_j": None, "domains": []}
    idle = [d["idle_energy_j"] for d in parts]
    idle_j = sum(idle) if all(v is not None for v in idle) else None
    energy_j = sum(d["energy_j"] for d in parts)
    return {
        "energy_j": energy_j,
        "idle_energy_j": idle_j,
        "dynamic_energy_j": energy_j - idle_j if idle_j is not None else None,
        "domains": [f"{d['sensor']}:{d['device']}" for d in parts],
    }


def carbon_estimate(
    energy_j: float | None, intensity_g_per_kwh: float | None
) -> dict[str, Any] | None:
    """Offline CO2e estimate: measured energy times a fixed grid intensity (None without an intensity)."""
    if intensity_g_per_kwh is None:
        return None
    if energy_j is None:
        return {
            "g_co2e": None,
            "intensity_g_per_kwh": intensity_g_per_kwh,
            "note": "no energy was measured on this node, so there is no estimate",
        }
    return {
        "g_co2e": energy_j / 3.6e6 * intensity_g_per_kwh,
        "intensity_g_per_kwh": intensity_g_per_kwh,
        "note": (
            f"estimate: measured energy ({energy_j:.1f} J, the domains in `total`) x "
            f"{intensity_g_per_kwh:g} gCO2e/kWh; excludes what is not measured "
            "(memory outside RAPL, disks, fans, power-supply losses)"
        ),
    }


@dataclass(frozen=True)
class RunFacts:
    """What the sampler observed up to one moment: everything `build_summary` reads."""

    final: bool
    reasons: list[str]
    hz: float
    samples: int
    idle_seconds: float
    first_ts: float | None
    work_start_ts: float | None
    last_ts: float | None
    domains: list[dict[str, Any]]
    utilization: list[dict[str, Any]]
    gpus: list[int] | None
    statuses: list[Status]
    runtime_missing: list[Problem]
    carbon_intensity_g_per_kwh: float | None
    lateness_s: list[float]
    missed_ticks: int
    sampler_cpu_s: float | None
    samples_file: str
    marks_file: str
    marks: int
    sensors: list[Sensor]
    command: list[str] | None
    exit_code: int | None
    # When each counter was found reset, by (sensor, device).
    counter_resets: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # `SummaryBuilder.foreign_processes`.
    gpu_processes: list[dict[str, Any]] = field(default_factory=list)
    # The caller's own lines for `warnings` (how the GPUs were chosen).
    warnings: list[str] = field(default_factory=list)
    # `profilers.attribution.Attribution.summary`: the work's estimated share, beside the totals.
    attribution: dict[str, Any] | None = None


def gpu_energy(
    selected: list[int] | None, nvml_domains: list[dict[str, Any]], known: list[dict[str, Any]]
) -> dict[str, Any]:
    """The summary's `gpus`: the GPUs the run uses, their energy and the node's.

    `unmeasured`: used GPUs that NVML lists but whose energy is not measured (no power
    reading, or not readable: `missing` says why). `used_energy_j` is None where the run uses
    GPUs and none of them is measured, rather than a zero nobody measured.
    """
    measured = {d["device"] for d in nvml_domains}
    known_indices = [g["index"] for g in known]
    indices = known_indices if selected is None else selected
    unmeasured = [f"gpu{i}" for i in indices if i in known_indices and f"gpu{i}" not in measured]
    used = [d["energy_j"] for d in nvml_domains if d["used"]]
    if not nvml_domains:
        used_energy_j = None
    elif used or selected == []:
        used_energy_j = sum(used)
    else:
        used_energy_j = None
    return {
        "selected": selected,
        "used_energy_j": used_energy_j,
        "node_energy_j": sum(d["energy_j"] for d in nvml_domains) if nvml_domains else None,
        "unmeasured": unmeasured,
    }


def warning_lines(facts: RunFacts) -> list[str]:
    """The summary's `warnings`: what a reader must know to trust a complete run's figures."""
    lines = list(facts.warnings)
    for sensor in facts.sensors:
        lines += sensor.warnings()
    for (sensor, device), times in sorted(facts.counter_resets.items()):
        for ts in times:
            lines.append(
                f"{sensor}:{device}: energy counter found reset (driver reload or GPU reset) at "
                f"ts {ts:.3f}; the interval across the reset is integrated from power readings "
                "and the counter is counted from its new baseline"
            )
    foreign = facts.gpu_processes
    if foreign:
        on_used = sorted({p["gpu"] for p in foreign if p["used"]}, key=device_sort_key)
        on_idle = sorted({p["gpu"] for p in foreign if not p["used"]}, key=device_sort_key)
        where = []
        if on_used:
            where.append(
                f"on {', '.join(on_used)}, which the run uses: their energy is in the run's "
                "GPU energy"
            )
        if on_idle:
            where.append(
                f"on {', '.join(on_idle)}, which the run does not use: their energy is in the "
                "node's"
            )
        pids = sorted({p["pid"] for p in foreign})
        lines.append(
            f"{len(pids)} GPU process(es) not started by the profiled work (pid "
            f"{', '.join(map(str, pids))}) ran {'; and '.join(where)} "
            "(see gpu_foreign_processes)"
        )
    return lines


def estimate_block(modelled: list[dict[str, Any]], sensors: list[Sensor]) -> dict[str, Any] | None:
    """The summary's `estimate`: the power model's domains and their sum, apart from `total`.

    None without `--power-model`. Its joules are never added to a measured one: `total`,
    `carbon` and `attribution` read measured domains only.
    """
    model = next((s for s in sensors if isinstance(s, PowerModelSensor)), None)
    if model is None:
        return None
    domains = [{**d, "source": MODEL_SOURCE, "in_total": False} for d in modelled]
    parts = totals([{**d, "in_total": True} for d in domains])
    seconds = [d["end_ts"] - d["start_ts"] for d in domains]
    energy_j = parts["energy_j"]
    return {
        "sensor": MODEL_SENSOR,
        "model": model.model.spec,
        "method": model.model.method,
        "energy_j": energy_j,
        "idle_energy_j": parts["idle_energy_j"],
        "dynamic_energy_j": parts["dynamic_energy_j"],
        "avg_power_w": energy_j / max(seconds)
        if energy_j is not None and seconds and max(seconds) > 0
        else None,
        "domains": domains,
        "note": "estimated from CPU utilisation by the power model, not measured; never added to "
        "`total` or to any measured energy",
    }


def build_summary(facts: RunFacts) -> dict[str, Any]:
    """The summary (summary.json): status, timeline, energy per domain and in total, sampling."""
    start_ts = facts.work_start_ts
    end_ts = facts.last_ts
    first_ts = facts.first_ts
    measured_idle = facts.idle_seconds > 0 and start_ts is not None and first_ts is not None
    # Modelled domains (`--power-model`) are kept apart: `estimate`, never `domains` or `total`.
    domains = [d for d in facts.domains if d["sensor"] != MODEL_SENSOR]
    modelled = [d for d in facts.domains if d["sensor"] == MODEL_SENSOR]
    total = totals(domains)
    nvml_domains = [d for d in domains if d["sensor"] == "nvml"]
    metadata = collect_metadata(facts.sensors)
    lateness_ms = [1000.0 * s for s in facts.lateness_s]
    reasons = facts.reasons
    summary: dict[str, Any] = {
        "status": ("partial" if reasons else "complete") if facts.final else "running",
        "reason": "; ".join(reasons) if reasons else None,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "duration_s": end_ts - start_ts if start_ts is not None and end_ts is not None else None,
        "hz": facts.hz,
        "samples": facts.samples,
        "idle": {
            "seconds": (start_ts - first_ts) if measured_idle else 0.0,  # type: ignore[operator]
            "start_ts": first_ts if measured_idle else start_ts,
            "end_ts": start_ts,
        },
        "domains": domains,
        "total": total,
        "utilization": facts.utilization,
        "gpus": gpu_energy(facts.gpus, nvml_domains, metadata.get("gpus", [])),
        # An estimate beside the measured `domains` and `total`, never replacing them.
        "attribution": facts.attribution,
        # `--power-model`'s estimate, labelled as one; None without the flag.
        "estimate": estimate_block(modelled, facts.sensors),
        "missing": [p.as_dict() for p in [*missing_from(facts.statuses), *facts.runtime_missing]],
        # Complete but flagged: counter resets, MIG, foreign GPU processes, assumed GPU order.
        "warnings": warning_lines(facts),
        "gpu_foreign_processes": facts.gpu_processes,
        "carbon": carbon_estimate(total["energy_j"], facts.carbon_intensity_g_per_kwh),
        "sensors": [
            {
                "sensor": s.sensor,
                "available": s.available,
                "detail": s.detail,
                "reason": s.reason,
            }
            for s in facts.statuses
        ],
        "sampling": {
            "period_s": 1.0 / facts.hz,
            "jitter_p50_ms": percentile(lateness_ms, 50),
            "jitter_p99_ms": percentile(lateness_ms, 99),
            "jitter_max_ms": max(lateness_ms) if lateness_ms else None,
            "missed_ticks": facts.missed_ticks,
            "sampler_cpu_s": facts.sampler_cpu_s,
        },
        "files": {
            "samples": facts.samples_file,
            "marks": facts.marks_file,
        },
        "marks": facts.marks,
        "metadata": metadata,
    }
    if facts.command is not None:
        summary["command"] = facts.command
        summary["exit_code"] = facts.exit_code
    return summary

"""The one place that turns readings into energy and power (no pandas), and says which add up.

- Counters: cumulative joules since the profiler's start, accumulating each
  delta modulo the counter's range (a 32-bit MSR wraps every few minutes under
  load; one sample per wrap period sees every wrap). A counter that cannot wrap
  in practice (`Counter.can_wrap` False: NVML's 64-bit mJ) and goes down was
  reset (driver reload, GPU reset): its reading is the new baseline, the
  interval across the reset is integrated from the domain's power readings
  (nothing is added where there are none), and `resets` records when.
- Power-only domains (NVML without an energy counter): energy is the
  trapezoidal integral of the power readings.
- Either way every energy domain writes cumulative `energy` rows, so the energy
  of any interval is the difference of the interpolated cumulative values
  (`interval_energy_j`); nobody downstream integrates power.
- `node_domains`: which energy domains add up to the node's energy without overlap.

The sample rows' columns are `SAMPLE_FIELDS`; `profilers.summary` turns the rows into the summary.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from profilers.sensors.base import Counter, CounterSum, Gauge, Observation, Power

UNITS = {
    "energy": "J",
    "power": "W",
    "utilization": "%",
    "memory_used": "MiB",
    "clock_sm": "MHz",
    "temperature": "C",
}
SAMPLE_FIELDS = ("ts", "sensor", "device", "metric", "value", "unit")
SOURCE_COUNTER = "counter"
SOURCE_INTEGRATED = "integrated_power"


@dataclass(frozen=True)
class Row:
    """One tidy sample row: ts (Unix s), sensor, device, metric, value, unit."""

    ts: float
    sensor: str
    device: str
    metric: str
    value: float
    unit: str

    def as_csv(self) -> list[str]:
        """The row as CSV fields; floats in their shortest exact form."""
        return [
            repr(self.ts),
            self.sensor,
            self.device,
            self.metric,
            repr(float(self.value)),
            self.unit,
        ]


def counter_delta_ticks(previous: int, current: int, modulus: int) -> int:
    """Ticks between two readings of a counter that wraps at `modulus` (at most one wrap between them)."""
    return (current - previous) % modulus


def counter_was_reset(previous: int, current: int, can_wrap: bool) -> bool:
    """Whether a counter that cannot wrap went down: a reset, whose reading starts a new baseline."""
    return not can_wrap and current < previous


def trapezoid_energy_j(ts0: float, power0_w: float, ts1: float, power1_w: float) -> float:
    """Energy between two power readings, trapezoidal rule."""
    return 0.5 * (power0_w + power1_w) * (ts1 - ts0)


def interpolate_energy_j(points: Sequence[tuple[float, float]], ts: float) -> float:
    """Cumulative energy at `ts` by linear interpolation of sorted (ts, energy_j) points.

    Outside the sampled span the nearest end value is returned: the profiler
    measured nothing there, and extrapolating would invent joules.
    """
    if not points:
        raise ValueError("no energy points")
    times = [p[0] for p in points]
    i = bisect.bisect_left(times, ts)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (t0, e0), (t1, e1) = points[i - 1], points[i]
    if t1 == t0:
        return e1
    return e0 + (e1 - e0) * (ts - t0) / (t1 - t0)


def interval_energy_j(
    points: Sequence[tuple[float, float]], start_ts: float, end_ts: float
) -> float:
    """Energy of one domain between two times (e.g. a task's start and end) from its cumulative rows."""
    return interpolate_energy_j(points, end_ts) - interpolate_energy_j(points, start_ts)


@dataclass
class _Track:
    cumulative_j: float = 0.0
    last_ticks: int | None = None
    last_power_w: float | None = None
    last_ts: float | None = None
    source: str = SOURCE_COUNTER


class EnergyAccountant:
    """Per-sensor state that turns one read's observations into tidy rows.

    Counter -> `energy` (cumulative J) and `power` (delta J / delta t, eq. 5);
    Power -> `power`, plus integrated `energy` when the domain has no counter;
    CounterSum -> the members' summed energy and its power; Gauge -> its row.
    Power from counters is written only for intervals of at least
    `min_power_interval_s`: a counter read twice within a few ms gives a rate
    dominated by its update granularity.
    """

    def __init__(self, sensor: str, min_power_interval_s: float = 0.0) -> None:
        self.sensor = sensor
        self.min_power_interval_s = min_power_interval_s
        self.tracks: dict[str, _Track] = {}
        # When each counter was found reset (ts of the first reading after the reset).
        self.resets: dict[str, list[float]] = {}
        # The last power reading of each device, (ts, W): bridges a counter reset.
        self._last_power: dict[str, tuple[float, float]] = {}

    def sources(self) -> dict[str, str]:
        """Energy source of each device: `counter` or `integrated_power`."""
        return {device: track.source for device, track in self.tracks.items()}

    def _row(self, ts: float, device: str, metric: str, value: float) -> Row:
        return Row(ts, self.sensor, device, metric, value, UNITS[metric])

    def _energy_rows(
        self, ts: float, device: str, track: _Track, delta_j: float, with_power: bool
    ) -> list[Row]:
        rows = []
        first = track.last_ts is None
        if not first:
            track.cumulative_j += delta_j
        rows.append(self._row(ts, device, "energy", track.cumulative_j))
        if with_power and not first:
            dt = ts - track.last_ts  # type: ignore[operator]
            if dt >= self.min_power_interval_s and dt > 0:
                rows.append(self._row(ts, device, "power", delta_j / dt))
        track.last_ts = ts
        return rows

    def rows(self, ts: float, observations: Iterable[Observation]) -> list[Row]:
        """Rows for one read of this sensor at time `ts`."""
        out: list[Row] = []
        sums: list[CounterSum] = []
        observations = list(observations)
        power_now = {o.device: o.watts for o in observations if isinstance(o, Power)}
        for obs in observations:
            if isinstance(obs, Counter):
                track = self.tracks.setdefault(obs.device, _Track(source=SOURCE_COUNTER))
                delta_j = 0.0
                if track.last_ticks is not None:
                    if counter_was_reset(track.last_ticks, obs.ticks, obs.can_wrap):
                        self.resets.setdefault(obs.device, []).append(ts)
                        delta_j = self._bridge_reset_j(obs.device, ts, power_now)
                    else:
                        delta_j = (
                            counter_delta_ticks(track.last_ticks, obs.ticks, obs.modulus)
                            * obs.joules_per_tick
                        )
                track.last_ticks = obs.ticks
                out.extend(self._energy_rows(ts, obs.device, track, delta_j, obs.emit_power))
            elif isinstance(obs, Power):
                out.append(self._row(ts, obs.device, "power", obs.watts))
                if obs.integrate:
                    track = self.tracks.setdefault(obs.device, _Track(source=SOURCE_INTEGRATED))
                    delta_j = 0.0
                    if track.last_ts is not None and track.last_power_w is not None:
                        delta_j = trapezoid_energy_j(
                            track.last_ts, track.last_power_w, ts, obs.watts
                        )
                    track.last_power_w = obs.watts
                    out.extend(self._energy_rows(ts, obs.device, track, delta_j, with_power=False))
            elif isinstance(obs, Gauge):
                out.append(self._row(ts, obs.device, obs.metric, obs.value))
            elif isinstance(obs, CounterSum):
                sums.append(obs)
        for total in sums:
            members = [self.tracks[m] for m in total.members if m in self.tracks]
            if not members:
                continue
            track = self.tracks.setdefault(total.device, _Track(source=SOURCE_COUNTER))
            summed = sum(m.cumulative_j for m in members)
            delta_j = summed - track.cumulative_j
            out.extend(self._energy_rows(ts, total.device, track, delta_j, with_power=True))
            track.cumulative_j = summed
        for device, watts in power_now.items():
            self._last_power[device] = (ts, watts)
        return out

    def _bridge_reset_j(self, device: str, ts: float, power_now: dict[str, float]) -> float:
        """Energy across the interval in which a counter was reset, from the power readings."""
        previous = self._last_power.get(device)
        if previous is None or device not in power_now:
            return 0.0  # no power reading on both sides: the interval is not counted
        return trapezoid_energy_j(previous[0], previous[1], ts, power_now[device])


# Which energy domains add up to the node's energy (the one definition; the profiler's summary,
# the analysis and the report all use `node_domains`). RAPL counters nest: an AMD MSR package
# contains its cores; a powercap package its core/uncore sub-zones; powercap's psys zone covers
# the whole platform (packages and DRAM included). msr and powercap read the same RAPL counters,
# so where both appear msr is taken (the profiler opens powercap only when the MSRs fail).
CPU_SENSORS = ("msr", "powercap")  # in order of preference for the same packages
GPU_SENSOR = "nvml"


def node_domains(domains: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (sensor, device) domains whose sum is the node's energy, without overlap.

    CPU: the AMD MSR packages; else powercap's `psys` zone if it has one, else its
    packages (`packageP`, `packageP_dieD`) and DRAM zones. GPUs: every NVML GPU of the
    node, used or idle (an idle GPU still draws power, paper §4.5). Other sensors and
    sub-domains (cores, uncore) are reported but never added.
    """
    present = list(dict.fromkeys((str(s), str(d)) for s, d in domains))
    out: list[tuple[str, str]] = []
    for sensor in CPU_SENSORS:
        devices = [d for s, d in present if s == sensor]
        if sensor == "msr":
            chosen = [d for d in devices if d.startswith("package")]
        elif "psys" in devices:
            chosen = ["psys"]
        else:
            chosen = [d for d in devices if d.startswith(("package", "dram"))]
        if chosen:
            out += [(sensor, d) for d in chosen]
            break
    out += [(s, d) for s, d in present if s == GPU_SENSOR and d.startswith("gpu")]
    return out

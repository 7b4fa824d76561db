"""CPU utilisation from `/proc/stat`, paper §4.1.2 eq. 6.

Each `cpu`/`cpuN` line holds cumulative jiffies: user nice system idle iowait
irq softirq steal guest guest_nice. Busy time is user + nice + system + irq +
softirq; the total is the first eight fields. guest and guest_nice are already
counted inside user and nice, so they are not added again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from profilers.sensors.base import (
    Gauge,
    Observation,
    Sensor,
    SensorError,
    Status,
    describe_os_error,
)


def proc_stat_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The stat file: the argument, else `$GREENKD_PROC_STAT`, else `/proc/stat`."""
    return Path(path if path is not None else os.environ.get("GREENKD_PROC_STAT", "/proc/stat"))


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative busy and total jiffies of one `cpu` line."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """Parse the `cpu` and `cpuN` lines of /proc/stat into busy/total jiffies by device name."""
    times: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields[:8]] + [0] * (8 - min(len(fields), 8))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy = user + nice + system + irq + softirq
        times[name] = CpuTimes(busy=busy, total=busy + idle + iowait + steal)
    return times


@dataclass(frozen=True)
class CpuSeconds:
    """The whole machine's CPU seconds over one interval: busy, and in all (busy + idle + iowait + steal)."""

    busy_s: float
    total_s: float


def cpu_seconds(previous: CpuTimes, current: CpuTimes, ticks_per_s: float) -> CpuSeconds:
    """The jiffies between two readings of one line as seconds (USER_HZ ticks per second)."""
    return CpuSeconds(
        busy_s=max(0, current.busy - previous.busy) / ticks_per_s,
        total_s=max(0, current.total - previous.total) / ticks_per_s,
    )


def utilization_pct(previous: CpuTimes, current: CpuTimes) -> float | None:
    """Eq. 6: busy share of the jiffies between two readings, in percent; None if no time passed."""
    total = current.total - previous.total
    if total <= 0:
        return None
    busy = current.busy - previous.busy
    return min(100.0, max(0.0, 100.0 * busy / total))


class ProcStatSensor(Sensor):
    """Utilisation over each interval, overall (`cpu`) and per logical CPU (`cpuN`).

    `last_interval`: the whole machine's busy and total CPU seconds over the interval the last
    read closed (None before the second read), from the same reading as its utilisation; the
    attribution compares the profiled processes' CPU time with it.
    """

    name = "procstat"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = proc_stat_path(path)
        self._previous: dict[str, CpuTimes] = {}
        self._cpus = 0
        # /proc/stat counts in USER_HZ ticks, as /proc/<pid>/stat does.
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK"))
        self.last_interval: CpuSeconds | None = None

    def _load(self) -> dict[str, CpuTimes]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise SensorError(
                f"{self.path} is no longer readable: {describe_os_error(exc)}",
                "the readings up to here are kept; check GREENKD_PROC_STAT",
            ) from exc
        times = parse_proc_stat(text)
        if "cpu" not in times:
            raise SensorError(
                f"{self.path} has no `cpu` line", "point GREENKD_PROC_STAT at /proc/stat"
            )
        return times

    def probe(self) -> Status:
        """Check the stat file parses."""
        try:
            times = self._load()
        except SensorError as exc:
            return Status(self.name, False, reason=exc.reason, fix=exc.fix)
        # The first interval starts at the first sample, not at the probe.
        self._previous = {}
        self.last_interval = None
        self._cpus = sum(1 for name in times if name != "cpu")
        return Status(self.name, True, detail=f"{self._cpus} CPUs from {self.path}")

    def read(self) -> list[Observation]:
        """Utilisation of every CPU line since the previous read (nothing on the very first)."""
        current = self._load()
        before_all = self._previous.get("cpu")
        self.last_interval = (
            cpu_seconds(before_all, current["cpu"], self._ticks_per_s) if before_all else None
        )
        observations: list[Observation] = []
        for name, times in current.items():
            before = self._previous.get(name)
            if before is None:
                continue
            pct = utilization_pct(before, times)
            if pct is not None:
                observations.append(Gauge(name, "utilization", pct, "%"))
        self._previous = current
        return observations

"""The sensor protocol: what a sensor file implements and the observations it returns.

A sensor opens its files or library once (`probe`), then answers `read()` with
observations. It knows nothing about time, wrap-around or CSV: the sampler stamps
each read with the one clock and `profilers.energy` turns counters into
cumulative joules and power, so adding a sensor is adding one file.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Counter:
    """A hardware energy counter in raw ticks; wraps modulo `modulus`."""

    device: str
    ticks: int
    joules_per_tick: float
    modulus: int
    # False where the sensor reports its own power reading for this device (NVML).
    emit_power: bool = True
    # False for a counter too wide to wrap in practice (NVML's 64-bit mJ: 584 million years at
    # 1 kW): there a decrease means the counter was reset (driver reload, GPU reset), not wrapped.
    can_wrap: bool = True


@dataclass(frozen=True)
class Power:
    """A power reading in watts; `integrate=True` when it is the domain's only energy source."""

    device: str
    watts: float
    integrate: bool


@dataclass(frozen=True)
class Gauge:
    """Any other reading: utilization, memory_used, clock_sm, temperature."""

    device: str
    metric: str
    value: float
    unit: str


@dataclass(frozen=True)
class CounterSum:
    """A domain whose energy is the sum of other counter domains of this sensor (all cores)."""

    device: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Fault:
    """A device that stopped answering; its rows end here and the run is marked partial."""

    device: str
    reason: str
    fix: str


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU that is not the profiled work's own (pid as NVML reports it)."""

    device: str
    pid: int
    used_memory_mib: float | None


@dataclass(frozen=True)
class GpuProcesses:
    """Every compute process NVML lists on a GPU at one read, the work's own included: (pid, MiB).

    MiB is None where NVML cannot tell (`usedGpuMemory` unavailable). The attribution splits a
    GPU's energy among its processes with these lists.
    """

    device: str
    processes: tuple[tuple[int, float | None], ...]


Observation = Counter | Power | Gauge | CounterSum | Fault | GpuProcess | GpuProcesses


@dataclass(frozen=True)
class Problem:
    """Something a sensor could not read: what, why, and how to fix it."""

    sensor: str
    reason: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        """The summary's `missing` entry."""
        return {"sensor": self.sensor, "reason": self.reason, "fix": self.fix}


@dataclass(frozen=True)
class Status:
    """A sensor's answer to `probe()`: usable or not, what it found, why not, the fix."""

    sensor: str
    available: bool
    detail: str = ""
    reason: str | None = None
    fix: str | None = None
    # Parts that failed while the rest works (one CPU without topology, one GPU lost).
    problems: tuple[Problem, ...] = field(default_factory=tuple)


class SensorError(Exception):
    """The whole sensor stopped working mid-run (its file vanished)."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


class Sensor(ABC):
    """One source of readings (msr, powercap, procstat, nvml)."""

    name: str = "sensor"

    @abstractmethod
    def probe(self) -> Status:
        """Open what the sensor needs and say whether it can be read, and if not why and how to fix."""

    @abstractmethod
    def read(self) -> list[Observation]:
        """Read every device once; raise SensorError only when nothing can be read any more."""

    def close(self) -> None:
        """Release files and libraries."""
        return None

    def metadata(self) -> dict[str, Any]:
        """Facts for the summary's `metadata` (GPU models, driver)."""
        return {}

    def warnings(self) -> list[str]:
        """Lines for the summary's `warnings`: what a reader must know to trust the figures."""
        return []

    def is_used(self, device: str) -> bool:
        """Whether the device is among those the run uses (all, unless a GPU list limits it)."""
        return True


def describe_os_error(exc: OSError) -> str:
    """`EIO (Input/output error)` for an OSError, for one-line reasons."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name} ({os.strerror(exc.errno)})" if exc.errno else str(exc)

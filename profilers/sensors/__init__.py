"""Sensors: AMD RAPL MSRs, powercap RAPL (fallback), /proc/stat, NVML. One file per source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from profilers.sensors.base import Problem, Sensor, SensorError, Status
from profilers.sensors.model import PowerModel, PowerModelSensor
from profilers.sensors.msr import MsrSensor
from profilers.sensors.nvml import NvmlSensor, OwnPids
from profilers.sensors.powercap import PowercapSensor
from profilers.sensors.procstat import ProcStatSensor


@dataclass(frozen=True)
class SensorRoots:
    """Where the sensors look; None means the environment variable, then the system default."""

    msr_root: str | os.PathLike[str] | None = None
    proc_stat: str | os.PathLike[str] | None = None
    sysfs_root: str | os.PathLike[str] | None = None


def open_sensors(
    roots: SensorRoots = SensorRoots(),
    gpus: list[int] | tuple[int, ...] | None = None,
    nvml: Any = None,
    own_pids: OwnPids | None = None,
    power_model: PowerModel | None = None,
) -> tuple[list[Sensor], list[Status]]:
    """Probe every sensor; return the ones to read and every sensor's status.

    `own_pids` (the profiled work's processes) lets NVML report the GPU processes that are not.
    `power_model` (opt-in) adds the `model` sensor: estimated CPU package energy, never measured.

    powercap is probed only when the MSRs cannot be read: both see the same
    RAPL counters, and reading both would count the CPU twice.
    """
    sensors: list[Sensor] = []
    statuses: list[Status] = []
    msr = MsrSensor(roots.msr_root, roots.sysfs_root)
    msr_status = msr.probe()
    statuses.append(msr_status)
    if msr_status.available:
        sensors.append(msr)
        statuses.append(
            Status(
                "powercap", False, detail="not used: the AMD MSRs are read directly", reason=None
            )
        )
    else:
        msr.close()
        powercap = PowercapSensor(roots.sysfs_root)
        status = powercap.probe()
        statuses.append(status)
        if status.available:
            sensors.append(powercap)
    extra: list[Sensor] = []
    if power_model is not None:
        extra.append(PowerModelSensor(power_model, roots.proc_stat, roots.sysfs_root))
    for sensor in (ProcStatSensor(roots.proc_stat), NvmlSensor(gpus, nvml, own_pids), *extra):
        status = sensor.probe()
        statuses.append(status)
        if status.available:
            sensors.append(sensor)
        else:
            sensor.close()
    return sensors, statuses


def missing_from(statuses: list[Status]) -> list[Problem]:
    """The summary's `missing`: sensors that cannot be read and parts of sensors that can."""
    missing: list[Problem] = []
    for status in statuses:
        if not status.available and status.reason is not None:
            missing.append(Problem(status.sensor, status.reason, status.fix or ""))
        missing.extend(status.problems)
    return missing


__all__ = [
    "MsrSensor",
    "NvmlSensor",
    "PowerModel",
    "PowerModelSensor",
    "PowercapSensor",
    "ProcStatSensor",
    "Sensor",
    "SensorError",
    "SensorRoots",
    "Status",
    "missing_from",
    "open_sensors",
]

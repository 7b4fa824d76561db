"""A power *model*, not a sensor: CPU package power estimated from /proc/stat utilisation.

Opt-in only (`--power-model cpu:IDLE_W:MAX_W`): on a machine without energy counters a user who
knows their CPU's power figures gets an estimate, labelled as one everywhere. Each package draws
IDLE_W at 0 % and MAX_W at 100 % utilisation of its logical CPUs, linearly in between:

    P_package = IDLE_W + (MAX_W - IDLE_W) * busy / 100

(the linear utilisation model of e.g. Fan et al., "Power provisioning for a warehouse-sized
computer", 2007). The energy of an interval is that interval's modelled power times its length
(kept as a cumulative counter in microjoules, so the profiler's power rows are exactly the
model's). Its rows carry `sensor=model`; `profilers.energy.node_domains` never picks
them, so a modelled joule is never added to a measured one. The packages come from sysfs
topology; without it every CPU counts as `package0`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from greenkd.errors import GreenkdError
from profilers.sensors.base import (
    Counter,
    Observation,
    Power,
    Sensor,
    SensorError,
    Status,
    describe_os_error,
)
from profilers.sensors.procstat import CpuTimes, parse_proc_stat, proc_stat_path, utilization_pct
from profilers.sensors.topology import cpu_place, sysfs_root

MODEL_SENSOR = "model"
MODEL_SOURCE = "model"
MICROJOULE = 1e-6
SYNTAX = "cpu:IDLE_W:MAX_W (watts per CPU package, e.g. cpu:10:65)"


@dataclass(frozen=True)
class PowerModel:
    """Linear CPU package power: `idle_w` at 0 % utilisation, `max_w` at 100 %."""

    idle_w: float
    max_w: float

    @property
    def spec(self) -> str:
        """The text it was parsed from, canonically (`cpu:10:65`)."""
        return f"cpu:{self.idle_w:g}:{self.max_w:g}"

    @property
    def method(self) -> str:
        """One line saying what the estimate is."""
        return (
            f"estimate, not measured: each CPU package {self.idle_w:g} W idle to "
            f"{self.max_w:g} W at 100 % /proc/stat utilisation, linear (--power-model {self.spec})"
        )

    def power_w(self, utilization_pct: float) -> float:
        """Modelled package power at a utilisation in percent."""
        return self.idle_w + (self.max_w - self.idle_w) * utilization_pct / 100.0


def parse_power_model(text: str | None) -> PowerModel | None:
    """`cpu:IDLE_W:MAX_W` into a PowerModel; None for None; GreenkdError (one line) otherwise."""
    if text is None:
        return None
    parts = str(text).strip().split(":")
    bad = f"--power-model takes {SYNTAX}, got {text!r}"
    if len(parts) != 3 or parts[0] != "cpu":
        raise GreenkdError(bad)
    try:
        idle_w, max_w = float(parts[1]), float(parts[2])
    except ValueError:
        raise GreenkdError(bad) from None
    if not (math.isfinite(idle_w) and math.isfinite(max_w)) or idle_w < 0 or max_w <= 0:
        raise GreenkdError(f"{bad}: watts must be finite, IDLE_W >= 0 and MAX_W > 0")
    if max_w < idle_w:
        raise GreenkdError(f"{bad}: MAX_W must be at least IDLE_W")
    return PowerModel(idle_w, max_w)


class PowerModelSensor(Sensor):
    """Modelled energy per CPU package, as a counter the profiler accounts like any other."""

    name = MODEL_SENSOR

    def __init__(
        self,
        model: PowerModel,
        proc_stat: str | os.PathLike[str] | None = None,
        sysfs: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.path = proc_stat_path(proc_stat)
        self._sysfs = sysfs_root(sysfs)
        self._packages: dict[str, int] = {}
        self._previous: dict[str, CpuTimes] = {}
        self._cumulative_uj: dict[int, int] = {}
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK"))

    def _load(self) -> dict[str, CpuTimes]:
        try:
            return parse_proc_stat(self.path.read_text())
        except OSError as exc:
            raise SensorError(
                f"{self.path} is not readable: {describe_os_error(exc)}",
                "the power model needs /proc/stat; check GREENKD_PROC_STAT",
            ) from exc

    def probe(self) -> Status:
        """Check /proc/stat parses and map its CPUs to packages (all to package0 without topology)."""
        try:
            times = self._load()
        except SensorError as exc:
            return Status(self.name, False, reason=exc.reason, fix=exc.fix)
        cpus = [name for name in times if name != "cpu"]
        if not cpus:
            return Status(
                self.name,
                False,
                reason=f"{self.path} has no `cpuN` lines",
                fix="point GREENKD_PROC_STAT at /proc/stat",
            )
        unplaced = 0
        for name in cpus:
            try:
                self._packages[name] = cpu_place(int(name[3:]), self._sysfs).package
            except (OSError, ValueError):
                self._packages[name] = 0
                unplaced += 1
        packages = sorted(set(self._packages.values()))
        where = "" if not unplaced else f" ({unplaced} CPUs without sysfs topology: package0)"
        return Status(
            self.name, True, detail=f"{len(packages)} package(s), {self.model.method}{where}"
        )

    def read(self) -> list[Observation]:
        """Each package's modelled energy so far: the interval's power times its length, added up."""
        current = self._load()
        busy: dict[int, list[float]] = {}
        seconds: dict[int, list[float]] = {}
        for name, package in self._packages.items():
            before, now = self._previous.get(name), current.get(name)
            if before is None or now is None:
                continue
            pct = utilization_pct(before, now)
            if pct is not None:
                busy.setdefault(package, []).append(pct)
                # Every logical CPU counts the interval's wall time in its jiffies.
                seconds.setdefault(package, []).append(
                    (now.total - before.total) / self._ticks_per_s
                )
        first = not self._previous
        self._previous = current
        observations: list[Observation] = []
        for package in sorted(set(self._packages.values())):
            if first:
                self._cumulative_uj.setdefault(package, 0)
            elif package in busy:
                power_w = self.model.power_w(sum(busy[package]) / len(busy[package]))
                dt = sum(seconds[package]) / len(seconds[package])
                self._cumulative_uj[package] += round(power_w * dt / MICROJOULE)
                # The model's own power, however short the interval (not a counter's rate).
                observations.append(Power(f"package{package}", power_w, integrate=False))
        return observations + [
            Counter(f"package{p}", uj, MICROJOULE, 2**63, emit_power=False, can_wrap=False)
            for p, uj in sorted(self._cumulative_uj.items())
        ]

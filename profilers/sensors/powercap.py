"""Linux powercap RAPL (`/sys/class/powercap/intel-rapl:*`): the fallback when the MSRs cannot be read.

Intel CPUs, and AMD CPUs on kernels >= 5.8 (family 19h from 5.11), expose
zones `intel-rapl:P` (name `package-P`, or `package-P-die-D`, or `psys`) with
sub-zones `intel-rapl:P:S` (`core`, `uncore`, `dram`). Each zone has
`energy_uj`, a counter that wraps after `max_energy_range_uj`.

Multi-die AMD parts show one `package-P-die-D` zone per die that all mirror
the same socket counter; summing them multiplies the CPU energy by the die
count (CodeCarbon issue #1274). Zones of one package whose counters read the
same value are read once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from profilers.sensors.base import (
    Counter,
    Fault,
    Observation,
    Problem,
    Sensor,
    Status,
    describe_os_error,
)
from profilers.sensors.topology import sysfs_root

_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_PACKAGE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")

FIX_MISSING = (
    "load the RAPL powercap driver as root: `modprobe intel_rapl_msr` (Intel; AMD needs Linux >= 5.8), "
    "or make the AMD MSRs readable (see `greenkd sensors`)"
)
FIX_PERMISSION = (
    "energy_uj is readable by root only since Linux 5.10: as root "
    "`chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` "
    "(again after each boot, or with a udev rule / systemd-tmpfiles entry)"
)


@dataclass
class _Zone:
    device: str
    path: Path
    modulus: int
    top: bool
    name: str
    fd: int | None = None
    failed: bool = False


def zone_device(name: str, package: int) -> str:
    """Device name for a powercap zone: package0, package0_die1, psys, dram0, core0_all, uncore0."""
    match = _PACKAGE.match(name)
    if match:
        pkg, die = match.groups()
        return f"package{pkg}" if die is None else f"package{pkg}_die{die}"
    if name == "psys":
        return "psys"
    if name == "core":
        # The sub-zone is all cores of the package; `coreN` is the msr sensor's per-core name.
        return f"cores{package}"
    return f"{name}{package}"


class PowercapSensor(Sensor):
    """Package, core, uncore, DRAM and psys energy from powercap RAPL zones."""

    name = "powercap"

    def __init__(self, sysfs: str | os.PathLike[str] | None = None) -> None:
        self.root = sysfs_root(sysfs) / "class" / "powercap"
        self._zones: list[_Zone] = []
        self._mirrors: list[str] = []

    def _read_uj(self, zone: _Zone) -> int:
        if zone.fd is None:
            zone.fd = os.open(zone.path / "energy_uj", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.pread(zone.fd, 64, 0).decode().strip())
        except (OSError, ValueError):
            os.close(zone.fd)
            zone.fd = None
            raise

    def probe(self) -> Status:
        """Find the RAPL zones, check each is readable, read mirrored die zones once."""
        entries = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                match = _ZONE.match(entry.name)
                if match:
                    entries.append((int(match.group(1)), match.group(2), entry))
        if not entries:
            return Status(
                self.name, False, reason=f"no {self.root}/intel-rapl:* zones", fix=FIX_MISSING
            )
        zones: list[_Zone] = []
        problems: list[Problem] = []
        for package, sub, path in entries:
            try:
                name = (path / "name").read_text().strip()
                modulus = int((path / "max_energy_range_uj").read_text().strip()) + 1
                zone = _Zone(zone_device(name, package), path, modulus, sub is None, name)
                self._read_uj(zone)
            except PermissionError:
                return Status(
                    self.name,
                    False,
                    reason=f"no read permission on {path / 'energy_uj'}",
                    fix=FIX_PERMISSION,
                )
            except (OSError, ValueError) as exc:
                why = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                problems.append(Problem(self.name, f"{path.name}: unreadable ({why})", FIX_MISSING))
                continue
            zones.append(zone)
        self._zones = self._drop_mirrors(zones)
        if not self._zones:
            return Status(
                self.name,
                False,
                reason="no readable RAPL zone",
                fix=FIX_MISSING,
                problems=tuple(problems),
            )
        names = ", ".join(z.device for z in self._zones)
        detail = f"{len(self._zones)} zone(s) under {self.root}: {names}"
        if self._mirrors:
            detail += f"; mirrored die zones read once: {', '.join(self._mirrors)}"
        return Status(self.name, True, detail=detail, problems=tuple(problems))

    def _drop_mirrors(self, zones: list[_Zone]) -> list[_Zone]:
        """Keep one of the die zones of a package that report the same counter."""
        kept: list[_Zone] = []
        for zone in zones:
            match = _PACKAGE.match(zone.name)
            twin = None
            if zone.top and match and match.group(2) is not None:
                for other in kept:
                    other_match = _PACKAGE.match(other.name)
                    if other.top and other_match and other_match.group(1) == match.group(1):
                        twin = other
                        break
            if twin is not None and self._same_counter(zone, twin):
                self._mirrors.append(f"{zone.name}={twin.name}")
                if zone.fd is not None:
                    os.close(zone.fd)
                continue
            kept.append(zone)
        return kept

    def _same_counter(self, a: _Zone, b: _Zone) -> bool:
        # Read a few pairs back to back: a mirror matches at least once even
        # if the counter ticks between two reads; distinct dies do not.
        return any(self._read_uj(a) == self._read_uj(b) for _ in range(3))

    def read(self) -> list[Observation]:
        """Read every zone's counter once."""
        observations: list[Observation] = []
        for zone in self._zones:
            if zone.failed:
                continue
            try:
                uj = self._read_uj(zone)
            except (OSError, ValueError) as exc:
                zone.failed = True
                why = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                observations.append(
                    Fault(
                        zone.device,
                        f"{zone.device}: {zone.path}/energy_uj stopped answering ({why})",
                        "the readings up to here are kept",
                    )
                )
                continue
            observations.append(Counter(zone.device, uj, 1e-6, zone.modulus))
        return observations

    def close(self) -> None:
        """Close the counter files."""
        for zone in self._zones:
            if zone.fd is not None:
                os.close(zone.fd)
                zone.fd = None

"""AMD RAPL energy from the model-specific registers (`/dev/cpu/N/msr`), paper §4.1.2.

The msr driver answers an 8-byte `pread` at offset = register number. Three
registers matter (AMD Family 17h+):

- 0xC0010299 RAPL_PWR_UNIT: bits 12:8 are the energy status unit (ESU); one
  counter tick is 2^-ESU joules (ESU 16 gives 15.3 uJ).
- 0xC001029A CORE_ENERGY_STAT: bits 31:0, energy of the reading CPU's physical
  core; SMT siblings read the same counter.
- 0xC001029B PKG_ENERGY_STAT: bits 31:0, energy of the reading CPU's package;
  every CPU of the package reads the same counter.

Each package and each physical core is read once, from one of its CPUs (never
summed over the CPUs that share it), and another CPU of the same package or
core takes over if the reader goes offline: the counter is the same register.
Wrap-around (32 bits) is handled in `profilers.energy`.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from profilers.sensors.base import (
    Counter,
    CounterSum,
    Fault,
    Observation,
    Problem,
    Sensor,
    Status,
    describe_os_error,
)
from profilers.sensors.topology import CpuPlace, cpu_place, sysfs_root

POWER_UNIT = 0xC0010299
CORE_ENERGY = 0xC001029A
PACKAGE_ENERGY = 0xC001029B
COUNTER_MODULUS = 2**32

FIX_LOAD_MODULE = (
    "load the msr module as root: `modprobe msr` "
    "(keep it across reboots: `echo msr > /etc/modules-load.d/msr.conf`)"
)
FIX_NOT_AMD = "AMD RAPL MSRs need an AMD Zen CPU; on Intel (or without msr access) powercap is used"


def fix_permission(python: str | None = None) -> str:
    """How to read the MSRs without running everything as root: a group for the device, a capability for Python."""
    exe = python or os.path.realpath(sys.executable)
    return (
        "give a group read access and Python CAP_SYS_RAWIO (the msr driver checks both): "
        '`groupadd -f msr && echo \'SUBSYSTEM=="msr", KERNEL=="msr[0-9]*", GROUP="msr", MODE="0640"\' '
        "> /etc/udev/rules.d/99-msr.rules && udevadm control --reload && udevadm trigger --subsystem-match=msr "
        f"&& usermod -aG msr $USER && setcap cap_sys_rawio=ep {exe}` (as root; log in again), or run as root"
    )


def msr_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The msr device root: the argument, else `$GREENKD_MSR_ROOT`, else `/dev/cpu`."""
    return Path(root if root is not None else os.environ.get("GREENKD_MSR_ROOT", "/dev/cpu"))


def decode_register(data: bytes) -> int:
    """An MSR's 8 bytes (little endian) as an unsigned integer."""
    if len(data) != 8:
        raise OSError(errno.EIO, f"short MSR read: {len(data)} of 8 bytes")
    return struct.unpack("<Q", data)[0]


def energy_unit_j(power_unit_raw: int) -> float:
    """Joules per energy-counter tick from RAPL_PWR_UNIT: 2^-ESU, ESU in bits 12:8."""
    return 2.0 ** -((power_unit_raw >> 8) & 0x1F)


def energy_ticks(energy_status_raw: int) -> int:
    """The 32-bit energy counter (bits 31:0) of an energy status register."""
    return energy_status_raw & 0xFFFFFFFF


@dataclass
class _Domain:
    """One counter (a package or a physical core) and the CPUs that can read it, in order."""

    device: str
    register: int
    readers: list[int]
    joules_per_tick: float = 0.0
    reader: int | None = None
    failed: bool = False
    tried: list[str] = field(default_factory=list)


class MsrSensor(Sensor):
    """Per-package and per-core energy from AMD RAPL MSRs; cores also summed as `cores`."""

    name = "msr"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        sysfs: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = msr_root(root)
        self.sysfs = sysfs_root(sysfs)
        self._fds: dict[int, int] = {}
        self._packages: list[_Domain] = []
        self._cores: list[_Domain] = []

    # -- files ---------------------------------------------------------------

    def _path(self, cpu: int) -> Path:
        return self.root / str(cpu) / "msr"

    def _read(self, cpu: int, register: int) -> int:
        fd = self._fds.get(cpu)
        if fd is None:
            fd = os.open(self._path(cpu), os.O_RDONLY | os.O_CLOEXEC)
            self._fds[cpu] = fd
        try:
            return decode_register(os.pread(fd, 8, register))
        except OSError:
            # A CPU that went offline leaves a dead descriptor: reopen next time.
            self._drop_fd(cpu)
            raise

    def _drop_fd(self, cpu: int) -> None:
        fd = self._fds.pop(cpu, None)
        if fd is not None:
            os.close(fd)

    def _listed_cpus(self) -> list[int]:
        return sorted(int(d.name) for d in self.root.iterdir() if d.name.isdigit())

    # -- probe ---------------------------------------------------------------

    def probe(self) -> Status:
        """Find the CPUs, map them to packages and cores, and check every counter answers."""
        if not self.root.is_dir() or not any(
            self._path(cpu).exists() for cpu in self._listed_cpus()
        ):
            return Status(
                self.name,
                False,
                reason=f"no {self._path(0)}: the msr kernel module is not loaded",
                fix=FIX_LOAD_MODULE + "; reading needs root or CAP_SYS_RAWIO",
            )
        cpus = [cpu for cpu in self._listed_cpus() if self._path(cpu).exists()]
        first = cpus[0]
        try:
            self._read(first, POWER_UNIT)
        except PermissionError as exc:
            if exc.errno == errno.EPERM:
                reason = f"opening {self._path(first)} needs CAP_SYS_RAWIO (EPERM)"
            else:
                reason = f"no read permission on {self._path(first)} (EACCES)"
            return Status(self.name, False, reason=reason, fix=fix_permission())
        except OSError as exc:
            if exc.errno == errno.EIO:
                reason = (
                    f"{self._path(first)} does not answer register {POWER_UNIT:#x} (EIO): "
                    "not an AMD RAPL CPU"
                )
                return Status(self.name, False, reason=reason, fix=FIX_NOT_AMD)
            return Status(
                self.name,
                False,
                reason=f"cannot read {self._path(first)}: {describe_os_error(exc)}",
                fix=FIX_LOAD_MODULE,
            )

        places: list[CpuPlace] = []
        problems: list[Problem] = []
        for cpu in cpus:
            try:
                places.append(cpu_place(cpu, self.sysfs))
            except (OSError, ValueError) as exc:
                problems.append(
                    Problem(
                        self.name,
                        f"cpu{cpu}: no topology under {self.sysfs}/devices/system/cpu/cpu{cpu}/topology "
                        f"({exc.__class__.__name__}); its package and core are not known, so it is not read",
                        "mount sysfs (or point GREENKD_SYSFS_ROOT at it)",
                    )
                )
        readable = {p.cpu for p in places}
        by_package: dict[int, list[int]] = {}
        by_core: dict[tuple[int, ...], list[int]] = {}
        for place in places:
            by_package.setdefault(place.package, []).append(place.cpu)
            siblings = tuple(c for c in place.core_cpus if c in readable) or (place.cpu,)
            by_core.setdefault(siblings, []).append(place.cpu)
        self._packages = [
            _Domain(f"package{pkg}", PACKAGE_ENERGY, sorted(members))
            for pkg, members in sorted(by_package.items())
        ]
        self._cores = [
            _Domain(f"core{min(members)}", CORE_ENERGY, sorted(members))
            for _, members in sorted(by_core.items(), key=lambda kv: min(kv[1]))
        ]
        for domain in [*self._packages, *self._cores]:
            if self._select_reader(domain) is None:
                domain.failed = True
                problems.append(
                    Problem(
                        self.name,
                        f"{domain.device}: register {domain.register:#x} unreadable "
                        f"({'; '.join(domain.tried)})",
                        FIX_NOT_AMD,
                    )
                )
        working_pkgs = [d for d in self._packages if not d.failed]
        working_cores = [d for d in self._cores if not d.failed]
        if not working_pkgs and not working_cores:
            first_problem = problems[0] if problems else None
            return Status(
                self.name,
                False,
                reason=first_problem.reason if first_problem else "no readable energy register",
                fix=first_problem.fix if first_problem else FIX_NOT_AMD,
                problems=tuple(problems),
            )
        unit_uj = working_pkgs[0].joules_per_tick * 1e6 if working_pkgs else 0.0
        detail = (
            f"{len(working_pkgs)} package(s), {len(working_cores)} core(s) from {len(cpus)} CPUs "
            f"under {self.root}; energy unit {unit_uj:.2f} uJ"
        )
        return Status(self.name, True, detail=detail, problems=tuple(problems))

    def _select_reader(self, domain: _Domain) -> int | None:
        """Make the first CPU that answers the unit and counter registers the reader; return the raw counter."""
        for cpu in domain.readers:
            try:
                unit = self._read(cpu, POWER_UNIT)
                raw = self._read(cpu, domain.register)
            except OSError as exc:
                domain.tried.append(f"cpu{cpu}: {describe_os_error(exc)}")
                continue
            domain.reader = cpu
            domain.joules_per_tick = energy_unit_j(unit)
            return raw
        return None

    # -- read ----------------------------------------------------------------

    def _read_domain(self, domain: _Domain) -> Counter | Fault | None:
        if domain.failed:
            return None
        if domain.reader is not None:
            try:
                raw = self._read(domain.reader, domain.register)
                return Counter(
                    domain.device, energy_ticks(raw), domain.joules_per_tick, COUNTER_MODULUS
                )
            except OSError as exc:
                domain.tried = [f"cpu{domain.reader}: {describe_os_error(exc)}"]
                domain.readers = [c for c in domain.readers if c != domain.reader]
                domain.reader = None
        # The reader went away: any other CPU of the package/core reads the same counter.
        raw = self._select_reader(domain)
        if raw is not None:
            return Counter(
                domain.device, energy_ticks(raw), domain.joules_per_tick, COUNTER_MODULUS
            )
        domain.failed = True
        return Fault(
            domain.device,
            f"{domain.device}: register {domain.register:#x} stopped answering ({'; '.join(domain.tried)})",
            "a CPU went offline or the msr module was unloaded; the readings up to here are kept",
        )

    def read(self) -> list[Observation]:
        """Read each package and core counter once; add the sum over cores."""
        observations: list[Observation] = []
        for domain in [*self._packages, *self._cores]:
            obs = self._read_domain(domain)
            if obs is not None:
                observations.append(obs)
        if self._cores:
            observations.append(CounterSum("cores", tuple(d.device for d in self._cores)))
        return observations

    def close(self) -> None:
        """Close the msr files."""
        for cpu in list(self._fds):
            self._drop_fd(cpu)

"""Hardware stand-ins for the profiler tests, all at the OS boundary.

- `MsrMachine` + `mounted_msr`: a FUSE file system laid out like `/dev/cpu`
  whose `N/msr` answers an 8-byte pread at offset R with register R, and EIO
  for any other register, as the msr driver does. Tests change counters
  mid-run, make a register fail, and make a CPU disappear.
- `write_topology`: real-format sysfs topology files.
- `write_proc_stat`: real-format /proc/stat text.
- `FakeNvml`: the one permitted stand-in, for the pynvml module's functions
  (there is no GPU here).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

POWER_UNIT = 0xC0010299
CORE_ENERGY = 0xC001029A
PACKAGE_ENERGY = 0xC001029B
WRAP = 2**32


# -- the msr driver -----------------------------------------------------------


@dataclass
class MsrMachine:
    """Registers of a fake AMD machine: one package counter per package, one core counter per core.

    `cpus` maps a logical CPU to (package, core), where CPUs with the same
    core are SMT siblings. Counters are 32-bit and wrap like the hardware's;
    the reserved upper 32 bits hold junk that the reader must mask off.
    """

    cpus: dict[int, tuple[int, int]]
    esu: int = 16
    package_ticks: dict[int, int] = field(default_factory=dict)
    core_ticks: dict[int, int] = field(default_factory=dict)
    failing: set[tuple[int, int]] = field(default_factory=set)
    vanished: set[int] = field(default_factory=set)
    open_errno: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for package, core in self.cpus.values():
            self.package_ticks.setdefault(package, 0)
            self.core_ticks.setdefault(core, 0)

    @property
    def joules_per_tick(self) -> float:
        """The energy unit the power-unit register announces."""
        return 2.0**-self.esu

    def add_package_joules(self, package: int, joules: float) -> None:
        """Let the package consume energy (the counter wraps at 2^32 ticks)."""
        with self.lock:
            ticks = round(joules / self.joules_per_tick)
            self.package_ticks[package] = (self.package_ticks[package] + ticks) % WRAP

    def add_core_joules(self, core: int, joules: float) -> None:
        """Let a core consume energy."""
        with self.lock:
            ticks = round(joules / self.joules_per_tick)
            self.core_ticks[core] = (self.core_ticks[core] + ticks) % WRAP

    def register(self, cpu: int, reg: int) -> int:
        """What `pread(fd_of_cpu, 8, reg)` returns, or the errno the driver gives."""
        with self.lock:
            if cpu in self.vanished or cpu not in self.cpus:
                raise OSError(errno.ENXIO, "cpu offline")
            if (cpu, reg) in self.failing:
                raise OSError(errno.EIO, "rdmsr failed")
            package, core = self.cpus[cpu]
            junk = 0xA5A5 << 48  # reserved bits 63:32 are not part of the counter
            if reg == POWER_UNIT:
                # time unit 0xA (bits 19:16), ESU (12:8), power unit 0x3 (3:0)
                return (0xA << 16) | (self.esu << 8) | 0x3
            if reg == PACKAGE_ENERGY:
                return junk | self.package_ticks[package]
            if reg == CORE_ENERGY:
                return junk | self.core_ticks[core]
            raise OSError(errno.EIO, "no such register")


class _MsrFs:
    """FUSE operations laid out like /dev/cpu: `N/msr` for every CPU still online."""

    use_ns = True

    def __init__(self, machine: MsrMachine) -> None:
        self.machine = machine

    def _cpu(self, path: str) -> int | None:
        parts = path.strip("/").split("/")
        if parts and parts[0].isdigit():
            cpu = int(parts[0])
            if cpu in self.machine.cpus and cpu not in self.machine.vanished:
                return cpu
        return None

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        from mfusepy import FuseOSError

        now = int(time.time() * 1e9)
        times = {"st_atime": now, "st_mtime": now, "st_ctime": now}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        cpu = self._cpu(path)
        depth = len(path.strip("/").split("/"))
        if cpu is not None and depth == 1:
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        if cpu is not None and depth == 2 and path.endswith("/msr"):
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0, **times}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if path == "/":
            return [
                ".",
                "..",
                *(str(c) for c in sorted(self.machine.cpus) if c not in self.machine.vanished),
            ]
        return [".", "..", "msr"]

    def open(self, path: str, flags: int) -> int:
        from mfusepy import FuseOSError

        if self.machine.open_errno is not None:
            raise FuseOSError(self.machine.open_errno)
        if self._cpu(path) is None:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        from mfusepy import FuseOSError

        if size != 8:
            raise FuseOSError(errno.EINVAL)
        cpu = int(path.strip("/").split("/")[0])
        try:
            return struct.pack("<Q", self.machine.register(cpu, offset))
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from None


def fuse_unavailable_reason() -> str | None:
    """Why FUSE cannot be used here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: the FUSE msr fake cannot be mounted"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian package fuse3) to unmount the msr fake"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse: {exc}"
    return None


@contextlib.contextmanager
def mounted_msr(machine: MsrMachine, mountpoint: Path) -> Iterator[Path]:
    """Serve `machine` as a FUSE msr tree at `mountpoint` (a thread of this process); unmount after."""
    import mfusepy

    mountpoint.mkdir(parents=True, exist_ok=True)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            # direct_io: without it the kernel caches the 0-byte size and reads return nothing.
            mfusepy.FUSE(
                _MsrFs(machine), str(mountpoint), foreground=True, nothreads=True, direct_io=True
            )
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=serve, name="fake-msr-fuse", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not os.path.ismount(mountpoint):
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            pytest.skip(
                f"cannot mount the FUSE msr fake at {mountpoint}: {failure[0] if failure else 'no mount'}"
            )
        time.sleep(0.01)
    try:
        yield mountpoint
    finally:
        result = subprocess.run(
            ["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True
        )
        if result.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        thread.join(timeout=10)


def write_topology(sysfs: Path, cpus: dict[int, tuple[int, int]]) -> None:
    """Real-format `devices/system/cpu/cpuN/topology` files for CPUs mapped to (package, core)."""
    for cpu, (package, core) in cpus.items():
        siblings = sorted(c for c, (p, k) in cpus.items() if (p, k) == (package, core))
        topo = sysfs / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True, exist_ok=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
        (topo / "core_cpus_list").write_text(",".join(map(str, siblings)) + "\n")
        (topo / "thread_siblings_list").write_text(",".join(map(str, siblings)) + "\n")


# -- /proc/stat ---------------------------------------------------------------


def proc_stat_text(cpus: dict[str, list[int]]) -> str:
    """/proc/stat text: `cpu` and `cpuN` lines (user nice system idle iowait irq softirq steal guest guest_nice)."""
    lines = [f"{name} {' '.join(str(v) for v in values)}" for name, values in cpus.items()]
    lines += [
        "intr 0",
        "ctxt 1000",
        "btime 1700000000",
        "processes 10",
        "procs_running 1",
        "procs_blocked 0",
    ]
    return "\n".join(lines) + "\n"


def write_proc_stat(path: Path, cpus: dict[str, list[int]]) -> None:
    """Replace the file atomically, as a reader of /proc/stat never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(proc_stat_text(cpus))
    tmp.replace(path)


# -- NVML ---------------------------------------------------------------------


@dataclass
class FakeGpu:
    """One GPU: the test sets `power_w`; the energy counter integrates it over real time."""

    name: str = "NVIDIA Fake A100"
    power_w: float = 60.0
    has_energy: bool = True
    utilization_pct: int = 0
    memory_used_mib: float = 1024.0
    clock_sm_mhz: int = 1410
    temperature_c: int = 40
    lost: bool = False
    energy_mj: float = 5_000_000.0  # since the driver loaded
    _last: float = field(default_factory=time.time)

    def advance(self) -> None:
        """Accumulate energy at the current power up to now."""
        now = time.time()
        self.energy_mj += self.power_w * (now - self._last) * 1000.0
        self._last = now

    def set_power(self, watts: float) -> None:
        """Change the power draw from now on."""
        self.advance()
        self.power_w = watts


class _Utilization:
    def __init__(self, gpu: int) -> None:
        self.gpu = gpu
        self.memory = 0


class _Memory:
    def __init__(self, used: int) -> None:
        self.used = used
        self.total = 80 * 2**30
        self.free = self.total - used


class FakeNvml:
    """Stand-in for the pynvml functions the NVML sensor calls; error codes as in pynvml."""

    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, gpus: list[FakeGpu] | None = None, init_error: int | None = None) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.shutdowns = 0

    def _gpu(self, handle: int) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-fake-{handle}"

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return round(self._gpu(handle).power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        gpu = self._gpu(handle)
        if not gpu.has_energy:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        gpu.advance()
        return int(gpu.energy_mj)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        return _Utilization(self._gpu(handle).utilization_pct)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return _Memory(int(self._gpu(handle).memory_used_mib * 2**20))

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        assert clock == self.NVML_CLOCK_SM
        return self._gpu(handle).clock_sm_mhz

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temperature_c

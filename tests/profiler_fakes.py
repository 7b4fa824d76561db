"""Hardware stand-ins for the profiler tests, all at the OS boundary.

- `MsrMachine` + `mounted_msr`: a FUSE file system laid out like `/dev/cpu`
  whose `N/msr` answers an 8-byte pread at offset R with register R, and EIO
  for any other register, as the msr driver does. Tests change counters
  mid-run, make a register fail, and make a CPU disappear.
- `write_topology`: real-format sysfs topology files.
- `write_proc_stat`: real-format /proc/stat text.
- `FakeNvml`: the one permitted stand-in, for the pynvml module's functions
  (there is no GPU here), with pynvml's names, signatures and error codes
  (`test_fake_nvml_mirrors_pynvml` holds it to them): GPUs with UUIDs and PCI
  bus ids, MIG devices, per-GPU errors for any call, energy counter resets and
  compute process lists.
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
from collections.abc import Callable, Iterator
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
    # called before an energy register is read: a stand-in load brings the counters up to the
    # moment of the read, as the hardware's counters run continuously
    before_read: Callable[[], None] | None = None

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
        if self.before_read is not None and reg in (PACKAGE_ENERGY, CORE_ENERGY):
            self.before_read()
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
    """One GPU: the test sets `power_w`; the energy counter integrates it over real time.

    `uuid` and `pci_bus_id` default to ones derived from the GPU's index (FakeNvml fills them
    in, bus ids ascending: NVML's index order is PCI bus order). `mig`: None for a GPU without
    MIG support, else whether MIG mode is on, with `mig_devices` its MIG devices' UUIDs.
    `errors`: pynvml function name -> the NVML_ERROR_* code that call raises for this GPU.
    `processes`: pid -> used GPU memory in MiB (None where NVML cannot tell).
    """

    name: str = "NVIDIA Fake A100"
    power_w: float = 60.0
    has_energy: bool = True
    utilization_pct: int = 0
    memory_used_mib: float = 1024.0
    clock_sm_mhz: int = 1410
    temperature_c: int = 40
    lost: bool = False
    energy_mj: float = 5_000_000.0  # since the driver loaded
    uuid: str | None = None
    pci_bus_id: str | None = None
    mig: bool | None = None
    mig_devices: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    processes: dict[int, float | None] = field(default_factory=dict)
    _last: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _advance(self) -> None:
        now = time.time()
        self.energy_mj += self.power_w * (now - self._last) * 1000.0
        self._last = now

    def advance(self) -> None:
        """Accumulate energy at the current power up to now."""
        with self._lock:
            self._advance()

    def set_power(self, watts: float) -> None:
        """Change the power draw from now on."""
        with self._lock:
            self._advance()
            self.power_w = watts

    def reset_energy(self) -> float:
        """Reset the energy counter to zero, as a driver reload or a GPU reset does; returns when."""
        with self._lock:
            self._advance()
            self.energy_mj = 0.0
            return self._last


class _Utilization:
    def __init__(self, gpu: int) -> None:
        self.gpu = gpu
        self.memory = 0


class _Memory:
    def __init__(self, used: int) -> None:
        self.used = used
        self.total = 80 * 2**30
        self.free = self.total - used


class _PciInfo:
    """Like pynvml's nvmlPciInfo_t: ctypes char arrays read back as bytes."""

    def __init__(self, bus_id: str) -> None:
        self.busId = bus_id.encode()
        self.busIdLegacy = bus_id[4:].encode()  # "0000:17:00.0"
        domain, bus, rest = bus_id.split(":")
        self.domain = int(domain, 16)
        self.bus = int(bus, 16)
        self.device = int(rest.split(".")[0], 16)
        self.pciDeviceId = 0x20B010DE


class _ProcessInfo:
    """Like the friendly object pynvml returns: usedGpuMemory in bytes, or None."""

    def __init__(self, pid: int, used_mib: float | None, mig: bool) -> None:
        self.pid = pid
        self.usedGpuMemory = None if used_mib is None else int(used_mib * 2**20)
        self.gpuInstanceId = 0 if mig else 0xFFFFFFFF
        self.computeInstanceId = 0 if mig else 0xFFFFFFFF


# pynvml's messages, so reasons read as they would on a server.
_NVML_MESSAGES = {
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
    9: "Driver Not Loaded",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    15: "GPU is lost",
    16: "GPU requires restart",
    999: "Unknown Error",
}


@dataclass(frozen=True)
class _MigHandle:
    gpu: int
    slot: int


class FakeNvml:
    """Stand-in for the pynvml functions greenkd calls; names, arguments and codes as in pynvml.

    Handles are the GPU's index (a MIG device's: `_MigHandle`). `mig_uuid_lookup=False` models
    a driver whose nvmlDeviceGetHandleByUUID does not take MIG UUIDs (before R470).
    """

    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_RESET_REQUIRED = 16
    NVML_ERROR_UNKNOWN = 999
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    MAX_MIG_DEVICES = 7

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(_NVML_MESSAGES.get(value, f"NVML Error with code {value}"))
            self.value = value

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: int | None = None,
        mig_uuid_lookup: bool = True,
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid is None:
                gpu.uuid = f"GPU-{index:08x}-5b6d-4c7e-8f90-a1b2c3d4e5f6"
            if gpu.pci_bus_id is None:
                gpu.pci_bus_id = f"00000000:{0x17 + 0x20 * index:02X}:00.0"
        self.init_error = init_error
        self.mig_uuid_lookup = mig_uuid_lookup
        self.inits = 0
        self.shutdowns = 0

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        if isinstance(handle, _MigHandle):
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle]
        if gpu.lost:
            raise self.NVMLError(self.NVML_ERROR_GPU_IS_LOST)
        if call in gpu.errors:
            raise self.NVMLError(gpu.errors[call])
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        error = self.gpus[index].errors.get("nvmlDeviceGetHandleByIndex")
        if error is not None:
            raise self.NVMLError(error)
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        self._gpu(handle, "nvmlDeviceGetIndex")
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int | _MigHandle:
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return index
            if self.mig_uuid_lookup and gpu.mig and uuid in gpu.mig_devices:
                return _MigHandle(index, gpu.mig_devices.index(uuid))
        raise self.NVMLError(self.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: int | _MigHandle) -> str:
        if isinstance(handle, _MigHandle):
            return self.gpus[handle.gpu].mig_devices[handle.slot]
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid  # type: ignore[return-value]

    def nvmlDeviceGetPciInfo(self, handle: int) -> _PciInfo:
        return _PciInfo(self._gpu(handle, "nvmlDeviceGetPciInfo").pci_bus_id)  # type: ignore[arg-type]

    def nvmlDeviceGetMigMode(self, device: int) -> list[int]:
        gpu = self._gpu(device, "nvmlDeviceGetMigMode")
        if gpu.mig is None:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        mode = self.NVML_DEVICE_MIG_ENABLE if gpu.mig else self.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]  # [current, pending]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: int) -> int:
        gpu = self._gpu(device, "nvmlDeviceGetMaxMigDeviceCount")
        if gpu.mig is None:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self.MAX_MIG_DEVICES

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: int, index: int) -> _MigHandle:
        gpu = self._gpu(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if gpu.mig is None or not 0 <= index < self.MAX_MIG_DEVICES:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        if not gpu.mig or index >= len(gpu.mig_devices):
            raise self.NVMLError(self.NVML_ERROR_NOT_FOUND)
        return _MigHandle(device, index)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: _MigHandle) -> int:
        if not isinstance(migDevice, _MigHandle):
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        return migDevice.gpu

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return round(self._gpu(handle, "nvmlDeviceGetPowerUsage").power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if not gpu.has_energy:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        gpu.advance()
        return int(gpu.energy_mj)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        if gpu.mig:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)  # as on a GPU in MIG mode
        return _Utilization(gpu.utilization_pct)

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> _Memory:
        return _Memory(int(self._gpu(handle, "nvmlDeviceGetMemoryInfo").memory_used_mib * 2**20))

    def nvmlDeviceGetClockInfo(self, handle: int, type: int) -> int:
        assert type == self.NVML_CLOCK_SM
        return self._gpu(handle, "nvmlDeviceGetClockInfo").clock_sm_mhz

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperature").temperature_c

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_ProcessInfo]:
        gpu = self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [_ProcessInfo(pid, mib, bool(gpu.mig)) for pid, mib in dict(gpu.processes).items()]

"""NVIDIA GPUs through NVML (nvidia-ml-py): power, energy, utilisation, memory, SM clock, temperature.

Energy comes from `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver
loaded, Volta and newer); where a GPU lacks it, `profilers.energy` integrates
the power readings and the summary says so. The counter is 64 bits wide and
cannot wrap, so a decrease is a reset (driver reload, GPU reset), which
`profilers.energy` bridges with the power readings. Every GPU of the node is
read, even when a run uses only some: idle GPUs burn energy too (paper §4.5).

Real servers are uneven, so everything is decided per GPU:

- a GPU NVML lists but cannot open or identify (NVML_ERROR_NO_PERMISSION on a GPU hidden
  by cgroups, NVML_ERROR_GPU_IS_LOST) is a problem with its reason and fix; the others are
  measured;
- a GPU without a power reading stays a known GPU (its metadata says why, and a run that
  asks for it is never told it does not exist); its utilisation, memory, clock and
  temperature are still read where NVML has them, so a reader sees it was busy;
- a GPU in MIG mode is measured whole: its power and energy are the physical GPU's, shared
  by all its MIG instances (metadata `mig`, and a summary warning);
- the compute processes on each GPU are listed at every read, and those that are not the
  profiled work's own (`own_pids`: a set, or a callable the sampler refreshes) come back as
  `GpuProcess` observations, and the whole list as one `GpuProcesses` (for the attribution).
  NVML gives pids in the host's pid namespace: inside a container the work's own processes
  cannot be matched and show up as foreign.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from profilers import gpus as gpu_identity
from profilers.sensors.base import (
    Counter,
    Fault,
    Gauge,
    GpuProcess,
    GpuProcesses,
    Observation,
    Power,
    Problem,
    Sensor,
    Status,
)

MIB = 2**20

OwnPids = Callable[[], Collection[int]] | Collection[int]


@dataclass
class _Gpu:
    index: int
    handle: Any = None
    identity: gpu_identity.GpuIdentity | None = None
    has_power: bool = False
    has_energy: bool = False
    gauges: tuple[str, ...] = ()
    mig_devices: list[str] = field(default_factory=list)
    list_processes: bool = False
    # Why a reading is missing: None where there is nothing to say.
    reason: str | None = None
    energy_reason: str | None = None
    processes_reason: str | None = None
    failed: bool = False

    @property
    def label(self) -> str:
        return f"gpu{self.index}"

    @property
    def readable(self) -> bool:
        return self.has_power or bool(self.gauges)


class NvmlSensor(Sensor):
    """Every NVIDIA GPU of the node; `gpus` marks the ones a run uses (NVML indices).

    `own_pids`: the profiled work's processes (a set, or a callable returning one, called when
    NVML shows a pid not seen before); other compute processes are reported. None: processes
    are not listed.
    """

    name = "nvml"

    def __init__(
        self,
        gpus: list[int] | tuple[int, ...] | None = None,
        nvml: ModuleType | Any = None,
        own_pids: OwnPids | None = None,
    ) -> None:
        self.used = None if gpus is None else tuple(gpus)
        self._nv = nvml
        self._known: list[_Gpu] = []
        self._driver: str | None = None
        self._initialised = False
        self._own_pids = own_pids
        self._own: set[int] = set()

    @property
    def _gpus(self) -> list[_Gpu]:
        """The GPUs that are read."""
        return [g for g in self._known if g.readable]

    def _error_status(self, exc: Exception) -> Status:
        nv = self._nv
        if gpu_identity.is_error(nv, exc, "NVML_ERROR_LIBRARY_NOT_FOUND"):
            return Status(
                self.name,
                False,
                reason="NVML: no NVIDIA driver (libnvidia-ml.so.1 not found)",
                fix="install the NVIDIA driver; on a machine without NVIDIA GPUs there is nothing to do",
            )
        if gpu_identity.is_error(nv, exc, "NVML_ERROR_DRIVER_NOT_LOADED"):
            return Status(
                self.name,
                False,
                reason="NVML: the NVIDIA driver is not loaded",
                fix="load it as root (`modprobe nvidia`) and check that `nvidia-smi` works",
            )
        if gpu_identity.is_error(nv, exc, "NVML_ERROR_NO_PERMISSION"):
            return Status(
                self.name,
                False,
                reason="NVML: no permission to open the GPU devices",
                fix="add the user to the group that owns /dev/nvidia*",
            )
        return Status(self.name, False, reason=f"NVML: {exc}", fix="check that `nvidia-smi` works")

    def _try(self, call: Any, *args: Any) -> str | None:
        """None if the call answers, else NVML's reason (any NVML error: this reading is skipped)."""
        nv = self._nv
        try:
            call(*args)
        except nv.NVMLError as exc:
            return gpu_identity.describe_error(nv, exc)
        return None

    def _gpu_problem(self, gpu: _Gpu, reason: str, fix: str) -> Problem:
        if self.used is not None and gpu.index in self.used:
            reason += "; the run uses this GPU, so its energy is missing from the run's GPU energy"
        return Problem(self.name, reason, fix)

    def _probe_gpu(self, index: int, problems: list[Problem]) -> _Gpu:
        """Open one GPU and find which readings it has; its problems are appended to `problems`."""
        nv = self._nv
        gpu = _Gpu(index)
        try:
            gpu.handle = nv.nvmlDeviceGetHandleByIndex(index)
            gpu.identity = gpu_identity.read_identity(nv, index, gpu.handle)
            if gpu.identity.mig:
                gpu.mig_devices = gpu_identity.mig_device_uuids(nv, gpu.handle)
        except nv.NVMLError as exc:
            gpu.reason = f"NVML cannot read this GPU: {gpu_identity.describe_error(nv, exc)}"
            problems.append(
                self._gpu_problem(
                    gpu, f"{gpu.label}: {gpu.reason}", gpu_identity.gpu_error_fix(nv, exc, index)
                )
            )
            return gpu
        h = gpu.handle
        try:
            nv.nvmlDeviceGetPowerUsage(h)
            gpu.has_power = True
        except nv.NVMLError as exc:
            gpu.reason = f"no power reading: {gpu_identity.describe_error(nv, exc)}"
            fix = (
                "none: the GPU does not measure power"
                if gpu_identity.is_error(nv, exc, "NVML_ERROR_NOT_SUPPORTED")
                else gpu_identity.gpu_error_fix(nv, exc, index)
            )
            problems.append(self._gpu_problem(gpu, f"{gpu.label}: NVML reports {gpu.reason}", fix))
        if gpu.has_power:
            gpu.energy_reason = self._try(nv.nvmlDeviceGetTotalEnergyConsumption, h)
            gpu.has_energy = gpu.energy_reason is None
        # Gauges a GPU lacks (utilisation in MIG mode, clocks on some boards) are just not read.
        gpu.gauges = tuple(
            metric
            for metric, call, args in (
                ("utilization", nv.nvmlDeviceGetUtilizationRates, (h,)),
                ("memory_used", nv.nvmlDeviceGetMemoryInfo, (h,)),
                ("clock_sm", nv.nvmlDeviceGetClockInfo, (h, nv.NVML_CLOCK_SM)),
                ("temperature", nv.nvmlDeviceGetTemperature, (h, nv.NVML_TEMPERATURE_GPU)),
            )
            if self._try(call, *args) is None
        )
        if self._own_pids is not None:
            gpu.processes_reason = self._try(nv.nvmlDeviceGetComputeRunningProcesses, h)
            gpu.list_processes = gpu.processes_reason is None
        return gpu

    def probe(self) -> Status:
        """Initialise NVML, find the GPUs and which readings each supports, GPU by GPU."""
        try:
            self._nv = gpu_identity.load_nvml(self._nv)
        except gpu_identity.NvmlUnavailable:
            return Status(
                self.name,
                False,
                reason="NVML: the nvidia-ml-py package is not installed",
                fix="`pip install nvidia-ml-py`",
            )
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            return self._error_status(exc)
        self._initialised = True
        problems: list[Problem] = []
        try:
            self._driver = gpu_identity.text(nv.nvmlSystemGetDriverVersion())
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            return self._error_status(exc)
        self._known = [self._probe_gpu(index, problems) for index in range(count)]
        for index in self.used or ():
            if not 0 <= index < count:
                problems.append(
                    Problem(
                        self.name,
                        f"gpu{index} was requested but NVML has no such GPU",
                        "use NVML indices (`nvidia-smi -L`)",
                    )
                )
        read = self._gpus
        if not read:
            return Status(
                self.name,
                False,
                reason="NVML: no NVIDIA GPU found"
                if count == 0
                else f"NVML: none of the {count} GPU(s) can be read",
                fix="none needed on a machine without GPUs"
                if count == 0
                else "see each GPU's problem below",
                problems=tuple(problems),
            )
        powered = [g for g in read if g.has_power]
        counters = sum(g.has_energy for g in powered)
        names = sorted({g.identity.name for g in read if g.identity is not None})
        detail = (
            f"{len(read)} GPU(s) ({', '.join(names)}), driver {self._driver}; "
            f"energy counter on {counters}, integrated power on {len(powered) - counters}"
        )
        if len(powered) < len(self._known):
            detail += f", no energy on {len(self._known) - len(powered)}"
        return Status(self.name, True, detail=detail, problems=tuple(problems))

    def _read_gpu(self, gpu: _Gpu) -> list[Observation]:
        nv = self._nv
        device = gpu.label
        h = gpu.handle
        out: list[Observation] = []
        if gpu.has_power:
            out.append(
                Power(device, nv.nvmlDeviceGetPowerUsage(h) / 1000.0, integrate=not gpu.has_energy)
            )
        if gpu.has_energy:
            # mJ since the driver loaded, 64 bits; NVML's own power reading is kept as the power row.
            out.append(
                Counter(
                    device,
                    int(nv.nvmlDeviceGetTotalEnergyConsumption(h)),
                    1e-3,
                    2**64,
                    emit_power=False,
                    can_wrap=False,
                )
            )
        if "utilization" in gpu.gauges:
            out.append(
                Gauge(device, "utilization", float(nv.nvmlDeviceGetUtilizationRates(h).gpu), "%")
            )
        if "memory_used" in gpu.gauges:
            out.append(
                Gauge(device, "memory_used", nv.nvmlDeviceGetMemoryInfo(h).used / MIB, "MiB")
            )
        if "clock_sm" in gpu.gauges:
            out.append(
                Gauge(
                    device, "clock_sm", float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)), "MHz"
                )
            )
        if "temperature" in gpu.gauges:
            out.append(
                Gauge(
                    device,
                    "temperature",
                    float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                    "C",
                )
            )
        return out

    def _processes(self, gpu: _Gpu) -> list[Observation]:
        """The GPU's compute processes: the whole list, then each one that is not the work's own.

        Nothing if NVML cannot list them.
        """
        nv = self._nv
        try:
            processes = nv.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
        except nv.NVMLError as exc:
            # Process lists are auxiliary: losing them does not make the energy partial.
            gpu.list_processes = False
            gpu.processes_reason = gpu_identity.describe_error(nv, exc)
            return []
        listed = tuple(
            (int(p.pid), None if p.usedGpuMemory is None else p.usedGpuMemory / MIB)
            for p in processes
        )
        out: list[Observation] = [GpuProcesses(gpu.label, listed)]
        if not listed:
            return out
        pids = {pid for pid, _ in listed}
        if not pids <= self._own:
            own = self._own_pids() if callable(self._own_pids) else self._own_pids
            self._own |= set(own or ())
        out += [GpuProcess(gpu.label, pid, mib) for pid, mib in listed if pid not in self._own]
        return out

    def read(self) -> list[Observation]:
        """Read every GPU once; a GPU that stops answering ends with a Fault."""
        observations: list[Observation] = []
        for gpu in self._gpus:
            if gpu.failed:
                continue
            try:
                observations.extend(self._read_gpu(gpu))
            except self._nv.NVMLError as exc:
                gpu.failed = True
                observations.append(
                    Fault(
                        gpu.label,
                        f"{gpu.label}: NVML stopped answering ({exc})",
                        "check `nvidia-smi`; the readings up to here are kept",
                    )
                )
                continue
            if gpu.list_processes:
                observations.extend(self._processes(gpu))
        return observations

    def metadata(self) -> dict[str, Any]:
        """The driver, the GPU models, and every GPU NVML lists: identity, readings, and why not."""
        entries = []
        for g in self._known:
            ident = g.identity
            entries.append(
                {
                    "index": g.index,
                    "name": ident.name if ident else None,
                    "uuid": ident.uuid if ident else None,
                    "pci_bus_id": ident.pci_bus_id if ident else None,
                    "mig": ident.mig if ident else None,
                    "mig_devices": g.mig_devices,
                    "power": g.has_power,
                    "energy_counter": g.has_energy,
                    "energy_counter_reason": g.energy_reason if g.has_power else None,
                    "read": g.readable,
                    "reason": g.reason,
                    "processes_listed": g.list_processes,
                    "processes_reason": g.processes_reason,
                }
            )
        return {
            "gpu_driver": self._driver,
            "gpu_models": [g.identity.name for g in self._known if g.identity is not None],
            "gpus": entries,
        }

    def warnings(self) -> list[str]:
        """MIG: the power and energy of a GPU in MIG mode belong to all its MIG instances."""
        out = []
        for g in self._gpus:
            if g.identity is not None and g.identity.mig and g.has_power:
                count = f"{len(g.mig_devices)} " if g.mig_devices else ""
                out.append(
                    f"nvml:{g.label} is in MIG mode: its power and energy are the whole physical "
                    f"GPU's, shared by its {count}MIG instance(s), not one instance's share"
                )
        return out

    def is_used(self, device: str) -> bool:
        """A GPU is used if no list was given or its index is in the list."""
        return self.used is None or int(device.removeprefix("gpu")) in self.used

    def close(self) -> None:
        """Shut NVML down."""
        if self._initialised:
            self._nv.nvmlShutdown()
            self._initialised = False

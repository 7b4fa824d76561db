"""NVIDIA GPUs through NVML (nvidia-ml-py): power, energy, utilisation, memory, SM clock, temperature.

Energy comes from `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver
loaded, Volta and newer); where a GPU lacks it, `profilers.energy` integrates
the power readings and the summary says so. Every GPU of the node is read, even
when a run uses only some: idle GPUs burn energy too (paper §4.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from profilers.sensors.base import (
    Counter,
    Fault,
    Gauge,
    Observation,
    Power,
    Problem,
    Sensor,
    Status,
)

MIB = 2**20


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    uuid: str | None
    has_energy: bool
    gauges: tuple[str, ...]
    failed: bool = False


class NvmlSensor(Sensor):
    """Every NVIDIA GPU of the node; `gpus` marks the ones a run uses (NVML indices)."""

    name = "nvml"

    def __init__(
        self, gpus: list[int] | tuple[int, ...] | None = None, nvml: ModuleType | Any = None
    ) -> None:
        self.used = None if gpus is None else tuple(gpus)
        self._nv = nvml
        self._gpus: list[_Gpu] = []
        self._driver: str | None = None
        self._initialised = False

    def _error_status(self, exc: Exception) -> Status:
        nv = self._nv
        code = getattr(exc, "value", None)
        if code == getattr(nv, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
            return Status(
                self.name,
                False,
                reason="NVML: no NVIDIA driver (libnvidia-ml.so.1 not found)",
                fix="install the NVIDIA driver; on a machine without NVIDIA GPUs there is nothing to do",
            )
        if code == getattr(nv, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
            return Status(
                self.name,
                False,
                reason="NVML: the NVIDIA driver is not loaded",
                fix="load it as root (`modprobe nvidia`) and check that `nvidia-smi` works",
            )
        if code == getattr(nv, "NVML_ERROR_NO_PERMISSION", object()):
            return Status(
                self.name,
                False,
                reason="NVML: no permission to open the GPU devices",
                fix="add the user to the group that owns /dev/nvidia*",
            )
        return Status(self.name, False, reason=f"NVML: {exc}", fix="check that `nvidia-smi` works")

    def _supported(self, call: Any, *args: Any) -> bool:
        nv = self._nv
        try:
            call(*args)
        except nv.NVMLError as exc:
            if getattr(exc, "value", None) == nv.NVML_ERROR_NOT_SUPPORTED:
                return False
            raise
        return True

    def probe(self) -> Status:
        """Initialise NVML, find the GPUs and which readings each supports."""
        if self._nv is None:
            try:
                import pynvml
            except ImportError:
                return Status(
                    self.name,
                    False,
                    reason="NVML: the nvidia-ml-py package is not installed",
                    fix="`pip install nvidia-ml-py`",
                )
            self._nv = pynvml
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            return self._error_status(exc)
        self._initialised = True
        problems: list[Problem] = []
        try:
            self._driver = _text(nv.nvmlSystemGetDriverVersion())
            count = nv.nvmlDeviceGetCount()
            for index in range(count):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                try:
                    uuid: str | None = _text(nv.nvmlDeviceGetUUID(handle))
                except nv.NVMLError:
                    uuid = None
                if not self._supported(nv.nvmlDeviceGetPowerUsage, handle):
                    problems.append(
                        Problem(
                            self.name,
                            f"gpu{index}: NVML reports no power reading",
                            "none: the GPU does not measure power",
                        )
                    )
                    continue
                gauges = tuple(
                    metric
                    for metric, call, args in (
                        ("utilization", nv.nvmlDeviceGetUtilizationRates, (handle,)),
                        ("memory_used", nv.nvmlDeviceGetMemoryInfo, (handle,)),
                        ("clock_sm", nv.nvmlDeviceGetClockInfo, (handle, nv.NVML_CLOCK_SM)),
                        (
                            "temperature",
                            nv.nvmlDeviceGetTemperature,
                            (handle, nv.NVML_TEMPERATURE_GPU),
                        ),
                    )
                    if self._supported(call, *args)
                )
                self._gpus.append(
                    _Gpu(
                        index,
                        handle,
                        _text(nv.nvmlDeviceGetName(handle)),
                        uuid,
                        self._supported(nv.nvmlDeviceGetTotalEnergyConsumption, handle),
                        gauges,
                    )
                )
        except nv.NVMLError as exc:
            return self._error_status(exc)
        if self.used is not None:
            known = {g.index for g in self._gpus}
            for index in self.used:
                if index not in known:
                    problems.append(
                        Problem(
                            self.name,
                            f"gpu{index} was requested but NVML has no such GPU",
                            "use NVML indices (`nvidia-smi -L`)",
                        )
                    )
        if not self._gpus:
            return Status(
                self.name,
                False,
                reason="NVML: no NVIDIA GPU found",
                fix="none needed on a machine without GPUs",
                problems=tuple(problems),
            )
        counters = sum(g.has_energy for g in self._gpus)
        detail = (
            f"{len(self._gpus)} GPU(s) ({', '.join(sorted({g.name for g in self._gpus}))}), driver {self._driver}; "
            f"energy counter on {counters}, integrated power on {len(self._gpus) - counters}"
        )
        return Status(self.name, True, detail=detail, problems=tuple(problems))

    def _read_gpu(self, gpu: _Gpu) -> list[Observation]:
        nv = self._nv
        device = f"gpu{gpu.index}"
        h = gpu.handle
        out: list[Observation] = [
            Power(device, nv.nvmlDeviceGetPowerUsage(h) / 1000.0, integrate=not gpu.has_energy)
        ]
        if gpu.has_energy:
            # mJ since the driver loaded, 64 bits; NVML's own power reading is kept as the power row.
            out.append(
                Counter(
                    device,
                    int(nv.nvmlDeviceGetTotalEnergyConsumption(h)),
                    1e-3,
                    2**64,
                    emit_power=False,
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
                        f"gpu{gpu.index}",
                        f"gpu{gpu.index}: NVML stopped answering ({exc})",
                        "check `nvidia-smi`; the readings up to here are kept",
                    )
                )
        return observations

    def metadata(self) -> dict[str, Any]:
        """GPU models and the driver version."""
        return {
            "gpu_driver": self._driver,
            "gpu_models": [g.name for g in self._gpus],
            "gpus": [
                {"index": g.index, "name": g.name, "uuid": g.uuid, "energy_counter": g.has_energy}
                for g in self._gpus
            ],
        }

    def is_used(self, device: str) -> bool:
        """A GPU is used if no list was given or its index is in the list."""
        return self.used is None or int(device.removeprefix("gpu")) in self.used

    def close(self) -> None:
        """Shut NVML down."""
        if self._initialised:
            self._nv.nvmlShutdown()
            self._initialised = False

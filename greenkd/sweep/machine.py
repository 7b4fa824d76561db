"""What a sweep spreads its runs over here (GPUs, else CPU cores), and the device counts it may ask."""

from __future__ import annotations

from dataclasses import dataclass

from greenkd import devices as devices_mod
from greenkd.errors import GreenkdError
from greenkd.sweep.spec import SweepSpec


@dataclass(frozen=True)
class Machine:
    """What a sweep can spread runs over here: GPUs, else CPU cores."""

    kind: str  # "gpu" or "cpu"
    gpus: int
    cores: int
    gpu_indices: tuple[int, ...] = ()  # NVML indices of the GPUs CUDA_VISIBLE_DEVICES allows

    def used_gpus(self, devices: int) -> list[int] | None:
        """NVML indices of the GPUs a run on `devices` devices trains on (the profiler's used
        GPUs: the first ones CUDA_VISIBLE_DEVICES allows, as the run picks them); None on CPUs."""
        return list(self.gpu_indices[: min(devices, len(self.gpu_indices))]) or None

    @property
    def devices(self) -> int:
        return self.gpus if self.kind == "gpu" else self.cores

    def describe(self) -> str:
        if self.kind == "gpu":
            return f"{self.gpus} GPU(s)"
        return f"no GPU: CPU workers on {self.cores} core(s)"


def this_machine() -> Machine:
    """GPUs through NVML (no TensorFlow), else the cores this process may run on."""
    gpus = devices_mod.visible_gpus()
    cores = len(devices_mod.allowed_cores())
    return Machine("gpu" if gpus else "cpu", len(gpus), cores, tuple(g.nvml_index for g in gpus))


def check_devices(spec: SweepSpec, machine: Machine) -> None:
    """Refuse device counts the machine does not have, unless oversubscription is allowed."""
    most = max(spec.devices)
    if most <= machine.devices or spec.allow_oversubscribe:
        return
    have = (
        f"{machine.gpus} GPU(s)"
        if machine.kind == "gpu"
        else f"no GPU and {machine.cores} CPU core(s) for CPU workers"
    )
    raise GreenkdError(
        f"--gpus asks for {most} devices but this machine has {have}; "
        "use fewer or pass --allow-oversubscribe to share them"
    )


def cores_per_device(spec: SweepSpec, machine: Machine) -> int:
    """Cores each CPU device gets at every device count, so speedups compare equal devices."""
    return max(1, machine.cores // max(spec.devices))

"""Devices a run spreads its tasks over: GPUs where there are GPUs, else disjoint CPU core sets.

Detection uses NVML (no TensorFlow import), so the parent process of a
parallel run never grabs a GPU that a worker needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from greenkd.errors import GreenkdError


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu" or "cpu"
    index: int
    label: str  # gpu0, gpu1 ... or cpuset0, cpuset1 ...
    cores: tuple[int, ...]  # CPU cores the worker is pinned to (all allowed cores for a GPU worker)
    gpu: int | None = None  # physical GPU index for CUDA_VISIBLE_DEVICES

    def env(self) -> dict[str, str]:
        """Environment a worker for this device needs before TensorFlow is imported."""
        visible = "" if self.gpu is None else str(self.gpu)
        return {"CUDA_VISIBLE_DEVICES": visible}


def gpu_count() -> int:
    """NVIDIA GPUs visible to this process (0 without a driver); honours CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: NVML raises NVMLError subclasses or OSError
        return 0
    if visible is not None:
        wanted = [v for v in visible.split(",") if v.strip() not in ("", "-1")]
        return min(count, len(wanted))
    return count


def allowed_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan_devices(n: int, *, allow_oversubscribe: bool = False) -> list[Device]:
    """`n` devices for a run: the first n GPUs, or n disjoint sets of this process's cores."""
    if n < 1:
        raise GreenkdError(f"--gpus must be >= 1, got {n}")
    gpus = gpu_count()
    cores = allowed_cores()
    if gpus:
        if n > gpus and not allow_oversubscribe:
            raise GreenkdError(
                f"asked for {n} devices but this machine has {gpus} GPU(s); "
                "use fewer or pass --allow-oversubscribe to share GPUs"
            )
        return [
            Device(
                "gpu",
                k,
                f"gpu{k % gpus}" if n <= gpus else f"gpu{k % gpus}.{k // gpus}",
                tuple(cores),
                gpu=k % gpus,
            )
            for k in range(n)
        ]
    if n > len(cores) and not allow_oversubscribe:
        raise GreenkdError(
            f"asked for {n} devices but this machine has no GPU and {len(cores)} CPU core(s) "
            "for CPU workers; use fewer or pass --allow-oversubscribe to share cores"
        )
    if n > len(cores):
        sets = [(cores[k % len(cores)],) for k in range(n)]
    else:
        per = len(cores) // n
        sets = [tuple(cores[k * per : (k + 1) * per]) for k in range(n)]
    return [Device("cpu", k, f"cpuset{k}", s) for k, s in enumerate(sets)]


def describe(devices: list[Device]) -> str:
    if devices and devices[0].kind == "gpu":
        return f"{len(devices)} GPU worker(s): " + ", ".join(d.label for d in devices)
    return f"no GPU found: {len(devices)} CPU worker(s), cores " + "; ".join(
        ",".join(map(str, d.cores)) for d in devices
    )

"""Devices a run spreads its tasks over: GPUs where there are GPUs, else disjoint CPU core sets.

A GPU is named once, through NVML (`profilers.gpus`): the GPUs the user's
`CUDA_VISIBLE_DEVICES` allows (indices in PCI bus order, UUIDs, MIG devices), each
labelled `gpuK` with K its NVML index, the label the profiler's samples carry too. A
worker sees exactly its GPU, by UUID, with `CUDA_DEVICE_ORDER=PCI_BUS_ID`; no process
maps GPU memory up front (memory growth for TensorFlow, no preallocation for JAX), in
every backend alike, since all of them bind through `Device.env()`. GPU workers split
the node's cores between them, and size their thread pools by their share.

Every process greenkd starts gets its run's framework the same way: `KERAS_BACKEND` (and the
framework's own thread and memory settings) in `Device.env()`, applied by `bind()` in a worker
and by `bind_run_process()` in the run's own process, before Keras loads. `bind()` ties a
process to its device before the framework is imported; `greenkd.framework.configure()` then
sets TensorFlow's thread counts before its first op (JAX reads its settings from the
environment). This module imports no framework.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from greenkd.errors import GreenkdError
from profilers import gpus as gpu_identity
from profilers.sensors.topology import read_cpu_model

if TYPE_CHECKING:
    from greenkd.config import RunConfig

# Every process greenkd starts, on any backend: take GPU memory as needed, never most of the
# card up front (several workers may share a GPU, and the run's own process fine-tunes beside
# worker 0).
GPU_MEMORY_ENV = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu", "cpu", or "remote" (a worker of an external Dask cluster)
    index: int
    label: str  # gpuK (K the NVML index; gpuK.j when oversubscribed) or cpuset0, cpuset1 ...
    cores: tuple[int, ...]  # CPU cores the worker is pinned to
    gpu: int | None = None  # the physical GPU's NVML index
    shared: bool = False  # oversubscribed: other devices use the same GPU or cores
    gpu_uuid: str | None = None  # what CUDA_VISIBLE_DEVICES names: the GPU's or MIG device's UUID
    framework: str = "tensorflow"  # the Keras backend its worker loads (RunConfig.framework)

    @property
    def threads(self) -> int:
        """Framework intra-op threads for a worker on this device: one per core it holds."""
        return max(1, len(self.cores))

    @property
    def physical(self) -> str:
        """The label of the hardware whose energy this device uses: `gpu0` for `gpu0.1`."""
        return self.label.split(".")[0]

    def env(self) -> dict[str, str]:
        """Environment a worker for this device needs before its framework is imported."""
        if self.kind == "gpu":
            visible = self.gpu_uuid or str(self.gpu)
            env = {"CUDA_DEVICE_ORDER": gpu_identity.PCI_BUS_ID, "CUDA_VISIBLE_DEVICES": visible}
        else:
            env = dict(NO_GPU_ENV)
        env.update(GPU_MEMORY_ENV)
        # read by TensorFlow's runtime, XLA's CPU client and OpenMP at start-up;
        # greenkd.framework.configure() sets TensorFlow's through the API too
        threads = str(self.threads)
        env.update(
            TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads
        )
        env.update(framework_env(self.framework, self.threads))
        return env

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "index": self.index,
            "label": self.label,
            "cores": list(self.cores),
            "gpu": self.gpu,
            "gpu_uuid": self.gpu_uuid,
            "framework": self.framework,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Device:
        return cls(
            kind=data["kind"],
            index=int(data["index"]),
            label=data["label"],
            cores=tuple(data["cores"]),
            gpu=data.get("gpu"),
            shared=bool(data.get("shared", False)),
            gpu_uuid=data.get("gpu_uuid"),
            framework=data.get("framework", "tensorflow"),
        )


def visible_gpus() -> list[gpu_identity.GpuIdentity]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES resolved through NVML); [] without
    NVML or a driver. A CUDA_VISIBLE_DEVICES that names no GPU here is a GreenkdError."""
    try:
        return list(gpu_identity.resolve_visible().gpus)
    except gpu_identity.NvmlUnavailable:
        return []


def gpu_count() -> int:
    """NVIDIA GPUs visible to this process (0 without a driver); honours CUDA_VISIBLE_DEVICES."""
    return len(visible_gpus())


def gpu_name() -> str:
    """The first visible GPU's name from NVML, or '' without one."""
    gpus = visible_gpus()
    return gpus[0].name if gpus else ""


def allowed_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan_devices(
    n: int,
    *,
    allow_oversubscribe: bool = False,
    cores_per_device: int | None = None,
    framework: str = "tensorflow",
) -> list[Device]:
    """`n` devices for a run: the first n GPUs, or n disjoint sets of this process's cores.

    `cores_per_device` fixes a CPU device's size whatever n is (a 1- vs n-device
    comparison then compares equal devices); None splits the allowed cores n ways.
    GPU workers get disjoint core sets of that size when it is given, else all cores.
    """
    if n < 1:
        raise GreenkdError(f"--gpus must be >= 1, got {n}")
    if cores_per_device is not None and cores_per_device < 1:
        raise GreenkdError(f"--cores-per-device must be >= 1, got {cores_per_device}")
    gpus = visible_gpus()
    cores = allowed_cores()
    if gpus:
        if n > len(gpus) and not allow_oversubscribe:
            raise GreenkdError(
                f"asked for {n} devices but this machine has {len(gpus)} GPU(s); "
                "use fewer or pass --allow-oversubscribe to share GPUs"
            )
        # GPU workers split the node's cores: each sizes its thread pools by its share
        per = cores_per_device or max(1, len(cores) // n)
        out = []
        for k in range(n):
            gpu = gpus[k % len(gpus)]
            label = gpu.label if n <= len(gpus) else f"{gpu.label}.{k // len(gpus)}"
            share = tuple(cores[(k * per + i) % len(cores)] for i in range(min(per, len(cores))))
            uuid = gpu_identity.visible_env(gpu)["CUDA_VISIBLE_DEVICES"]
            out.append(
                Device("gpu", k, label, share, gpu.nvml_index, n > len(gpus), uuid, framework)
            )
        return out
    per = cores_per_device or max(1, len(cores) // n)
    if n * per > len(cores) and not allow_oversubscribe:
        wanted = f"{n} devices" if cores_per_device is None else f"{n} devices x {per} cores"
        raise GreenkdError(
            f"asked for {wanted} but this machine has no GPU and {len(cores)} CPU core(s) "
            "for CPU workers; use fewer or pass --allow-oversubscribe to share cores"
        )
    if per > len(cores):
        raise GreenkdError(
            f"--cores-per-device {per} is more than the {len(cores)} core(s) this process may use"
        )
    shared = n * per > len(cores)
    # oversubscribed: core sets wrap around the allowed cores
    sets = [tuple(cores[(k * per + i) % len(cores)] for i in range(per)) for k in range(n)]
    return [
        Device("cpu", k, f"cpuset{k}", s, shared=shared, framework=framework)
        for k, s in enumerate(sets)
    ]


def run_devices(cfg: RunConfig) -> list[Device]:
    """A run's devices: an external Dask cluster's workers (kind "remote"), else plan_devices."""
    if cfg.backend == "dask" and cfg.scheduler_address:
        # they live on the cluster's machines; each task reports the worker it ran on
        return [
            Device("remote", k, f"dask{k}", (), framework=cfg.framework) for k in range(cfg.gpus)
        ]
    return plan_devices(
        cfg.gpus,
        allow_oversubscribe=cfg.allow_oversubscribe,
        cores_per_device=cfg.cores_per_device,
        framework=cfg.framework,
    )


def covers_process(device: Device) -> bool:
    """True when binding to `device` would change nothing for this process (1 device, all cores)."""
    return device.kind == "cpu" and set(device.cores) >= set(allowed_cores())


def bind(device: Device) -> None:
    """Tie this process to `device`: GPU visibility, CPU affinity of every thread, thread env.

    Call before TensorFlow is imported: TensorFlow reads CUDA_VISIBLE_DEVICES when it
    loads. A CPU device can still be bound after a bare import (a spawned worker
    re-imports its parent's main module, which may import TensorFlow): the thread
    pools start with the first op, and new threads inherit the affinity set here.
    """
    loaded = [name for name in ("tensorflow", "jax", "torch") if name in sys.modules]
    if loaded and device.kind == "gpu":
        raise GreenkdError(
            f"cannot bind this process to {device.label}: {loaded[0]} was imported before "
            "CUDA_VISIBLE_DEVICES could be set (a script that imports it at the top and starts "
            "workers should import it inside `if __name__ == '__main__':`)"
        )
    os.environ.update(device.env())
    set_affinity(device.cores)


def framework_env(framework: str, threads: int | None = None) -> dict[str, str]:
    """What a process needs to load `framework` under Keras the way greenkd runs it.

    KERAS_BACKEND for all; for JAX, XLA's CPU client confined to one thread when the process
    has one core (it sizes its pools by the process's CPU affinity otherwise, which `bind`
    sets), appended to the user's own XLA_FLAGS. Memory: GPU_MEMORY_ENV, set for every process.
    """
    env = {"KERAS_BACKEND": framework}
    if framework == "jax" and threads == 1:
        single = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        user = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = user if single in user else f"{user} {single}".strip()
    return env


def bind_run_process(devices: list[Device], framework: str = "tensorflow") -> None:
    """Bind the run's own process (set-up, assembly, fine-tuning) before its framework loads:
    on a GPU run it sees the first device's GPU only (where it fine-tunes, beside that
    device's worker), on a CPU run no GPU; memory is taken as needed either way; Keras loads
    `framework`. The cores are the CPU devices' own (`confined_to`), set around the run."""
    os.environ.update(framework_env(framework))
    if (
        devices
        and devices[0].kind == "gpu"
        and not any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
    ):
        first = devices[0]
        os.environ.update(
            CUDA_DEVICE_ORDER=gpu_identity.PCI_BUS_ID,
            CUDA_VISIBLE_DEVICES=first.gpu_uuid or str(first.gpu),
        )
    elif devices and devices[0].kind == "cpu":
        os.environ.update(NO_GPU_ENV)
    os.environ.update(GPU_MEMORY_ENV)


def set_affinity(cores: tuple[int, ...] | list[int]) -> None:
    """Pin every thread of this process to `cores`.

    `os.sched_setaffinity(0, ...)` changes only the calling thread; a Dask worker
    or an MPI rank already runs other threads, and threads started later inherit
    their creator's mask, so every existing thread is set.
    """
    wanted = set(cores)
    tids = (
        [int(t) for t in os.listdir("/proc/self/task")] if Path("/proc/self/task").is_dir() else [0]
    )
    for tid in tids:
        try:
            os.sched_setaffinity(tid, wanted)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


@contextlib.contextmanager
def confined_to(devices: list[Device]) -> Iterator[list[int]]:
    """Run the block with this process on the union of CPU devices' cores; yields them.

    The parent of a run on CPU devices (set-up, assembly, fine-tuning) must not
    use cores its devices do not have: a 1-device run with `--cores-per-device 1`
    would otherwise fine-tune on the whole machine and look faster than a
    1-core device is. GPU devices and devices covering every allowed core change
    nothing. The previous affinity is restored on exit.
    """
    before = allowed_cores()
    cores = sorted({c for d in devices for c in d.cores} & set(before))
    if not devices or any(d.kind != "cpu" for d in devices) or not cores or cores == before:
        yield before
        return
    set_affinity(cores)
    try:
        yield cores
    finally:
        set_affinity(before)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, as the profiler reads it), or the machine type."""
    return read_cpu_model() or os.uname().machine


def hardware_label(devices: list[Device]) -> str:
    """What a task's time depends on besides the run settings: device kind, model and size."""
    if not devices:
        return "none"
    d = devices[0]
    if d.kind == "remote":
        return "remote"
    if d.kind == "gpu":
        return f"gpu:{gpu_name() or 'unknown'}"
    return f"cpu:{cpu_model()} x{len(d.cores)}"


def describe(devices: list[Device]) -> str:
    if devices and devices[0].kind == "gpu":
        return f"{len(devices)} GPU worker(s): " + ", ".join(d.label for d in devices)
    return f"no GPU found: {len(devices)} CPU worker(s), cores " + "; ".join(
        ",".join(map(str, d.cores)) for d in devices
    )

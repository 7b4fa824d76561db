"""One GPU identity: what a GPU is (NVML index, UUID, PCI bus id, MIG) and which GPUs a run uses.

Every part of greenkd that names a GPU resolves it here, once, through NVML: the profiler's
labels (`gpuK`, K the NVML index), the workers' `CUDA_VISIBLE_DEVICES` (`visible_env`) and the
default `--gpus` of `greenkd profile` (`default_used_gpus`). No framework is imported; NVML comes
from an argument (the pynvml module, or a stand-in with the same functions), default pynvml.

`CUDA_VISIBLE_DEVICES` is read as CUDA reads it:

- unset: every GPU; set to `-1` or empty: no GPU. A negative index ends the list, as in CUDA
  (`0,-1,1` is GPU 0 alone).
- an index is a position in CUDA's device order. With `CUDA_DEVICE_ORDER=PCI_BUS_ID` that is
  PCI bus id order, which need not be NVML's enumeration order (NVML guarantees none: the
  index k of `gpuK` can name another card than CUDA's device k); otherwise CUDA puts the
  fastest GPU first. greenkd sets PCI_BUS_ID for its own children (`visible_env`); for a user's index list
  the resolver assumes PCI bus order and records what CUDA_DEVICE_ORDER said
  (`VisibleGpus.cuda_device_order`, `order_assumed`); `order_warning` speaks up only where
  the orders can differ, on a node of mixed GPU models (on one model CUDA's fastest-first
  order ties and falls back to PCI bus order). CUDA counts only the GPUs this process may open, so where NVML
  lists a GPU it may not open (hidden by cgroups: NVML_ERROR_NO_PERMISSION) index k is the k-th
  GPU that can be opened.
- `GPU-<uuid>` (or a prefix of one that names a single GPU, which CUDA also accepts) and
  `MIG-<uuid>` (or the older `MIG-GPU-<uuid>/<gi>/<ci>`): a MIG device resolves to its parent GPU,
  whose NVML index labels its energy; the MIG UUID is kept for `CUDA_VISIBLE_DEVICES`.

An entry that names no GPU of this node is a `GreenkdError` that says what the node has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from greenkd.errors import GreenkdError

PCI_BUS_ID = "PCI_BUS_ID"
# Every MIG-capable GPU so far has at most 7 MIG devices; NVML says how many for each GPU.
_MIG_SLOTS_FALLBACK = 7


class NvmlUnavailable(GreenkdError):
    """NVML cannot be used here (no package, no driver): the node has no GPU greenkd can see."""


@dataclass(frozen=True)
class GpuIdentity:
    """One GPU as NVML knows it; `mig_uuid` when the run was given one of its MIG devices."""

    nvml_index: int
    uuid: str
    pci_bus_id: str
    name: str
    mig: bool
    mig_uuid: str | None = None

    @property
    def label(self) -> str:
        """The device name in samples and summaries: `gpu<NVML index>`."""
        return f"gpu{self.nvml_index}"


@dataclass(frozen=True)
class VisibleGpus:
    """The GPUs `CUDA_VISIBLE_DEVICES` names, as resolved through NVML."""

    gpus: tuple[GpuIdentity, ...]
    # The variable as found: None when unset (every GPU).
    cuda_visible_devices: str | None
    # CUDA_DEVICE_ORDER as found: None when unset (CUDA then orders the fastest GPU first).
    cuda_device_order: str | None
    # Whether an entry was an index, whose meaning depends on CUDA_DEVICE_ORDER.
    by_index: bool
    # GPUs NVML lists but this process cannot open: "gpuK: reason".
    unreadable: tuple[str, ...] = ()
    # Whether the node has more than one GPU model: only then can CUDA's default order
    # (fastest first, ties in PCI bus order) differ from PCI bus order.
    mixed_models: bool = False

    @property
    def nvml_indices(self) -> list[int]:
        """The NVML indices of the GPUs, in the order named."""
        return [g.nvml_index for g in self.gpus]

    @property
    def order_assumed(self) -> bool:
        """True when indices were read in PCI bus order without CUDA_DEVICE_ORDER=PCI_BUS_ID."""
        return self.by_index and self.cuda_device_order != PCI_BUS_ID

    def order_warning(self) -> str | None:
        """A line saying the assumed index order may be wrong here, else None."""
        if not (self.order_assumed and self.mixed_models):
            return None
        return (
            f"CUDA_VISIBLE_DEVICES={self.cuda_visible_devices} was read in PCI bus order "
            f"(NVML's and nvidia-smi's) but CUDA_DEVICE_ORDER is "
            f"{self.cuda_device_order or 'unset'}, and on this node of mixed GPU models CUDA "
            "then puts the fastest GPU first: set CUDA_DEVICE_ORDER=PCI_BUS_ID or name the GPUs "
            "by UUID"
        )


def load_nvml(nvml: ModuleType | Any = None) -> Any:
    """The NVML module to use: the argument, else pynvml; NvmlUnavailable if it is not installed."""
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable(
            "NVML: the nvidia-ml-py package is not installed (`pip install nvidia-ml-py`)"
        ) from exc
    return pynvml


def text(value: Any) -> str:
    """NVML strings arrive as bytes from ctypes fields (PCI bus ids) and as str elsewhere."""
    return value.decode() if isinstance(value, bytes) else str(value)


def error_code(exc: BaseException) -> int | None:
    """The NVML_ERROR_* code of an NVMLError."""
    return getattr(exc, "value", None)


def is_error(nv: Any, exc: BaseException, *names: str) -> bool:
    """Whether an NVMLError carries one of the named codes (`"NVML_ERROR_NOT_SUPPORTED"`, ...)."""
    code = error_code(exc)
    return any(code is not None and code == getattr(nv, name, object()) for name in names)


def mig_enabled(nv: Any, handle: Any) -> bool:
    """Whether the GPU's current MIG mode is enabled; False for GPUs (or drivers) without MIG."""
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except nv.NVMLError as exc:
        if is_error(nv, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
            return False
        raise
    return current == nv.NVML_DEVICE_MIG_ENABLE


def mig_device_uuids(nv: Any, handle: Any) -> list[str]:
    """The UUIDs of a MIG-enabled GPU's MIG devices (empty slots are skipped)."""
    try:
        slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
    except nv.NVMLError as exc:
        if is_error(nv, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
            return []
        raise
    uuids = []
    for slot in range(slots or _MIG_SLOTS_FALLBACK):
        try:
            mig_handle = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nv.NVMLError as exc:
            # NOT_FOUND: no MIG device in this slot; INVALID_ARGUMENT: past the last slot.
            if is_error(nv, exc, "NVML_ERROR_NOT_FOUND"):
                continue
            if is_error(nv, exc, "NVML_ERROR_INVALID_ARGUMENT"):
                break
            raise
        uuids.append(text(nv.nvmlDeviceGetUUID(mig_handle)))
    return uuids


def read_identity(nv: Any, index: int, handle: Any) -> GpuIdentity:
    """The identity of the GPU at NVML index `index` (NVMLError if NVML cannot say)."""
    return GpuIdentity(
        nvml_index=index,
        uuid=text(nv.nvmlDeviceGetUUID(handle)),
        pci_bus_id=text(nv.nvmlDeviceGetPciInfo(handle).busId),
        name=text(nv.nvmlDeviceGetName(handle)),
        mig=mig_enabled(nv, handle),
    )


def describe_error(nv: Any, exc: BaseException) -> str:
    """`Insufficient Permissions (NVML_ERROR_NO_PERMISSION)` for an NVMLError."""
    code = error_code(exc)
    names = [
        name
        for name in dir(nv)
        if name.startswith("NVML_ERROR_") and getattr(nv, name, None) == code
    ]
    return f"{exc} ({names[0]})" if names else str(exc)


def gpu_error_fix(nv: Any, exc: BaseException, index: int) -> str:
    """How to fix an NVML error on one GPU."""
    if is_error(nv, exc, "NVML_ERROR_NO_PERMISSION"):
        return (
            f"the GPU is hidden from this process (Slurm or container cgroups, or the mode of "
            f"/dev/nvidia{index}); nothing to do if the run does not use it, else request it in "
            "the job's allocation or add the user to the group that owns /dev/nvidia*"
        )
    if is_error(nv, exc, "NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED"):
        return (
            f"the GPU fell off the bus: look for Xid errors in the kernel log; it needs a reset "
            f"(`nvidia-smi -r -i {index}`, as root, with nothing running on it) or a reboot"
        )
    return f"check `nvidia-smi -i {index}`"


def node_gpus(nv: Any) -> tuple[list[GpuIdentity], list[str]]:
    """Every GPU of the node NVML can open (NVML initialised), and "gpuK: reason" for the others."""
    gpus: list[GpuIdentity] = []
    unreadable: list[str] = []
    for index in range(nv.nvmlDeviceGetCount()):
        try:
            gpus.append(read_identity(nv, index, nv.nvmlDeviceGetHandleByIndex(index)))
        except nv.NVMLError as exc:
            unreadable.append(f"gpu{index}: {describe_error(nv, exc)}")
    return gpus, unreadable


def pci_order(gpus: list[GpuIdentity]) -> list[GpuIdentity]:
    """The GPUs in PCI bus id order: CUDA's device order under CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    return sorted(gpus, key=lambda g: g.pci_bus_id.lower())


def _by_gpu_uuid(entry: str, gpus: list[GpuIdentity]) -> GpuIdentity | None:
    exact = [g for g in gpus if g.uuid == entry]
    if exact:
        return exact[0]
    # CUDA accepts any prefix of a UUID that names one GPU.
    matches = [g for g in gpus if g.uuid.startswith(entry)]
    if len(matches) > 1:
        raise GreenkdError(
            f"CUDA_VISIBLE_DEVICES entry {entry!r} is the start of the UUIDs of "
            f"{', '.join(g.label for g in matches)}: give enough of the UUID to name one GPU "
            "(`nvidia-smi -L` lists them)"
        )
    return matches[0] if matches else None


def _mig_parent(nv: Any, entry: str, gpus: list[GpuIdentity]) -> GpuIdentity | None:
    """The GPU a MIG device belongs to: NVML's own lookup where the driver has it, else a scan."""
    if entry.startswith("MIG-GPU-"):
        # Before driver R470 a MIG device was named `MIG-<parent GPU UUID>/<GI>/<CI>`.
        parent_uuid = entry.removeprefix("MIG-").split("/")[0]
        return next((g for g in gpus if g.uuid == parent_uuid), None)
    lookup = getattr(nv, "nvmlDeviceGetHandleByUUID", None)
    to_parent = getattr(nv, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", None)
    if lookup is not None and to_parent is not None:
        try:
            parent_uuid = text(nv.nvmlDeviceGetUUID(to_parent(lookup(entry))))
        except nv.NVMLError:
            parent_uuid = None  # a driver that does not look MIG UUIDs up: scan below
        if parent_uuid is not None:
            return next((g for g in gpus if g.uuid == parent_uuid), None)
    for gpu in gpus:
        if gpu.mig:
            handle = nv.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
            if entry in mig_device_uuids(nv, handle):
                return gpu
    return None


def _node_listing(gpus: list[GpuIdentity]) -> str:
    if not gpus:
        return "NVML lists no GPU this process can open"
    return "this node has " + ", ".join(f"{g.label} {g.uuid} ({g.name})" for g in gpus)


def resolve_visible(
    environ: Mapping[str, str] | None = None, nvml: ModuleType | Any = None
) -> VisibleGpus:
    """The GPUs `CUDA_VISIBLE_DEVICES` in `environ` (default os.environ) names, through NVML.

    NvmlUnavailable when NVML cannot be used; GreenkdError for an entry that names no GPU here.
    """
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    order = env.get("CUDA_DEVICE_ORDER")
    entries = _entries(value)
    if entries == []:
        return VisibleGpus((), value, order, by_index=False)
    nv = load_nvml(nvml)
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise NvmlUnavailable(f"NVML cannot be initialised: {describe_error(nv, exc)}") from exc
    try:
        return _resolve(nv, value, order, entries)
    except nv.NVMLError as exc:
        what = "unset" if value is None else value
        raise GreenkdError(
            f"NVML failed while resolving CUDA_VISIBLE_DEVICES={what}: "
            f"{describe_error(nv, exc)}; check that `nvidia-smi -L` works"
        ) from exc
    finally:
        nv.nvmlShutdown()


def _resolve(
    nv: Any, value: str | None, order: str | None, entries: list[str] | None
) -> VisibleGpus:
    gpus, unreadable = node_gpus(nv)
    mixed = len({g.name for g in gpus}) > 1
    if entries is None:
        return VisibleGpus(tuple(gpus), value, order, False, tuple(unreadable), mixed)
    chosen: list[GpuIdentity] = []
    by_index = False
    for entry in entries:
        gpu = _resolve_entry(nv, entry, gpus, value or "")
        if gpu is None:
            break  # a negative index: CUDA ignores it and everything after it
        by_index = by_index or entry.isdigit()
        if any(g.nvml_index == gpu.nvml_index for g in chosen):
            raise GreenkdError(
                f"CUDA_VISIBLE_DEVICES={value} names {gpu.label} twice: name each GPU once"
            )
        chosen.append(gpu)
    return VisibleGpus(tuple(chosen), value, order, by_index, tuple(unreadable), mixed)


def _entries(value: str | None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES; None when unset, [] when it hides every GPU."""
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if entries and _is_negative(entries[0]):
        return []
    return entries


def _is_negative(entry: str) -> bool:
    return entry.startswith("-") and entry[1:].isdigit()


def _resolve_entry(nv: Any, entry: str, gpus: list[GpuIdentity], value: str) -> GpuIdentity | None:
    if _is_negative(entry):
        return None
    if entry.isdigit():
        position = int(entry)
        if position >= len(gpus):
            raise GreenkdError(
                f"CUDA_VISIBLE_DEVICES={value} names GPU {position}, but {_node_listing(gpus)}: "
                "use an index below the number of GPUs, or a UUID from `nvidia-smi -L`"
            )
        return pci_order(gpus)[position]
    if entry.startswith("GPU-"):
        gpu = _by_gpu_uuid(entry, gpus)
    elif entry.startswith("MIG-"):
        parent = _mig_parent(nv, entry, gpus)
        gpu = None if parent is None else _with_mig(parent, entry)
    else:
        raise GreenkdError(
            f"CUDA_VISIBLE_DEVICES={value}: {entry!r} is not a GPU index, a GPU UUID (GPU-...) "
            "or a MIG UUID (MIG-...); `nvidia-smi -L` lists them"
        )
    if gpu is None:
        raise GreenkdError(
            f"CUDA_VISIBLE_DEVICES={value}: no GPU here has the UUID {entry!r}; "
            f"{_node_listing(gpus)} (MIG devices: `nvidia-smi -L`)"
        )
    return gpu


def _with_mig(parent: GpuIdentity, mig_uuid: str) -> GpuIdentity:
    return GpuIdentity(
        parent.nvml_index, parent.uuid, parent.pci_bus_id, parent.name, True, mig_uuid
    )


def visible_env(identity: GpuIdentity) -> dict[str, str]:
    """The environment a child needs to see exactly this GPU (or MIG device), and nothing else."""
    if identity.mig and identity.mig_uuid is None:
        raise GreenkdError(
            f"{identity.label} ({identity.uuid}) is in MIG mode: CUDA cannot use it whole; name "
            "one of its MIG devices (MIG-..., `nvidia-smi -L`) in CUDA_VISIBLE_DEVICES"
        )
    return {
        "CUDA_DEVICE_ORDER": PCI_BUS_ID,
        "CUDA_VISIBLE_DEVICES": identity.mig_uuid or identity.uuid,
    }


@dataclass(frozen=True)
class UsedGpus:
    """The GPUs a profiled command uses by default, and what the profile should warn about."""

    indices: list[int] | None  # None: every GPU of the node
    warnings: list[str]


def default_used_gpus(
    environ: Mapping[str, str] | None = None, nvml: ModuleType | Any = None
) -> UsedGpus:
    """`greenkd profile` without `--gpus`: the GPUs CUDA_VISIBLE_DEVICES names, every GPU if unset.

    Without NVML there is no GPU to measure, and every GPU (none) is used.
    """
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES") is None:
        return UsedGpus(None, [])
    try:
        visible = resolve_visible(env, nvml)
    except NvmlUnavailable:
        return UsedGpus(None, [])
    warning = visible.order_warning()
    return UsedGpus(visible.nvml_indices, [warning] if warning else [])

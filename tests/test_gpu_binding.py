"""GPU-correct by construction, on a machine without GPUs: an NVML stand-in presents four GPUs
whose PCI bus order differs from NVML's enumeration order, and the real code decides which GPU
each process of a run sees.

- in this process: for CUDA_VISIBLE_DEVICES given as indices, GPU UUIDs, MIG UUIDs and unset,
  each device names its physical GPU by UUID under CUDA_DEVICE_ORDER=PCI_BUS_ID, is labelled
  with that GPU's NVML index (the profiler's label), and takes memory as it needs it;
- in real runs (local, Dask, MPI): every process writes its environment as the framework loads
  (greenkd.framework's GREENKD_FRAMEWORK_ENV_LOG hook), and each worker saw exactly its GPU, the
  run's own process one GPU, with the same memory settings everywhere.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from profiler_fakes import FakeGpu, FakeNvml

from greenkd.devices import GPU_MEMORY_ENV, plan_devices
from greenkd.errors import GreenkdError
from profilers.gpus import default_used_gpus

UUIDS = [f"GPU-{k}{k}{k}{k}0000-aaaa-4000-8000-00000000000{k}" for k in range(4)]
BUSES = ["00000000:B7:00.0", "00000000:17:00.0", "00000000:97:00.0", "00000000:57:00.0"]
MIGS = ["MIG-0c0c0c0c-1111-5000-8000-000000000000", "MIG-0d0d0d0d-2222-5000-8000-000000000000"]
# CUDA's order under PCI_BUS_ID: bus 17 (gpu1), 57 (gpu3), 97 (gpu2), B7 (gpu0)
PCI_ORDER = [1, 3, 2, 0]


def _spec() -> list[dict]:
    gpus = [{"uuid": u, "pci_bus_id": b} for u, b in zip(UUIDS, BUSES, strict=True)]
    gpus[2].update(mig=True, mig_devices=MIGS)  # gpu2 in MIG mode: usable only through MIG UUIDs
    return gpus


@pytest.fixture
def four_gpus(monkeypatch):
    fake = FakeNvml([FakeGpu(**gpu) for gpu in _spec()])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(key, raising=False)
    return fake


@pytest.mark.parametrize(
    "visible, order, nvml_indices, shown",
    [
        ("0,1", "PCI_BUS_ID", [PCI_ORDER[0], PCI_ORDER[1]], [UUIDS[1], UUIDS[3]]),
        (f"{UUIDS[3]},{UUIDS[0]}", None, [3, 0], [UUIDS[3], UUIDS[0]]),
        (f"{MIGS[1]},{UUIDS[1]}", None, [2, 1], [MIGS[1], UUIDS[1]]),
        (None, None, [0, 1], [UUIDS[0], UUIDS[1]]),
    ],
    ids=["indices", "uuids", "mig-uuid", "unset"],
)
def test_each_device_names_its_physical_gpu_by_uuid(
    four_gpus, monkeypatch, visible, order, nvml_indices, shown
):
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if order is not None:
        monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
    devices = plan_devices(2)
    assert [d.gpu for d in devices] == nvml_indices
    assert [d.label for d in devices] == [f"gpu{k}" for k in nvml_indices]
    for device, uuid in zip(devices, shown, strict=True):
        env = device.env()
        assert env["CUDA_VISIBLE_DEVICES"] == uuid
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env.items() >= GPU_MEMORY_ENV.items()
    # the profiler's default GPUs for a command run with the same variable: the same labels
    used = default_used_gpus(nvml=four_gpus)
    if visible is not None:
        assert [f"gpu{k}" for k in used.indices] == [f"gpu{k}" for k in nvml_indices]


def test_gpu_workers_split_the_cores_and_oversubscribed_devices_share_a_gpu(four_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join([UUIDS[0], UUIDS[1]]))
    cores = sorted(os.sched_getaffinity(0))
    devices = plan_devices(2)
    assert [len(d.cores) for d in devices] == [max(1, len(cores) // 2)] * 2
    if len(cores) >= 2:
        assert set(devices[0].cores).isdisjoint(devices[1].cores)
    assert all(d.env()["TF_NUM_INTRAOP_THREADS"] == str(len(d.cores)) for d in devices)
    shared = plan_devices(4, allow_oversubscribe=True)
    assert [d.label for d in shared] == ["gpu0.0", "gpu1.0", "gpu0.1", "gpu1.1"]
    assert all(d.shared for d in shared) and shared[2].physical == "gpu0"
    assert shared[2].env()["CUDA_VISIBLE_DEVICES"] == UUIDS[0]


def test_a_gpu_in_mig_mode_named_whole_is_a_clear_error(four_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUIDS[2])
    with pytest.raises(GreenkdError, match="in MIG mode"):
        plan_devices(1)


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def two_conv_teacher(tmp_path_factory) -> Path:
    """A teacher with two 3x3 convs: a layer task for each of two devices, and little else."""
    from greenkd.framework import keras

    path = tmp_path_factory.mktemp("binding") / "two_conv.keras"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for name in ("conv1", "conv2"):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=name)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    path.with_suffix(".json").write_text(json.dumps({"accuracy": 0.1}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "dask", "mpi", "local-jax"])
def test_every_process_of_a_run_sees_only_its_gpu_when_its_framework_loads(
    two_conv_teacher, tmp_path, backend
):
    import subprocess

    backend, _, framework = backend.partition("-")  # local-jax: the local backend on JAX
    framework = framework or "tensorflow"

    spec = tmp_path / "gpus.json"
    spec.write_text(json.dumps(_spec()))
    log = tmp_path / "env.jsonl"
    standin = Path(__file__).parent / "nvml_standin"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(standin), os.environ.get("PYTHONPATH", "")]),
        "GREENKD_FAKE_NVML": str(spec),
        "GREENKD_FRAMEWORK_ENV_LOG": str(log),
        "CUDA_VISIBLE_DEVICES": f"{UUIDS[3]},{MIGS[0]}",  # gpu3, and gpu2 through a MIG device
    }
    env.pop("CUDA_DEVICE_ORDER", None)
    done = subprocess.run(
        [sys.executable, "-m", "greenkd", "distill", "--model", str(two_conv_teacher),
         "--n-train", "32", "--n-val", "16", "--batch-size", "16", "--epochs", "1",
         "--finetune-epochs", "0", "--acceptance", "threshold", "--gpus", "2", "--replace-growing",
         "--sched", "rr", "--backend", backend, "--framework", framework, "--quiet",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    seen = [r["env"]["CUDA_VISIBLE_DEVICES"] for r in records]
    # each device's process saw its GPU (or MIG device) alone; nobody saw both or the node's
    assert UUIDS[3] in seen and MIGS[0] in seen
    assert all(v in (UUIDS[3], MIGS[0]) for v in seen), seen
    for record in records:  # the same memory policy in every process, on every backend
        assert record["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert record["env"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
        assert record["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        # and the run's framework, set as each process's Keras backend before it loaded
        assert record["framework"] == record["env"]["KERAS_BACKEND"] == framework
    meta = json.loads((tmp_path / "run" / "config.json").read_text())["meta"]
    assert meta["devices"] == ["gpu3", "gpu2"] and meta["device_kind"] == "gpu"


@pytest.mark.slow
def test_the_sweeps_teacher_child_sees_one_gpu_when_its_framework_loads(
    four_gpus, two_conv_teacher, tmp_path, monkeypatch
):
    from rich.console import Console

    from greenkd.config import RunConfig
    from greenkd.sweep.teacher import prepare_teacher

    spec = tmp_path / "gpus.json"
    spec.write_text(json.dumps(_spec()))
    log = tmp_path / "env.jsonl"
    standin = Path(__file__).parent / "nvml_standin"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(standin), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("GREENKD_FAKE_NVML", str(spec))
    monkeypatch.setenv("GREENKD_FRAMEWORK_ENV_LOG", str(log))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},{UUIDS[0]}")
    # both 4-channel convs are smaller than their blocks: tasks only with replace_growing
    cfg = RunConfig(model=str(two_conv_teacher), n_train=32, n_val=16, replace_growing=True)
    result = prepare_teacher(cfg, tmp_path, Console(quiet=True), sys.executable)
    assert result["n_targets"] == 2
    [child] = [json.loads(line) for line in log.read_text().splitlines()]
    assert child["env"]["CUDA_VISIBLE_DEVICES"] == UUIDS[1]  # the first GPU the sweep may use
    assert child["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert child["env"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"

"""Devices and binding: equal CPU devices whatever their number, and a worker tied to its cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from greenkd.devices import Device, allowed_cores, confined_to, hardware_label, plan_devices
from greenkd.errors import GreenkdError

CORES = allowed_cores()
needs_two = pytest.mark.skipif(len(CORES) < 2, reason="needs 2 CPU cores")


@needs_two
def test_cores_per_device_keeps_a_cpu_device_the_same_size_whatever_n():
    assert [d.cores for d in plan_devices(1, cores_per_device=1)] == [(CORES[0],)]
    assert [d.cores for d in plan_devices(2, cores_per_device=1)] == [(CORES[0],), (CORES[1],)]
    assert [d.label for d in plan_devices(2, cores_per_device=1)] == ["cpuset0", "cpuset1"]
    # without it a run takes the whole machine, split n ways
    assert plan_devices(1)[0].cores == tuple(CORES)
    assert sum(len(d.cores) for d in plan_devices(2)) == len(CORES)


@needs_two
def test_a_runs_parent_uses_only_its_cpu_devices_cores_and_gets_the_machine_back():
    """A 1-device run of 1 core must not fine-tune on the whole machine."""
    import threading

    one = plan_devices(1, cores_per_device=1)
    seen: list[set[int]] = []
    with confined_to(one) as cores:
        assert cores == [CORES[0]] and allowed_cores() == [CORES[0]]
        # threads started inside (TensorFlow's pools) inherit the mask
        thread = threading.Thread(target=lambda: seen.append(set(allowed_cores())))
        thread.start()
        thread.join()
    assert seen == [{CORES[0]}] and allowed_cores() == CORES
    # devices covering every core, GPUs, or an external cluster's workers change nothing
    for devices in (
        plan_devices(2, cores_per_device=1)[: len(CORES)] if len(CORES) == 2 else [],
        [Device("gpu", 0, "gpu0", ())],
        [Device("remote", 0, "dask0", ())],
    ):
        with confined_to(devices) as cores:
            assert allowed_cores() == CORES and cores == CORES


def test_more_devices_than_cores_needs_allow_oversubscribe():
    n = len(CORES) + 1
    with pytest.raises(GreenkdError, match="--allow-oversubscribe"):
        plan_devices(n)
    with pytest.raises(GreenkdError, match=f"{len(CORES)} devices x 2 cores"):
        plan_devices(len(CORES), cores_per_device=2)
    shared = plan_devices(n, allow_oversubscribe=True)
    assert len(shared) == n and all(d.shared for d in shared)
    assert shared[-1].cores == (CORES[0],)  # the sets wrap around the cores


def test_a_cpu_device_hides_gpus_and_sets_tensorflow_threads_before_import():
    env = Device("cpu", 0, "cpuset0", (0, 1, 2)).env()
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["TF_NUM_INTRAOP_THREADS"] == "3" and env["TF_NUM_INTEROP_THREADS"] == "1"


def test_hardware_label_tells_device_sizes_apart():
    one, two = Device("cpu", 0, "cpuset0", (0,)), Device("cpu", 0, "cpuset0", (0, 1))
    assert hardware_label([one]) != hardware_label([two])
    assert hardware_label([one]).startswith("cpu:") and hardware_label([one]).endswith("x1")


PROBE = """
import json, os, sys, threading, time
from greenkd.devices import Device, bind
stop = threading.Event()
early = threading.Thread(target=stop.wait, daemon=True)  # a thread that exists before binding
early.start()
device = Device("cpu", 1, "cpuset1", (int(sys.argv[1]),))
bind(device)
from greenkd.framework import configure_tensorflow, tf  # TensorFlow loads after binding
configure_tensorflow(device)
total = float(tf.reduce_sum(tf.ones((64, 64))))  # the first op starts TensorFlow's thread pools
threads = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
print(json.dumps({
    "process": sorted(os.sched_getaffinity(0)),
    "early": sorted(os.sched_getaffinity(early.native_id)),
    "threads": sorted({tuple(c) for c in threads.values()}),
    "n_threads": len(threads),
    "intra": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    "total": total,
}))
"""


@needs_two
def test_a_bound_worker_runs_every_thread_on_its_core_with_one_tensorflow_thread():
    core = CORES[1]
    # without the suite's own one-thread default (conftest.py): the pools are greenkd's to size
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(core)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["process"] == [core] and probe["early"] == [core]
    # TensorFlow's pools, started after binding, inherited the mask: no thread may use another core
    assert probe["threads"] == [[core]] and probe["n_threads"] > 2
    assert probe["intra"] == 1 and probe["inter"] == 1
    assert probe["total"] == 4096.0


def test_every_worker_environment_names_its_framework_and_its_settings():
    from greenkd.config import RunConfig
    from greenkd.errors import GreenkdError

    one_core = plan_devices(1, cores_per_device=1, framework="jax")[0]
    env = one_core.env()
    assert env["KERAS_BACKEND"] == "jax" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]  # XLA's CPU client: one thread
    assert Device.from_dict(one_core.to_dict()) == one_core  # what a worker is sent
    tf_env = Device("cpu", 0, "cpuset0", (0, 1)).env()
    assert tf_env["KERAS_BACKEND"] == "tensorflow" and "XLA_FLAGS" not in tf_env
    with pytest.raises(GreenkdError, match="--framework must be one of tensorflow, jax"):
        RunConfig(framework="torch")


def test_teachers_are_cached_apart_per_framework():
    from greenkd import models
    from greenkd.config import RunConfig

    tf_cfg = RunConfig()
    assert models.teacher_path(tf_cfg) != models.teacher_path(tf_cfg.replace(framework="jax"))

"""NVML sensor and GPU accounting with a stand-in for the pynvml functions (no GPU on this machine)."""

from __future__ import annotations

import inspect
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from profiler_fakes import FakeGpu, FakeNvml

import profilers
from profilers.energy import EnergyAccountant
from profilers.processes import OwnProcesses, descendants
from profilers.sensors.base import Counter, Power
from profilers.sensors.nvml import NvmlSensor


def _profile(tmp_path, nvml, **kwargs):
    return profilers.Profiler(
        out=tmp_path / "run",
        hz=20,
        msr_root=tmp_path / "no-msr",
        sysfs_root=tmp_path / "no-sys",
        proc_stat=tmp_path / "no-stat",
        nvml=nvml,
        **kwargs,
    )


def test_no_driver_is_reported_with_a_plain_reason():
    status = NvmlSensor(nvml=FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)).probe()
    assert not status.available
    assert status.reason == "NVML: no NVIDIA driver (libnvidia-ml.so.1 not found)"
    status = NvmlSensor(nvml=FakeNvml(init_error=FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED)).probe()
    assert "not loaded" in status.reason and "nvidia-smi" in status.fix


def test_every_reading_is_in_the_vocabulary():
    nvml = FakeNvml(
        [
            FakeGpu(
                power_w=123.4,
                utilization_pct=87,
                memory_used_mib=2048.0,
                clock_sm_mhz=1980,
                temperature_c=61,
            )
        ]
    )
    sensor = NvmlSensor(nvml=nvml)
    assert sensor.probe().available
    rows = EnergyAccountant("nvml").rows(1.0, sensor.read())
    got = {(r.metric, r.unit): r.value for r in rows}
    assert got == {
        ("power", "W"): 123.4,
        ("energy", "J"): 0.0,
        ("utilization", "%"): 87.0,
        ("memory_used", "MiB"): 2048.0,
        ("clock_sm", "MHz"): 1980.0,
        ("temperature", "C"): 61.0,
    }
    assert {r.device for r in rows} == {"gpu0"}
    sensor.close()
    assert nvml.shutdowns == 1


def test_energy_counter_gpu_uses_the_counter(tmp_path):
    gpu = FakeGpu(power_w=200.0, has_energy=True)
    with _profile(tmp_path, FakeNvml([gpu])) as p:
        time.sleep(0.3)
    (domain,) = p.summary()["domains"]
    assert domain["source"] == "counter"
    seconds = domain["end_ts"] - domain["start_ts"]
    assert domain["energy_j"] == pytest.approx(200.0 * seconds, rel=0.02)
    assert domain["peak_power_w"] == 200.0


def test_gpu_without_energy_counter_integrates_power_and_says_so(tmp_path):
    gpu = FakeGpu(power_w=100.0, has_energy=False)
    with _profile(tmp_path, FakeNvml([gpu])) as p:
        time.sleep(0.2)
        gpu.set_power(300.0)
        time.sleep(0.2)
    (domain,) = p.summary()["domains"]
    assert domain["source"] == "integrated_power"
    # The integral over the same rows a consumer would read: trapezoids between samples.
    rows = [
        line.split(",") for line in (tmp_path / "run" / "samples.csv").read_text().splitlines()[1:]
    ]
    power = [(float(r[0]), float(r[4])) for r in rows if r[3] == "power"]
    expected = sum(0.5 * (p0 + p1) * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(power))
    assert domain["energy_j"] == pytest.approx(expected)
    assert 100.0 * 0.4 < domain["energy_j"] < 300.0 * 0.45


def test_idle_baseline_splits_gpu_energy_into_idle_and_dynamic(tmp_path):
    gpu = FakeGpu(power_w=50.0)
    with _profile(tmp_path, FakeNvml([gpu]), idle_seconds=0.5) as p:
        gpu.set_power(150.0)
        time.sleep(0.5)
    summary = p.summary()
    (domain,) = summary["domains"]
    seconds = summary["duration_s"]
    # The switch to 150 W comes a few ms after the baseline's last sample: hence the tolerances.
    assert summary["idle"]["seconds"] == pytest.approx(0.5, abs=0.1)
    assert domain["idle_power_w"] == pytest.approx(50.0, rel=0.01)
    assert domain["avg_power_w"] == pytest.approx(150.0, rel=0.05)
    assert domain["idle_energy_j"] == pytest.approx(50.0 * seconds, rel=0.01)
    assert domain["dynamic_energy_j"] == pytest.approx(100.0 * seconds, rel=0.08)


def test_gpu_list_limits_the_used_view_but_the_whole_node_is_reported(tmp_path):
    gpus = [FakeGpu(power_w=300.0), FakeGpu(power_w=60.0), FakeGpu(power_w=60.0, has_energy=False)]
    with _profile(tmp_path, FakeNvml(gpus), gpus=[0]) as p:
        time.sleep(0.3)
    summary = p.summary()
    domains = {d["device"]: d for d in summary["domains"]}
    assert set(domains) == {"gpu0", "gpu1", "gpu2"}
    assert [d for d in domains if domains[d]["used"]] == ["gpu0"]
    assert summary["gpus"]["selected"] == [0]
    assert summary["gpus"]["used_energy_j"] == pytest.approx(domains["gpu0"]["energy_j"])
    assert summary["gpus"]["node_energy_j"] == pytest.approx(
        sum(d["energy_j"] for d in domains.values())
    )
    assert summary["total"]["domains"] == ["nvml:gpu0", "nvml:gpu1", "nvml:gpu2"]
    assert summary["metadata"]["gpu_models"] == ["NVIDIA Fake A100"] * 3
    assert summary["metadata"]["gpu_driver"] == "550.54.15"


def test_lost_gpu_keeps_earlier_rows_and_marks_the_run_partial(tmp_path):
    gpus = [FakeGpu(power_w=100.0), FakeGpu(power_w=100.0)]
    with _profile(tmp_path, FakeNvml(gpus)) as p:
        time.sleep(0.2)
        gpus[1].lost = True
        time.sleep(0.2)
    summary = p.summary()
    assert summary["status"] == "partial"
    assert "gpu1" in summary["reason"]
    domains = {d["device"]: d for d in summary["domains"]}
    assert domains["gpu0"]["complete"] and not domains["gpu1"]["complete"]
    assert domains["gpu1"]["energy_j"] > 0


# -- the fake holds to pynvml ---------------------------------------------------


def test_fake_nvml_mirrors_pynvml():
    pynvml = pytest.importorskip("pynvml")
    functions = [n for n in vars(FakeNvml) if n.startswith("nvml")]
    assert "nvmlDeviceGetComputeRunningProcesses" in functions
    for name in functions:
        real = inspect.signature(getattr(pynvml, name))
        fake = inspect.signature(getattr(FakeNvml(), name))
        assert list(fake.parameters) == list(real.parameters), name
    for name in [n for n in vars(FakeNvml) if n.startswith("NVML_")]:
        assert getattr(FakeNvml, name) == getattr(pynvml, name), name
    assert str(FakeNvml.NVMLError(4)) == str(pynvml.NVMLError(4)) == "Insufficient Permissions"


# -- errors are per GPU ---------------------------------------------------------


def _domains(summary):
    return {d["device"]: d for d in summary["domains"] if d["sensor"] == "nvml"}


def _nvml_missing(summary):
    return [m for m in summary["missing"] if m["sensor"] == "nvml"]


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (FakeNvml.NVML_ERROR_NO_PERMISSION, "Insufficient Permissions", "cgroups"),
        (FakeNvml.NVML_ERROR_GPU_IS_LOST, "GPU is lost", "nvidia-smi -r -i 3"),
    ],
)
def test_one_unreadable_gpu_of_four_leaves_the_other_three_measured(tmp_path, code, reason, fix):
    gpus = [FakeGpu(power_w=100.0 + 50.0 * i) for i in range(4)]
    gpus[3].errors["nvmlDeviceGetHandleByIndex"] = code
    with _profile(tmp_path, FakeNvml(gpus)) as p:
        time.sleep(0.3)
    summary = p.summary()
    assert summary["status"] == "complete"
    domains = _domains(summary)
    assert set(domains) == {"gpu0", "gpu1", "gpu2"}
    for i in range(3):
        d = domains[f"gpu{i}"]
        assert d["energy_j"] == pytest.approx(
            gpus[i].power_w * (d["end_ts"] - d["start_ts"]), rel=0.02
        )
    assert summary["total"]["domains"] == ["nvml:gpu0", "nvml:gpu1", "nvml:gpu2"]
    (problem,) = _nvml_missing(summary)
    assert problem["reason"].startswith("gpu3: NVML cannot read this GPU: " + reason)
    assert fix in problem["fix"]
    meta = summary["metadata"]["gpus"]
    assert [g["read"] for g in meta] == [True, True, True, False]
    assert summary["gpus"]["unmeasured"] == ["gpu3"]


def test_power_permission_error_on_one_gpu_keeps_it_listed_with_its_gauges(tmp_path):
    gpus = [FakeGpu(power_w=200.0), FakeGpu(power_w=90.0, utilization_pct=55)]
    gpus[1].errors["nvmlDeviceGetPowerUsage"] = FakeNvml.NVML_ERROR_NO_PERMISSION
    with _profile(tmp_path, FakeNvml(gpus), gpus=[1]) as p:
        time.sleep(0.3)
    summary = p.summary()
    assert set(_domains(summary)) == {"gpu0"}
    (problem,) = _nvml_missing(summary)
    assert problem["reason"].startswith(
        "gpu1: NVML reports no power reading: Insufficient Permissions (NVML_ERROR_NO_PERMISSION)"
    )
    assert "the run uses this GPU" in problem["reason"]
    # Its utilisation is still read, so a reader sees it was busy.
    util = {u["device"]: u["avg_pct"] for u in summary["utilization"] if u["sensor"] == "nvml"}
    assert util["gpu1"] == pytest.approx(55.0)
    # The only used GPU has no energy: no invented 0 J.
    assert summary["gpus"]["used_energy_j"] is None
    assert summary["gpus"]["unmeasured"] == ["gpu1"]


def test_gpu_without_power_reading_is_listed_with_why_and_never_as_no_such_gpu(tmp_path):
    gpus = [FakeGpu(power_w=100.0), FakeGpu(power_w=100.0, errors={"nvmlDeviceGetPowerUsage": 3})]
    sensor = NvmlSensor(gpus=[1, 7], nvml=FakeNvml(gpus))
    status = sensor.probe()
    assert status.available
    reasons = [p.reason for p in status.problems]
    assert reasons[0].startswith(
        "gpu1: NVML reports no power reading: Not Supported (NVML_ERROR_NOT_SUPPORTED)"
    )
    assert status.problems[0].fix == "none: the GPU does not measure power"
    assert reasons[1] == "gpu7 was requested but NVML has no such GPU"
    assert not any("gpu1 was requested" in r for r in reasons)
    meta = {g["index"]: g for g in sensor.metadata()["gpus"]}
    assert meta[1]["power"] is False and meta[1]["uuid"] == gpus[1].uuid
    assert meta[1]["reason"] == "no power reading: Not Supported (NVML_ERROR_NOT_SUPPORTED)"
    rows = EnergyAccountant("nvml").rows(1.0, sensor.read())
    assert {r.metric for r in rows if r.device == "gpu1"} == {
        "utilization",
        "memory_used",
        "clock_sm",
        "temperature",
    }
    sensor.close()


# -- energy counter resets ------------------------------------------------------


def test_decreasing_64_bit_counter_is_a_reset_bridged_by_power_but_32_bit_counters_wrap():
    acc = EnergyAccountant("nvml")
    rows = []
    # 100 W throughout; the counter (mJ) restarts from 50 J between t=2 and t=3.
    for ts, mj in [
        (0.0, 5_000_000),
        (1.0, 5_100_000),
        (2.0, 5_200_000),
        (3.0, 50_000),
        (4.0, 150_000),
    ]:
        observations = [
            Power("gpu0", 100.0, integrate=False),
            Counter("gpu0", mj, 1e-3, 2**64, emit_power=False, can_wrap=False),
        ]
        rows += acc.rows(ts, observations)
    energy = [r.value for r in rows if r.metric == "energy"]
    assert energy == pytest.approx([0.0, 100.0, 200.0, 300.0, 400.0])
    assert acc.resets == {"gpu0": [3.0]}
    # Without power readings the reset interval is not counted, never 2**64 mJ.
    bare = EnergyAccountant("nvml")
    bare.rows(0.0, [Counter("gpu0", 5_000_000, 1e-3, 2**64, can_wrap=False)])
    (row, *_) = bare.rows(1.0, [Counter("gpu0", 10, 1e-3, 2**64, can_wrap=False)])
    assert row.value == 0.0
    # A 32-bit MSR counter that goes down wrapped: 1 J before the wrap, 3 J after.
    msr = EnergyAccountant("msr")
    msr.rows(0.0, [Counter("package0", 2**32 - 65536, 2.0**-16, 2**32)])
    (row, *_) = msr.rows(1.0, [Counter("package0", 3 * 65536, 2.0**-16, 2**32)])
    assert row.value == pytest.approx(4.0)
    assert msr.resets == {}


def test_counter_reset_mid_run_gives_the_right_joules_and_is_reported(tmp_path):
    gpu = FakeGpu(power_w=100.0)
    with _profile(tmp_path, FakeNvml([gpu])) as p:
        time.sleep(0.3)
        gpu.set_power(300.0)
        switch_ts = time.time()
        time.sleep(0.3)
        reset_ts = gpu.reset_energy()
        time.sleep(0.3)
    summary = p.summary()
    (domain,) = summary["domains"]
    start, end = domain["start_ts"], domain["end_ts"]
    expected = 100.0 * (switch_ts - start) + 300.0 * (end - switch_ts)
    # A 64-bit wrap adds ~1.8e16 J; dropping the reset's 50 ms interval loses ~15 J of ~210 J (7%).
    assert domain["energy_j"] == pytest.approx(expected, rel=0.02)
    (found,) = domain["counter_resets"]
    assert reset_ts < found < reset_ts + 0.2
    assert summary["status"] == "complete"
    assert any(w.startswith("nvml:gpu0: energy counter found reset") for w in summary["warnings"])


# -- MIG --------------------------------------------------------------------------


def test_mig_gpu_is_measured_whole_and_said_so(tmp_path):
    mig = ["MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-7777-8888-9999-000000000000"]
    gpus = [FakeGpu(power_w=250.0, mig=True, mig_devices=mig), FakeGpu(power_w=80.0, mig=False)]
    with _profile(tmp_path, FakeNvml(gpus)) as p:
        time.sleep(0.3)
    summary = p.summary()
    meta = summary["metadata"]["gpus"]
    assert [g["mig"] for g in meta] == [True, False]
    assert meta[0]["mig_devices"] == mig
    d = _domains(summary)["gpu0"]
    assert d["energy_j"] == pytest.approx(250.0 * (d["end_ts"] - d["start_ts"]), rel=0.02)
    (warning,) = summary["warnings"]
    assert warning.startswith("nvml:gpu0 is in MIG mode") and "2 MIG instance(s)" in warning
    # NVML has no utilisation for a GPU in MIG mode: not read, not zero.
    util = {u["device"] for u in summary["utilization"] if u["sensor"] == "nvml"}
    assert util == {"gpu1"}
    assert summary["status"] == "complete"


# -- processes that are not the work's ---------------------------------------------


def test_foreign_process_on_a_used_gpu_is_flagged_and_the_works_own_are_not(tmp_path):
    gpus = [FakeGpu(power_w=100.0), FakeGpu(power_w=100.0)]
    foreign = os.getppid()  # exists, and is no descendant of this process
    with _profile(tmp_path, FakeNvml(gpus), gpus=[0]) as p:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        try:
            gpus[0].processes.update({os.getpid(): 900.0, child.pid: 1200.0, foreign: 2048.0})
            time.sleep(0.3)
            gpus[0].processes.pop(foreign)
            time.sleep(0.2)
        finally:
            child.kill()
            child.wait()
    summary = p.summary()
    assert summary["status"] == "complete" and summary["reason"] is None
    (entry,) = summary["gpu_foreign_processes"]
    assert entry["gpu"] == "gpu0" and entry["pid"] == foreign and entry["used"] is True
    assert entry["used_memory_mib"] == 2048.0
    assert entry["first_ts"] < entry["last_ts"] < summary["end_ts"] - 0.1
    (warning,) = summary["warnings"]
    assert f"pid {foreign}" in warning and "gpu0, which the run uses" in warning


def test_the_profiled_commands_own_gpu_process_is_not_flagged(tmp_path):
    psutil = pytest.importorskip("psutil")
    gpu = FakeGpu(power_w=100.0)
    stop = threading.Event()

    def put_children_on_the_gpu():
        while not stop.is_set():
            for child in psutil.Process().children(recursive=True):
                gpu.processes.setdefault(child.pid, 512.0)
            time.sleep(0.01)

    watcher = threading.Thread(target=put_children_on_the_gpu)
    watcher.start()
    try:
        code = profilers.run_command(
            [sys.executable, "-c", "import time; time.sleep(0.6)"],
            out=tmp_path / "run",
            hz=20,
            msr_root=tmp_path / "no-msr",
            sysfs_root=tmp_path / "no-sys",
            nvml=FakeNvml([gpu]),
        )
    finally:
        stop.set()
        watcher.join()
    assert code == 0
    assert gpu.processes  # the command was on the GPU
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gpu_foreign_processes"] == []
    assert summary["warnings"] == []


def test_gpu_that_cannot_list_processes_is_still_measured(tmp_path):
    gpu = FakeGpu(
        power_w=100.0,
        processes={os.getppid(): 10.0},
        errors={"nvmlDeviceGetComputeRunningProcesses": FakeNvml.NVML_ERROR_NOT_SUPPORTED},
    )
    with _profile(tmp_path, FakeNvml([gpu])) as p:
        time.sleep(0.2)
    summary = p.summary()
    assert summary["status"] == "complete"
    assert summary["gpu_foreign_processes"] == []
    (meta,) = summary["metadata"]["gpus"]
    assert meta["processes_listed"] is False and "Not Supported" in meta["processes_reason"]
    assert _domains(summary)["gpu0"]["energy_j"] > 0


def _fake_proc(root, processes, children_files):
    """A /proc with `pid -> (comm, ppid)`; task/<pid>/children only where the kernel has them."""
    for pid, (comm, ppid) in processes.items():
        task = root / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
        if children_files:
            kids = [str(c) for c, (_, parent) in processes.items() if parent == pid]
            (task / "children").write_text(" ".join(kids) + (" " if kids else ""))


@pytest.mark.parametrize("children_files", [True, False], ids=["children", "stat-scan"])
def test_the_works_processes_are_the_root_and_its_descendants(tmp_path, children_files):
    processes = {
        100: ("python", 1),
        101: ("worker ) 1", 100),  # a comm with spaces and a parenthesis
        102: ("grandchild", 101),
        200: ("someone else", 1),
        201: ("their child", 200),
    }
    _fake_proc(tmp_path, processes, children_files)
    own = OwnProcesses([100], proc=tmp_path)
    assert own() == {100, 101, 102}
    assert descendants([200], proc=tmp_path) == {201}

"""NVML sensor and GPU accounting with a stand-in for the pynvml functions (no GPU on this machine)."""

from __future__ import annotations

import itertools
import time

import pytest
from profiler_fakes import FakeGpu, FakeNvml

import profilers
from profilers.energy import EnergyAccountant
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

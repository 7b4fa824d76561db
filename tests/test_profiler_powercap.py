"""powercap RAPL fallback from real-format sysfs files under GREENKD_SYSFS_ROOT."""

from __future__ import annotations

from pathlib import Path

import pytest

from profilers.energy import EnergyAccountant, node_domains
from profilers.sensors import SensorRoots, open_sensors
from profilers.sensors.powercap import PowercapSensor, zone_device

MAX_UJ = 262143328850  # a real max_energy_range_uj


def _zone(sysfs: Path, zone: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = sysfs / "class" / "powercap" / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def _set(path: Path, energy_uj: int) -> None:
    # In place, like sysfs: the sensor keeps its file open.
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def _energy(acc: EnergyAccountant, ts: float, sensor: PowercapSensor) -> dict[str, float]:
    return {r.device: r.value for r in acc.rows(ts, sensor.read()) if r.metric == "energy"}


def _node_devices(sensor: PowercapSensor) -> tuple[str, ...]:
    """The devices of this sensor's readings that add up to the node (`node_domains`)."""
    return tuple(d for _, d in node_domains(("powercap", obs.device) for obs in sensor.read()))


def test_zone_names_map_to_devices():
    assert zone_device("package-1", 1) == "package1"
    assert zone_device("package-0-die-1", 0) == "package0_die1"
    assert zone_device("core", 0) == "cores0"
    assert zone_device("dram", 1) == "dram1"
    assert zone_device("psys", 2) == "psys"


def test_package_and_dram_counters_wrap_at_max_energy_range(tmp_path):
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 1_000_000)
    dram = _zone(tmp_path, "intel-rapl:0:0", "dram", 10_000_000)
    sensor = PowercapSensor(tmp_path)
    assert sensor.probe().available
    acc = EnergyAccountant("powercap")
    _energy(acc, 0.0, sensor)
    _set(pkg, 2_000_000)  # wrapped: 1 J before the wrap + 2 J after (+1 uJ for the wrap tick)
    _set(dram, 14_000_000)
    energy = _energy(acc, 1.0, sensor)
    assert energy["package0"] == pytest.approx(3.0, abs=1e-5)
    assert energy["dram0"] == pytest.approx(4.0)
    assert _node_devices(sensor) == ("package0", "dram0")
    sensor.close()


def test_mirrored_die_zones_of_one_package_are_read_once(tmp_path):
    # Multi-die AMD: both die zones report the same socket counter.
    die0 = _zone(tmp_path, "intel-rapl:0", "package-0-die-0", 5_000_000)
    die1 = _zone(tmp_path, "intel-rapl:1", "package-0-die-1", 5_000_000)
    sensor = PowercapSensor(tmp_path)
    status = sensor.probe()
    assert "package-0-die-1=package-0-die-0" in status.detail
    acc = EnergyAccountant("powercap")
    _energy(acc, 0.0, sensor)
    _set(die0, 65_000_000)
    _set(die1, 65_000_000)
    energy = _energy(acc, 1.0, sensor)
    assert energy == {"package0_die0": pytest.approx(60.0)}  # not 120 J
    sensor.close()


def test_distinct_die_counters_are_both_kept(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "package-0-die-0", 5_000_000)
    _zone(tmp_path, "intel-rapl:1", "package-0-die-1", 9_000_000)
    sensor = PowercapSensor(tmp_path)
    sensor.probe()
    assert set(_node_devices(sensor)) == {"package0_die0", "package0_die1"}
    sensor.close()


def test_psys_alone_is_the_node_total(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "package-0", 1)
    _zone(tmp_path, "intel-rapl:1", "psys", 1)
    sensor = PowercapSensor(tmp_path)
    sensor.probe()
    assert _node_devices(sensor) == ("psys",)
    sensor.close()


def test_powercap_is_the_fallback_when_msrs_are_missing(tmp_path):
    _zone(tmp_path / "sys", "intel-rapl:0", "package-0", 1_000)
    roots = SensorRoots(
        msr_root=tmp_path / "no-msr", proc_stat=tmp_path / "no-stat", sysfs_root=tmp_path / "sys"
    )
    from profiler_fakes import FakeNvml

    sensors, statuses = open_sensors(
        roots, nvml=FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    )
    assert [s.name for s in sensors] == ["powercap"]
    by_name = {s.sensor: s for s in statuses}
    assert not by_name["msr"].available and by_name["powercap"].available
    for sensor in sensors:
        sensor.close()


def test_no_zones_says_which_driver_to_load(tmp_path):
    status = PowercapSensor(tmp_path).probe()
    assert not status.available
    assert "intel_rapl_msr" in status.fix

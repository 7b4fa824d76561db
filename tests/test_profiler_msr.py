"""AMD RAPL MSR sensor: pure decoding, and the real reading code against a FUSE fake of the msr driver."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from profiler_fakes import (
    CORE_ENERGY,
    POWER_UNIT,
    WRAP,
    MsrMachine,
    fuse_unavailable_reason,
    mounted_msr,
    write_topology,
)

import profilers
from profilers.energy import EnergyAccountant
from profilers.sensors import SensorRoots, open_sensors
from profilers.sensors.msr import MsrSensor, decode_register, energy_ticks, energy_unit_j

# -- pure decoding ------------------------------------------------------------


def test_energy_unit_is_two_to_the_minus_esu_from_bits_12_to_8():
    assert energy_unit_j(0x000A1003) == 2.0**-16  # a common Zen value: 15.3 uJ
    assert energy_unit_j(0x000A0E03) == 2.0**-14
    # Power unit (3:0) and time unit (19:16) bits do not leak into the energy unit.
    assert energy_unit_j(0x000F100F) == 2.0**-16


def test_energy_counter_is_the_low_32_bits():
    assert energy_ticks(0xA5A5_0000_0000_0000 | 0xFFFF_FFFF) == 0xFFFF_FFFF
    assert energy_ticks(0x0000_0001_0000_0002) == 2


def test_register_bytes_are_little_endian_and_exactly_eight():
    assert decode_register(bytes([0x03, 0x10, 0x0A, 0, 0, 0, 0, 0])) == 0x000A1003
    with pytest.raises(OSError):
        decode_register(b"\x00\x01")


def test_missing_msr_files_say_to_load_the_module(tmp_path):
    status = MsrSensor(root=tmp_path / "cpu", sysfs=tmp_path).probe()
    assert not status.available
    assert "msr kernel module is not loaded" in status.reason
    assert "modprobe msr" in status.fix


def test_roots_come_from_the_environment_and_arguments_win(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_MSR_ROOT", str(tmp_path / "from-env"))
    monkeypatch.setenv("GREENKD_SYSFS_ROOT", str(tmp_path / "sys-env"))
    assert MsrSensor().root == tmp_path / "from-env"
    assert MsrSensor().sysfs == tmp_path / "sys-env"
    assert MsrSensor(root=tmp_path / "arg").root == tmp_path / "arg"


# -- against the FUSE msr driver ------------------------------------------------

_FUSE_MISSING = fuse_unavailable_reason()
needs_fuse = pytest.mark.skipif(_FUSE_MISSING is not None, reason=_FUSE_MISSING or "")


class Rig:
    """A mounted fake machine with its sysfs topology."""

    def __init__(self, machine: MsrMachine, root: Path, sysfs: Path) -> None:
        self.machine, self.root, self.sysfs = machine, root, sysfs

    def sensor(self) -> MsrSensor:
        return MsrSensor(root=self.root, sysfs=self.sysfs)


@pytest.fixture
def rig(request, tmp_path):
    """`@pytest.mark.parametrize("rig", [cpus], indirect=True)`: cpu -> (package, core)."""
    cpus = getattr(request, "param", {0: (0, 0), 1: (0, 1)})
    machine = MsrMachine(cpus)
    sysfs = tmp_path / "sys"
    write_topology(sysfs, cpus)
    with mounted_msr(machine, tmp_path / "cpu") as root:
        yield Rig(machine, root, sysfs)


def _read(sensor: MsrSensor, acc: EnergyAccountant, ts: float) -> dict[tuple[str, str], float]:
    return {(r.device, r.metric): r.value for r in acc.rows(ts, sensor.read())}


@needs_fuse
def test_fake_driver_answers_pread_at_register_offsets(rig):
    fd = os.open(rig.root / "0" / "msr", os.O_RDONLY)
    try:
        assert decode_register(os.pread(fd, 8, POWER_UNIT)) == (0xA << 16) | (16 << 8) | 0x3
        with pytest.raises(OSError) as exc:
            os.pread(fd, 8, POWER_UNIT + 7)  # not a register
        assert exc.value.errno == errno.EIO
    finally:
        os.close(fd)


@needs_fuse
@pytest.mark.parametrize("rig", [{0: (0, 0), 1: (0, 1)}], indirect=True)
def test_package_shared_by_two_cpus_is_read_once(rig):
    sensor = rig.sensor()
    status = sensor.probe()
    assert status.available, status.reason
    acc = EnergyAccountant("msr")
    _read(sensor, acc, 0.0)
    rig.machine.add_package_joules(0, 100.0)
    rig.machine.add_core_joules(0, 30.0)
    rig.machine.add_core_joules(1, 20.0)
    rows = acc.rows(1.0, sensor.read())
    devices = {r.device for r in rows}
    assert devices == {"package0", "core0", "core1", "cores"}
    values = {(r.device, r.metric): r.value for r in rows}
    # Once per package: 100 J, not 200 J from summing what cpu0 and cpu1 both see.
    assert values[("package0", "energy")] == pytest.approx(100.0)
    assert values[("cores", "energy")] == pytest.approx(50.0)
    assert values[("package0", "power")] == pytest.approx(100.0)
    sensor.close()


@needs_fuse
@pytest.mark.parametrize("rig", [{0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (0, 1)}], indirect=True)
def test_smt_siblings_read_their_core_once(rig):
    sensor = rig.sensor()
    assert sensor.probe().available
    acc = EnergyAccountant("msr")
    _read(sensor, acc, 0.0)
    rig.machine.add_core_joules(0, 8.0)
    rig.machine.add_core_joules(1, 4.0)
    values = _read(sensor, acc, 1.0)
    assert {d for d, _ in values} == {"package0", "core0", "core2", "cores"}
    assert values[("core0", "energy")] == pytest.approx(8.0)
    assert values[("cores", "energy")] == pytest.approx(12.0)
    sensor.close()


@needs_fuse
@pytest.mark.parametrize("rig", [{0: (0, 0), 1: (0, 1), 2: (1, 2), 3: (1, 3)}], indirect=True)
def test_two_packages_are_separate_domains_and_both_count_in_the_total(rig, tmp_path):
    rig.machine.add_package_joules(0, 5.0)  # counters do not start at zero
    with profilers.Profiler(
        out=tmp_path / "run",
        hz=20,
        msr_root=rig.root,
        sysfs_root=rig.sysfs,
        proc_stat=tmp_path / "no-stat",
        nvml=_no_nvml(),
    ) as p:
        rig.machine.add_package_joules(0, 40.0)
        rig.machine.add_package_joules(1, 60.0)
        time.sleep(0.15)
        rig.machine.add_package_joules(1, 15.0)
    summary = p.summary()
    energy = {d["device"]: d["energy_j"] for d in summary["domains"]}
    assert energy["package0"] == pytest.approx(40.0)
    assert energy["package1"] == pytest.approx(75.0)
    assert summary["total"]["domains"] == ["msr:package0", "msr:package1"]
    assert summary["total"]["energy_j"] == pytest.approx(115.0)
    assert all(d["source"] == "counter" for d in summary["domains"])


@needs_fuse
def test_package_counter_wrapping_during_a_run_is_accumulated(rig, tmp_path):
    rig.machine.package_ticks[0] = WRAP - 3 * 65536  # 3 J below the wrap
    with profilers.Profiler(
        out=tmp_path / "run",
        hz=20,
        msr_root=rig.root,
        sysfs_root=rig.sysfs,
        proc_stat=tmp_path / "no-stat",
        nvml=_no_nvml(),
    ) as p:
        rig.machine.add_package_joules(0, 2.0)
        time.sleep(0.12)
        rig.machine.add_package_joules(0, 5.0)  # crosses 2^32
        time.sleep(0.12)
    (package,) = [d for d in p.summary()["domains"] if d["device"] == "package0"]
    assert rig.machine.package_ticks[0] < 65536 * 5  # it really wrapped
    assert package["energy_j"] == pytest.approx(7.0)
    assert p.summary()["status"] == "complete"


@needs_fuse
def test_register_answering_eio_leaves_that_domain_out_with_a_reason(rig):
    rig.machine.failing.add((1, CORE_ENERGY))
    sensor = rig.sensor()
    status = sensor.probe()
    assert status.available
    (problem,) = status.problems
    assert "core1" in problem.reason and "EIO" in problem.reason
    acc = EnergyAccountant("msr")
    _read(sensor, acc, 0.0)
    rig.machine.add_package_joules(0, 9.0)
    values = _read(sensor, acc, 1.0)
    assert ("core1", "energy") not in values
    assert values[("package0", "energy")] == pytest.approx(9.0)
    sensor.close()


@needs_fuse
def test_power_unit_eio_means_not_an_amd_rapl_cpu(rig, tmp_path):
    rig.machine.failing.add((0, POWER_UNIT))
    status = rig.sensor().probe()
    assert not status.available
    assert "not an AMD RAPL CPU" in status.reason
    # The MSRs are out, so the powercap fallback is tried instead.
    _, statuses = open_sensors(
        SensorRoots(rig.root, tmp_path / "no-stat", rig.sysfs), nvml=_no_nvml()
    )
    assert [s.sensor for s in statuses][:2] == ["msr", "powercap"]
    assert statuses[1].reason is not None and "intel-rapl" in statuses[1].reason


@needs_fuse
def test_permission_errors_give_the_group_and_capability_fix(rig):
    rig.machine.open_errno = errno.EPERM
    status = rig.sensor().probe()
    assert not status.available
    assert "CAP_SYS_RAWIO" in status.reason
    assert "setcap cap_sys_rawio=ep" in status.fix and 'SUBSYSTEM=="msr"' in status.fix


@needs_fuse
@pytest.mark.parametrize("rig", [{0: (0, 0), 1: (0, 1), 2: (0, 2)}], indirect=True)
def test_cpu_disappearing_mid_run_keeps_its_package_and_marks_the_run_partial(rig, tmp_path):
    with profilers.Profiler(
        out=tmp_path / "run",
        hz=20,
        msr_root=rig.root,
        sysfs_root=rig.sysfs,
        proc_stat=tmp_path / "no-stat",
        nvml=_no_nvml(),
    ) as p:
        rig.machine.add_package_joules(0, 10.0)
        rig.machine.add_core_joules(0, 4.0)
        time.sleep(0.15)
        rig.machine.vanished.add(0)  # cpu0 (the package's reader) goes offline
        time.sleep(0.15)
        rig.machine.add_package_joules(0, 6.0)
        rig.machine.add_core_joules(1, 3.0)
        time.sleep(0.15)
    summary = p.summary()
    domains = {d["device"]: d for d in summary["domains"]}
    # The package counter is read from cpu1 now: no joule lost or doubled.
    assert domains["package0"]["energy_j"] == pytest.approx(16.0)
    assert domains["package0"]["complete"]
    assert domains["core0"]["energy_j"] == pytest.approx(4.0)
    assert not domains["core0"]["complete"]
    assert summary["status"] == "partial"
    assert "core0" in summary["reason"]
    assert any("core0" in m["reason"] for m in summary["missing"])
    # Every sample taken is on disk, including core0's rows before it vanished.
    text = (tmp_path / "run" / "samples.csv").read_text()
    assert ",msr,core0,energy,4.0,J" in text


@needs_fuse
@pytest.mark.parametrize("rig", [{0: (0, 0), 1: (0, 1)}], indirect=True)
def test_cpu_without_topology_is_skipped_with_the_reason(rig):
    topo = rig.sysfs / "devices" / "system" / "cpu" / "cpu1" / "topology" / "physical_package_id"
    topo.unlink()
    sensor = rig.sensor()
    status = sensor.probe()
    assert status.available
    assert any("cpu1" in p.reason and "topology" in p.reason for p in status.problems)
    devices = {r.device for r in EnergyAccountant("msr").rows(0.0, sensor.read())}
    assert devices == {"package0", "core0", "cores"}
    sensor.close()


def _no_nvml():
    from profiler_fakes import FakeNvml

    return FakeNvml(init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)

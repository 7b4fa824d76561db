"""/proc/stat utilisation (paper eq. 6) from crafted files through GREENKD_PROC_STAT."""

from __future__ import annotations

import pytest
from profiler_fakes import write_proc_stat

from profilers.sensors.base import SensorError
from profilers.sensors.procstat import CpuTimes, ProcStatSensor, parse_proc_stat, utilization_pct

#            user nice sys idle iowait irq softirq steal guest guest_nice


def test_guest_time_is_not_counted_twice():
    times = parse_proc_stat("cpu  100 10 50 800 20 5 15 0 60 7\n")
    # busy = user + nice + system + irq + softirq; guest is already inside user.
    assert times["cpu"] == CpuTimes(busy=180, total=1000)


def test_short_lines_from_old_kernels_parse():
    times = parse_proc_stat("cpu 10 0 10 80\ncpu0 10 0 10 80\n")
    assert times["cpu0"] == CpuTimes(busy=20, total=100)


def test_utilization_is_busy_share_of_the_interval():
    before = CpuTimes(busy=1000, total=4000)
    after = CpuTimes(busy=1375, total=5000)
    assert utilization_pct(before, after) == 37.5
    assert utilization_pct(after, after) is None


def test_sensor_reads_each_interval_per_cpu_and_overall(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setenv("GREENKD_PROC_STAT", str(stat))
    write_proc_stat(
        stat,
        {
            "cpu": [200, 0, 100, 700, 0, 0, 0, 0, 0, 0],
            "cpu0": [100, 0, 50, 350, 0, 0, 0, 0, 0, 0],
            "cpu1": [100, 0, 50, 350, 0, 0, 0, 0, 0, 0],
        },
    )
    sensor = ProcStatSensor()  # no argument: the environment variable decides
    assert sensor.path == stat
    assert sensor.probe().available
    assert sensor.read() == []  # the first sample opens the first interval
    # Over the next interval cpu0 is fully busy (user + irq), cpu1 idle, guest on cpu0 ignored.
    write_proc_stat(
        stat,
        {
            "cpu": [290, 0, 100, 800, 0, 10, 0, 0, 40, 0],
            "cpu0": [190, 0, 50, 350, 0, 10, 0, 0, 40, 0],
            "cpu1": [100, 0, 50, 450, 0, 0, 0, 0, 0, 0],
        },
    )
    values = {g.device: g.value for g in sensor.read()}
    assert values == {"cpu": 50.0, "cpu0": 100.0, "cpu1": 0.0}


def test_argument_overrides_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENKD_PROC_STAT", str(tmp_path / "env"))
    assert ProcStatSensor(tmp_path / "arg").path == tmp_path / "arg"


def test_vanished_file_raises_sensor_error_with_a_reason(tmp_path):
    stat = tmp_path / "stat"
    write_proc_stat(stat, {"cpu": [1, 0, 1, 8, 0, 0, 0, 0, 0, 0]})
    sensor = ProcStatSensor(stat)
    assert sensor.probe().available
    stat.unlink()
    with pytest.raises(SensorError) as exc:
        sensor.read()
    assert "no longer readable" in exc.value.reason


def test_file_without_cpu_line_is_unavailable(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("intr 0\n")
    status = ProcStatSensor(stat).probe()
    assert not status.available and "no `cpu` line" in status.reason

"""Per-process attribution: the profiled work's share of the machine's CPU time and energy."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from profiler_fakes import (
    FakeGpu,
    FakeNvml,
    MsrMachine,
    fuse_unavailable_reason,
    mounted_msr,
    write_proc_stat,
    write_topology,
)

import profilers
from profilers.attribution import SCOPE_COMMAND, Attribution, gpu_share
from profilers.energy import Row
from profilers.processes import OwnProcesses, TreeCpu
from profilers.sensors.procstat import CpuSeconds

GREENKD = [sys.executable, "-m", "greenkd"]
ME, OTHER = 100, 200  # pids in crafted GPU process lists
# /proc/<pid>/stat counts whole USER_HZ ticks: user and system time may each lose up to one.
TICKS_S = 2 / os.sysconf("SC_CLK_TCK")


def _wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    """Wait for an event; the timeout only stops a hung test, it is no timing window."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _energy(ts: float, sensor: str, device: str, joules: float) -> Row:
    return Row(ts, sensor, device, "energy", joules, "J")


def _domain(sensor: str, device: str, idle_power_w: float | None, in_total: bool = True) -> dict:
    return {"sensor": sensor, "device": device, "idle_power_w": idle_power_w, "in_total": in_total}


def _crafted_run(attribution: Attribution) -> None:
    """Two idle-baseline samples, then three intervals of work with known energy and CPU time.

    package0: 10 W idle; 50 J, 60 J, 30 J over intervals of 1 s, 2 s, 1 s.
    The machine: busy/total CPU s 2/4, 1/8, 2/4; the command: 1.0, 1.5, 0.5 CPU s.
    gpu0: 100 J per interval; listed processes: the command and another (1000 / 3000 MiB),
    then the command alone, then the other alone. gpu1: energy, but never a process.
    """
    samples = [
        # ts, in_work, package0 J, gpu J, machine CPU s, command CPU s (cumulative), gpu0 list
        (0.0, False, 0.0, 0.0, None, 0.0, ()),
        (2.0, False, 20.0, 40.0, CpuSeconds(0.5, 8.0), 0.0, ()),
        (3.0, True, 70.0, 140.0, CpuSeconds(2.0, 4.0), 1.0, ((ME, 1000.0), (OTHER, 3000.0))),
        (5.0, True, 130.0, 240.0, CpuSeconds(1.0, 8.0), 2.5, ((ME, 500.0),)),
        (6.0, True, 160.0, 340.0, CpuSeconds(2.0, 4.0), 3.0, ((OTHER, 3000.0),)),
    ]
    for ts, in_work, package_j, gpu_j, cpu, command_s, gpu0 in samples:
        attribution.add_sample(
            in_work=in_work,
            rows=[
                _energy(ts, "msr", "package0", package_j),
                _energy(ts, "msr", "cores", package_j / 2),
                _energy(ts, "nvml", "gpu0", gpu_j),
                _energy(ts, "nvml", "gpu1", gpu_j),
            ],
            cpu=cpu,
            work_cpu_s=command_s,
            gpu_processes={"gpu0": gpu0, "gpu1": ()},
            own_pids={ME},
        )


def test_attributed_joules_follow_each_intervals_cpu_and_gpu_share():
    attribution = Attribution(SCOPE_COMMAND)
    _crafted_run(attribution)
    summary = attribution.summary(
        [
            _domain("msr", "cores", 5.0, in_total=False),
            _domain("msr", "package0", 10.0),
            _domain("nvml", "gpu0", 20.0),
            _domain("nvml", "gpu1", 20.0),
        ],
        idle_baseline=True,
        processes_seen=1,
        processes_exited=1,
    )
    # Interval 1: busy share 1/2, core share 1/4. Interval 2: 1.5 CPU s against 1 busy s: share
    # 1, the 0.5 s excess carried; core share 1/8. Interval 3: 0.5 + 0.5 carried: 1/2 and 1/4.
    # Dynamic: (50 - 10) / 2 + (60 - 20) * 1 + (30 - 10) / 2 = 70 J.
    # Idle: 10 W * (1 s / 4 + 2 s / 8 + 1 s / 4) = 7.5 J.
    # gpu0, share 1/4 by memory, then 1, then 0: (100 - 20) / 4 + (100 - 40) = 80 J dynamic,
    # 20 W * (1 s / 4 + 2 s) = 45 J idle. gpu1 has no process of the command: not attributed.
    by_device = {d["device"]: d for d in summary["domains"]}
    assert set(by_device) == {"package0", "gpu0"}
    assert by_device["package0"] == {
        "sensor": "msr",
        "device": "package0",
        "attributed_energy_j": pytest.approx(77.5),
        "attributed_dynamic_j": pytest.approx(70.0),
        "attributed_idle_j": pytest.approx(7.5),
    }
    assert by_device["gpu0"]["attributed_dynamic_j"] == pytest.approx(80.0)
    assert by_device["gpu0"]["attributed_idle_j"] == pytest.approx(45.0)
    assert summary["attributed_total_j"] == pytest.approx(77.5 + 125.0)
    assert summary["command_cpu_s"] == pytest.approx(3.0)
    assert summary["machine_busy_cpu_s"] == pytest.approx(5.0)
    assert summary["machine_cpu_s"] == pytest.approx(16.0)
    assert summary["cpu_share"] == pytest.approx(0.6)
    assert summary["core_share"] == pytest.approx(3.0 / 16.0)
    assert summary["scope"] == "command" and summary["idle_baseline"] is True
    assert summary["processes"] == {"seen": 1, "exited": 1}
    assert "not measured" in summary["method"]
    assert any("split by used GPU memory" in n for n in summary["notes"])
    assert any("starts and exits between two samples" in n for n in summary["notes"])


def test_without_an_idle_baseline_all_energy_is_shared_by_busy_cpu_time():
    attribution = Attribution(SCOPE_COMMAND)
    _crafted_run(attribution)
    summary = attribution.summary(
        [_domain("msr", "package0", None), _domain("nvml", "gpu0", None)],
        idle_baseline=False,
        processes_seen=1,
        processes_exited=0,
    )
    package = next(d for d in summary["domains"] if d["device"] == "package0")
    assert package["attributed_dynamic_j"] == pytest.approx(50 / 2 + 60 + 30 / 2)
    assert package["attributed_idle_j"] == 0.0
    assert "taken as 0" in summary["method"]
    assert any("no idle baseline" in n for n in summary["notes"])


def test_without_energy_sensors_only_the_cpu_share_is_given():
    attribution = Attribution(SCOPE_COMMAND)
    attribution.add_sample(
        in_work=False, rows=[], cpu=None, work_cpu_s=0.0, gpu_processes={}, own_pids=()
    )
    attribution.add_sample(
        in_work=True,
        rows=[],
        cpu=CpuSeconds(2.0, 2.0),
        work_cpu_s=1.0,
        gpu_processes={},
        own_pids=(),
    )
    summary = attribution.summary([], idle_baseline=False, processes_seen=1, processes_exited=1)
    assert summary["cpu_share"] == 0.5
    assert summary["domains"] == [] and summary["attributed_total_j"] is None


@pytest.mark.parametrize(
    ("processes", "share", "split"),
    [
        ((), 0.0, "idle"),
        (((ME, 100.0),), 1.0, "only"),
        (((OTHER, 100.0),), 0.0, "none"),
        (((ME, 100.0), (OTHER, 300.0), (ME + 1, 100.0)), 0.4, "memory"),
        (((ME, None), (OTHER, 300.0), (OTHER + 1, None)), 1 / 3, "count"),
    ],
)
def test_gpu_share_is_whole_when_alone_else_by_memory_else_by_count(processes, share, split):
    assert gpu_share(processes, {ME, ME + 1}) == (pytest.approx(share), split)


# -- the process tree ---------------------------------------------------------------------------

# A parent that starts a child burning CPU; each step waits for the test's file (`go_<step>`) and
# says it is done by writing its own (`<step>`), renamed into place so that it is never seen
# half written (the slow AMD machine read an empty `burned` once).
PARENT_AND_CHILD = r"""
import os, pathlib, subprocess, sys, time
d = pathlib.Path(sys.argv[1])
def wait(name):
    while not (d / name).exists():
        time.sleep(0.005)
child = subprocess.Popen([sys.executable, "-c", r'''
import os, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
(d / "burned.tmp").write_text(repr(time.process_time()))
os.replace(d / "burned.tmp", d / "burned")  # whole or absent: the test reads it when it appears
while not (d / "go_exit").exists():
    time.sleep(0.005)
''', str(d)])
wait("burned")
wait("go_exit")
child.wait()
(d / "reaped.tmp").write_text(str(child.pid))
os.replace(d / "reaped.tmp", d / "reaped")
wait("go_end")
"""


def test_a_child_that_appears_and_exits_mid_run_keeps_its_cpu_time(tmp_path):
    root = subprocess.Popen([sys.executable, "-c", PARENT_AND_CHILD, str(tmp_path)])
    try:
        tree = TreeCpu(OwnProcesses([root.pid]))
        _wait_for(lambda: (tmp_path / "burned").exists(), "the child to burn its CPU")
        while_alive = tree.read()
        burned = float((tmp_path / "burned").read_text())
        assert (tree.seen, tree.exited) == (2, 0)
        assert while_alive >= burned - TICKS_S and burned >= 0.3
        (tmp_path / "go_exit").touch()
        _wait_for(lambda: (tmp_path / "reaped").exists(), "the parent to reap the child")
        after_exit = tree.read()
        assert (tree.seen, tree.exited) == (2, 1)
        assert after_exit >= while_alive  # the exited child's CPU time is kept
        assert int((tmp_path / "reaped").read_text()) in tree.pids
    finally:  # every step released, so a failed assertion leaves no process behind
        (tmp_path / "go_exit").touch()
        (tmp_path / "go_end").touch()
        try:
            root.wait(timeout=30)
        except subprocess.TimeoutExpired:
            root.kill()
            raise


def test_a_tree_without_members_has_used_nothing():
    assert TreeCpu().read() == 0.0


def _utilization_rows(out: Path) -> int:
    path = out / "samples.csv"
    if not path.exists():
        return 0
    with path.open() as f:
        return sum(1 for r in csv.reader(f) if r[1:4] == ["procstat", "cpu", "utilization"])


def test_a_python_blocks_child_is_counted_in_its_tree_after_it_exits(tmp_path):
    out = tmp_path / "run"
    with profilers.Profiler(
        out=out, hz=20, msr_root=tmp_path / "no-msr", sysfs_root=tmp_path / "no-sys"
    ) as p:
        root = subprocess.Popen([sys.executable, "-c", PARENT_AND_CHILD, str(tmp_path)])
        try:
            _wait_for(lambda: (tmp_path / "burned").exists(), "the child to burn its CPU")
            seen = _utilization_rows(out)
            _wait_for(lambda: _utilization_rows(out) >= seen + 2, "two samples of the child")
            (tmp_path / "go_exit").touch()
            _wait_for(lambda: (tmp_path / "reaped").exists(), "the parent to reap the child")
        finally:
            (tmp_path / "go_end").touch()
            root.wait(timeout=30)
    attribution = p.summary()["attribution"]
    assert attribution["scope"] == "python_block"
    assert attribution["processes"]["seen"] >= 3  # this process, the parent, the child
    assert attribution["processes"]["exited"] >= 2
    assert attribution["command_cpu_s"] >= float((tmp_path / "burned").read_text()) - TICKS_S


def test_a_command_shorter_than_a_period_is_read_when_it_exits(tmp_path):
    burn = (
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3:\n"
        "    pass\n"
        "open(__import__('sys').argv[1], 'w').write(repr(time.process_time()))\n"
    )
    code = profilers.run_command(
        [sys.executable, "-c", burn, str(tmp_path / "burned")],
        out=tmp_path / "run",
        hz=1,
        msr_root=tmp_path / "no-msr",
        sysfs_root=tmp_path / "no-sys",
    )
    assert code == 0
    burned = float((tmp_path / "burned").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    attribution = summary["attribution"]
    # One interval of work, read as the command exits (a zombie, before it is reaped).
    assert attribution["scope"] == "command"
    assert attribution["processes"] == {"seen": 1, "exited": 1}
    assert attribution["command_cpu_s"] >= burned - TICKS_S
    assert 0 < attribution["cpu_share"] <= 1


def test_gpu_energy_is_attributed_by_the_processes_nvml_lists(tmp_path):
    mine, foreign = os.getpid(), os.getppid()
    gpus = [
        FakeGpu(power_w=100.0, processes={mine: 1000.0}),
        FakeGpu(power_w=100.0, processes={foreign: 1000.0}),
        FakeGpu(power_w=100.0, processes={mine: 1000.0, foreign: 3000.0}),
    ]
    with profilers.Profiler(
        out=tmp_path / "run",
        hz=20,
        msr_root=tmp_path / "no-msr",
        sysfs_root=tmp_path / "no-sys",
        nvml=FakeNvml(gpus),
    ) as p:
        time.sleep(0.3)
    summary = p.summary()
    measured = {d["device"]: d["energy_j"] for d in summary["domains"]}
    attributed = {d["device"]: d for d in summary["attribution"]["domains"]}
    assert set(attributed) == {"gpu0", "gpu2"}  # gpu1 runs only another process
    assert attributed["gpu0"]["attributed_energy_j"] == pytest.approx(measured["gpu0"])
    assert attributed["gpu2"]["attributed_energy_j"] == pytest.approx(measured["gpu2"] / 4)
    assert summary["attribution"]["attributed_total_j"] == pytest.approx(
        measured["gpu0"] + measured["gpu2"] / 4
    )
    assert summary["total"]["energy_j"] == pytest.approx(sum(measured.values()))


# -- the must-show: a busy loop beside another ------------------------------------------

# Busy on one core until it has used `CPU_S` seconds of CPU (so both loops do the same work
# however the host shares its cores), then says so and waits for `stop`.
CPU_S = 1.5
BUSY = rf"""
import os, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
name = sys.argv[2]
(d / f"{{name}}.ready").write_text(str(os.getpid()))
while not (d / "go").exists():
    time.sleep(0.005)
t = time.process_time()
while time.process_time() - t < {CPU_S}:
    pass
(d / f"{{name}}.burned").write_text(repr(time.process_time()))
while not (d / "stop").exists():
    time.sleep(0.005)
"""


class _TwoLoopMachine:
    """A two-CPU machine whose only work is the profiled command and one busy loop outside it.

    Its /proc/stat counts those processes' own CPU time as busy (USER_HZ ticks), so the half the
    command should get does not depend on what else runs on the test's host. Its package counter
    advances at a known power: 10 W idle plus 20 J per busy CPU second.
    """

    IDLE_W, J_PER_BUSY_S = 10.0, 20.0

    def __init__(self, stat: Path, machine: MsrMachine) -> None:
        self.stat, self.machine = stat, machine
        self.greenkd: psutil.Process | None = None
        self.outside: psutil.Process | None = None
        self._last_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._tick = float(os.sysconf("SC_CLK_TCK"))
        self._start = time.monotonic()
        self._write(0.0)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _busy_s(self) -> float:
        processes = [self.outside] if self.outside else []
        if self.greenkd is not None:
            with contextlib.suppress(psutil.NoSuchProcess):  # it has ended
                processes += self.greenkd.children(recursive=True)
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue  # exited: its last reading stays
            self._last_s[process.pid] = times.user + times.system
        return sum(self._last_s.values())

    def _write(self, busy_s: float) -> None:
        total = int(2 * (time.monotonic() - self._start) * self._tick)
        busy = min(round(busy_s * self._tick), total)
        idle = total - busy
        write_proc_stat(
            self.stat,
            {
                "cpu": [busy, 0, 0, idle, 0, 0, 0, 0, 0, 0],
                "cpu0": [busy // 2, 0, 0, idle // 2, 0, 0, 0, 0, 0, 0],
                "cpu1": [busy - busy // 2, 0, 0, idle - idle // 2, 0, 0, 0, 0, 0, 0],
            },
        )

    def _run(self) -> None:
        last, last_busy_s = time.monotonic(), 0.0
        while not self._stop.wait(0.01):
            now, busy_s = time.monotonic(), self._busy_s()
            self.machine.add_package_joules(
                0, self.IDLE_W * (now - last) + self.J_PER_BUSY_S * (busy_s - last_busy_s)
            )
            self._write(busy_s)
            last, last_busy_s = now, busy_s

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(fuse_unavailable_reason() is not None, reason=fuse_unavailable_reason() or "")
def test_a_busy_loop_beside_another_gets_half_the_cpu_and_half_the_dynamic_energy(tmp_path):
    cpus = {0: (0, 0), 1: (0, 1)}
    machine = MsrMachine(cpus)
    write_topology(tmp_path / "sys", cpus)
    out, stat = tmp_path / "run", tmp_path / "stat"
    done = [tmp_path / "command.burned", tmp_path / "outside.burned"]
    with mounted_msr(machine, tmp_path / "cpu") as root:
        host = _TwoLoopMachine(stat, machine)
        env = dict(
            os.environ,
            GREENKD_MSR_ROOT=str(root),
            GREENKD_SYSFS_ROOT=str(tmp_path / "sys"),
            GREENKD_PROC_STAT=str(stat),
        )
        loop = [sys.executable, "-c", BUSY, str(tmp_path)]
        options = ["--hz", "10", "--idle-seconds", "0.5", "--out", str(out)]
        profile = subprocess.Popen(
            [*GREENKD, "profile", *options, "--", "taskset", "-c", "0", *loop, "command"],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        outside = None
        try:
            host.greenkd = psutil.Process(profile.pid)
            # Outside greenkd's tree: the test's own child, on the other core.
            outside = subprocess.Popen(["taskset", "-c", "1", *loop, "outside"])
            host.outside = psutil.Process(outside.pid)
            _wait_for(lambda: (tmp_path / "command.ready").exists(), "the command to start")
            _wait_for(lambda: (tmp_path / "outside.ready").exists(), "the outside loop")
            (tmp_path / "go").touch()
            _wait_for(lambda: all(p.exists() for p in done), "both loops to use their CPU")
            (tmp_path / "stop").touch()
            _, stderr = profile.communicate(timeout=60)
            outside.wait(timeout=30)
        finally:
            (tmp_path / "stop").touch()
            host.close()
            for process in (profile, outside):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    assert profile.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    attribution = summary["attribution"]
    package = next(d for d in summary["domains"] if d["device"] == "package0")
    (attributed,) = attribution["domains"]
    assert attributed["device"] == "package0"
    energy_share = attributed["attributed_dynamic_j"] / package["dynamic_energy_j"]
    print(
        f"cpu share {attribution['cpu_share']:.3f} ({attribution['command_cpu_s']:.2f} of "
        f"{attribution['machine_busy_cpu_s']:.2f} busy CPU s); package dynamic "
        f"{package['dynamic_energy_j']:.1f} J, attributed {attributed['attributed_dynamic_j']:.1f} J "
        f"({energy_share:.3f}); samples {summary['samples']}"
    )
    assert attribution["cpu_share"] == pytest.approx(0.5, abs=0.10)
    assert energy_share == pytest.approx(0.5, abs=0.10)
    # The command's CPU time is its own loop's, not the machine's.
    assert attribution["command_cpu_s"] == pytest.approx(CPU_S, abs=0.3)
    # Beside the measured figures, not instead of them.
    assert summary["total"]["energy_j"] == package["energy_j"]
    assert attribution["attributed_total_j"] < package["energy_j"]
    assert "attributed  cpu share" in stderr

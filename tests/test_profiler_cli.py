"""`greenkd profile` and `greenkd sensors`, run as the real CLI in a subprocess."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from profiler_fakes import (
    MsrMachine,
    fuse_unavailable_reason,
    mounted_msr,
    write_proc_stat,
    write_topology,
)

GREENKD = [sys.executable, "-m", "greenkd"]

# A child that counts the SIGINT/SIGTERM it receives and exits with 10 + count,
# so a test can tell "forwarded once" from "delivered twice".
COUNT_SIGNALS = """
import signal, sys, time
n = 0
def on_signal(signum, frame):
    global n
    n += 1
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
print("ready", flush=True)
while n == 0:
    time.sleep(0.01)
time.sleep(0.5)  # room for a duplicate to arrive
sys.exit(10 + n)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # No energy sensors, whatever the machine has: the tests below are about the command's life cycle.
    env.update(
        GREENKD_MSR_ROOT=str(tmp_path / "no-msr"), GREENKD_SYSFS_ROOT=str(tmp_path / "no-sys")
    )
    env.update(extra)
    return env


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _sample_rows(out: Path) -> list[list[str]]:
    with (out / "samples.csv").open() as f:
        return list(csv.reader(f))[1:]


def test_busy_loop_utilisation_agrees_with_psutil_and_energy_is_said_unavailable(tmp_path):
    busy = (
        "import json, psutil, time\n"
        "psutil.cpu_percent(None)\n"
        "t = time.time()\n"
        "while time.time() - t < 5: pass\n"
        "print(json.dumps({'psutil_pct': psutil.cpu_percent(None)}))\n"
    )
    out = tmp_path / "run"
    result = subprocess.run(
        [*GREENKD, "profile", "--out", str(out), "--", sys.executable, "-c", busy],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    psutil_pct = json.loads(result.stdout)["psutil_pct"]
    summary = _summary(out)
    (overall,) = [
        u for u in summary["utilization"] if u["sensor"] == "procstat" and u["device"] == "cpu"
    ]
    assert abs(overall["avg_pct"] - psutil_pct) <= 5.0, (overall, psutil_pct)
    assert summary["status"] == "complete" and summary["exit_code"] == 0
    assert summary["command"][-2] == "-c"
    missing = {m["sensor"]: m for m in summary["missing"]}
    assert "msr kernel module is not loaded" in missing["msr"]["reason"]
    assert "modprobe msr" in missing["msr"]["fix"]
    if not any(d["sensor"] == "nvml" for d in summary["domains"]):
        assert summary["domains"] == []
        assert "energy  unavailable" in result.stderr
        assert "missing msr: no " in result.stderr


def test_no_command_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [*GREENKD, "profile", "--out", str(tmp_path / "run")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "greenkd: error: no command to profile: give one after `--`, e.g. `greenkd profile -- python train.py`"
    ]
    assert not (tmp_path / "run").exists()


def test_command_that_does_not_exist_exits_127_with_one_line(tmp_path):
    result = subprocess.run(
        [*GREENKD, "profile", "--out", str(tmp_path / "run"), "--", "no-such-program-xyz", "arg"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 127
    assert result.stderr.strip().splitlines() == [
        "greenkd: error: command not found: no-such-program-xyz (not found on PATH)"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("script", "code", "reason"),
    [
        ("import sys, time; time.sleep(0.3); sys.exit(3)", 3, "exited with code 3"),
        ("import os, time; time.sleep(0.3); os.abort()", 128 + signal.SIGABRT, "killed by SIGABRT"),
    ],
)
def test_failing_command_keeps_its_exit_code_and_samples_with_a_partial_summary(
    tmp_path, script, code, reason
):
    out = tmp_path / "run"
    result = subprocess.run(
        [*GREENKD, "profile", "--hz", "10", "--out", str(out), "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
    )
    assert result.returncode == code
    summary = _summary(out)
    assert summary["status"] == "partial"
    assert reason in summary["reason"]
    assert summary["exit_code"] == code
    assert len(_sample_rows(out)) >= 3 * 2  # utilization rows of several samples


def _start_counting_child(tmp_path: Path, out: Path, **popen) -> subprocess.Popen:
    # Its own session, so that cleanup can end greenkd and the command together.
    popen.setdefault("start_new_session", True)
    proc = subprocess.Popen(
        [
            *GREENKD,
            "profile",
            "--hz",
            "10",
            "--out",
            str(out),
            "--",
            sys.executable,
            "-c",
            COUNT_SIGNALS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        **popen,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        _reap(proc)
        raise AssertionError(f"the command did not start: {proc.communicate()[1]}")
    return proc


def _reap(proc: subprocess.Popen) -> None:
    """If a test failed half-way, end the process group it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_greenkd_is_forwarded_to_the_command_once(tmp_path, signum):
    out = tmp_path / "run"
    proc = _start_counting_child(tmp_path, out)
    try:
        time.sleep(0.3)
        proc.send_signal(signum)
        proc.communicate(timeout=20)
    finally:
        _reap(proc)
    assert proc.returncode == 11  # the child's own exit code, after exactly one signal
    summary = _summary(out)
    assert summary["status"] == "partial"
    assert f"interrupted by {signal.Signals(signum).name}" in summary["reason"]
    assert summary["exit_code"] == 11
    assert len(_sample_rows(out)) >= 3


def test_ctrl_c_on_the_terminal_reaches_the_command_once(tmp_path):
    # The terminal sends SIGINT to the whole foreground group, child included:
    # greenkd must not forward a second one.
    master, slave = os.openpty()
    out = tmp_path / "run"
    proc = _start_counting_child(
        tmp_path,
        out,
        stdin=slave,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    try:
        time.sleep(0.3)
        os.write(master, b"\x03")
        proc.communicate(timeout=20)
    finally:
        _reap(proc)
        os.close(master)
        os.close(slave)
    assert proc.returncode == 11
    assert "interrupted by SIGINT" in _summary(out)["reason"]


def test_stat_file_vanishing_mid_run_keeps_samples_and_marks_partial(tmp_path):
    stat = tmp_path / "stat"
    write_proc_stat(stat, {"cpu": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]})
    vanish, stop = threading.Event(), threading.Event()

    def tick() -> None:
        # 25 % busy until the test says the file goes away.
        k = 0
        while not stop.wait(0.05):
            if vanish.is_set():
                stat.unlink()
                return
            k += 1
            write_proc_stat(stat, {"cpu": [25 * k, 0, 0, 75 * k, 0, 0, 0, 0, 0, 0]})

    done = tmp_path / "done"
    wait_for_done = f"import os, time\nwhile not os.path.exists({str(done)!r}): time.sleep(0.02)\n"
    out = tmp_path / "run"
    writer = threading.Thread(target=tick)
    writer.start()
    proc = subprocess.Popen(
        [
            *GREENKD,
            "profile",
            "--hz",
            "10",
            "--out",
            str(out),
            "--",
            sys.executable,
            "-c",
            wait_for_done,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path, GREENKD_PROC_STAT=str(stat)),
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (out / "samples.csv").exists() and len(_sample_rows(out)) >= 3:
                break
            time.sleep(0.05)
        vanish.set()
        time.sleep(0.5)  # five sample periods with the file gone
        done.touch()
        proc.communicate(timeout=20)
    finally:
        stop.set()
        writer.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0  # the command's own code
    summary = _summary(out)
    assert summary["status"] == "partial"
    assert "procstat" in summary["reason"] and "no longer readable" in summary["reason"]
    util = [float(r[4]) for r in _sample_rows(out) if r[3] == "utilization"]
    assert len(util) >= 3
    assert all(v == pytest.approx(25.0) for v in util)


@pytest.mark.skipif(fuse_unavailable_reason() is not None, reason=fuse_unavailable_reason() or "")
def test_profile_reads_package_energy_from_the_msr_driver(tmp_path):
    cpus = {0: (0, 0), 1: (0, 1)}
    machine = MsrMachine(cpus)
    write_topology(tmp_path / "sys", cpus)
    stop = threading.Event()

    def load() -> None:
        # 40 W on the package: each step adds the energy of the time since the last one.
        last = time.monotonic()
        while not stop.wait(0.01):
            now = time.monotonic()
            machine.add_package_joules(0, 40.0 * (now - last))
            last = now

    with mounted_msr(machine, tmp_path / "cpu") as root:
        loader = threading.Thread(target=load)
        loader.start()
        try:
            out = tmp_path / "run"
            result = subprocess.run(
                [
                    *GREENKD,
                    "profile",
                    "--hz",
                    "10",
                    "--out",
                    str(out),
                    "--carbon-intensity",
                    "300",
                    "--",
                    "sleep",
                    "1",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env=_env(
                    tmp_path, GREENKD_MSR_ROOT=str(root), GREENKD_SYSFS_ROOT=str(tmp_path / "sys")
                ),
            )
        finally:
            stop.set()
            loader.join()
    assert result.returncode == 0, result.stderr
    summary = _summary(out)
    package = next(d for d in summary["domains"] if d["device"] == "package0")
    assert package["sensor"] == "msr" and package["source"] == "counter"
    assert package["avg_power_w"] == pytest.approx(
        40.0, rel=0.25
    )  # the loader thread's timing is not exact
    assert summary["carbon"]["g_co2e"] == pytest.approx(summary["total"]["energy_j"] / 3.6e6 * 300)
    assert "msr      package0" in result.stderr


def test_sensors_command_gives_each_reason_and_the_msr_permission_fix(tmp_path):
    result = subprocess.run(
        [*GREENKD, "sensors"], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert result.returncode == 0
    text = result.stdout
    for name in ("msr", "powercap", "procstat", "nvml"):
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert "msr kernel module is not loaded" in text and "modprobe msr" in text
    assert "setcap cap_sys_rawio=ep" in text and 'SUBSYSTEM=="msr"' in text
    statuses = json.loads(
        subprocess.run(
            [*GREENKD, "sensors", "--json"], capture_output=True, text=True, env=_env(tmp_path)
        ).stdout
    )
    by_name = {s["sensor"]: s for s in statuses}
    assert by_name["procstat"]["available"] is True
    assert by_name["msr"]["available"] is False and by_name["msr"]["fix"]


def test_run_command_raises_after_the_summary_when_the_caller_is_interrupted(tmp_path):
    # A sweep looping over run_command must stop on Ctrl-C / SIGTERM, not go on to the next run.
    out = tmp_path / "run"
    caller = (
        "import sys, profilers\n"
        "try:\n"
        f"    profilers.run_command([sys.executable, '-c', {COUNT_SIGNALS!r}], out={str(out)!r}, hz=10)\n"
        "except profilers.CommandInterrupted as exc:\n"
        "    print('stopped', exc.exit_code, exc.signals, flush=True)\n"
        "else:\n"
        "    print('went on', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", caller],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        _reap(proc)
    assert stdout.strip() == "stopped 11 ['SIGTERM']"
    assert _summary(out)["exit_code"] == 11


def test_gpu_list_accepts_ranges_and_rejects_junk():
    from greenkd.errors import GreenkdError
    from profilers.cli import parse_gpu_indices

    assert parse_gpu_indices("0-2,5") == [0, 1, 2, 5]
    assert parse_gpu_indices(None) is None
    with pytest.raises(GreenkdError, match="--gpus takes NVML indices"):
        parse_gpu_indices("first")

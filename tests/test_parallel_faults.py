"""A worker killed mid-task, and bad input, on every backend.

local and Dask re-run the dead worker's tasks on another worker and the run
completes; MPI stops every rank, says which rank process died and marks the
run partial; bad settings get one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from greenkd.devices import allowed_cores

pytest.register_assert_rewrite("parallel_fixtures")  # also a plugin (pytest_plugins below)
from parallel_fixtures import (  # noqa: E402
    GREENKD,
    RecordingReporter,
    bound_to,
    descendants,
    parallel_env,
    read_tasks,
    run_cli,
    tiny_config,
)

pytest_plugins = ("parallel_fixtures",)  # small_teacher, parallel_root

TASKS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


def _kill_device_1_worker_mid_task(out):
    """An epoch hook: at the first epoch of a task planned on device 1, SIGKILL that device's worker."""
    killed: dict = {}

    def on_epoch(task: str, epoch: int) -> None:
        if killed:
            return
        plan = json.loads((out / "plan.json").read_text())
        if task not in plan["assignment"][1]:
            return
        cores = json.loads((out / "config.json").read_text())["meta"]["device_cores"]["cpuset1"]
        [victim] = bound_to(set(cores), descendants())  # device 1's worker: pinned to its core
        victim.kill()  # not waited for here: its parent reaps it and must see the signal
        killed.update(pid=victim.pid, task=task, ts=time.time())

    return on_epoch, killed


def _check_rerun_elsewhere(summary: dict, out, killed: dict) -> None:
    assert killed, "no worker was killed"
    assert summary["status"] == "complete"
    rows = {r["task"]: r for r in read_tasks(out)}
    assert sorted(rows) == TASKS
    [lost] = summary["lost_workers"]
    assert lost["device"] == "cpuset1" and lost["pid"] == killed["pid"]
    assert killed["task"] in lost["in_flight"]
    rerun = rows[killed["task"]]
    assert int(rerun["pid"]) != killed["pid"]
    assert float(rerun["start"]) >= killed["ts"] - 0.5  # started again after the kill
    # nothing the dead worker was doing came back from it
    for row in rows.values():
        if int(row["pid"]) == killed["pid"]:
            assert float(row["end"]) < killed["ts"]


@pytest.mark.parametrize("fuse", [False, True], ids=["independent", "fused"])
def test_local_worker_killed_mid_task_has_its_tasks_rerun_on_the_other_worker(
    small_teacher, parallel_root, tmp_path, monkeypatch, fuse
):
    from greenkd.distill.run import distill

    for key, value in parallel_env(parallel_root).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    on_epoch, killed = _kill_device_1_worker_mid_task(out)
    reporter = RecordingReporter(on_epoch)
    # no per-block costs after a fused pass: timing only, read by no test here
    cfg = tiny_config(small_teacher, out, sched="binpack", fuse=fuse, block_costs=False)
    summary = distill(cfg, reporter=reporter)
    _check_rerun_elsewhere(summary, out, killed)
    [lost] = summary["lost_workers"]
    assert lost["reason"] == "killed by SIGKILL"
    rows = {r["task"]: r for r in read_tasks(out)}
    for name in lost["requeued"]:  # the dead worker's unfinished list went to the survivor
        assert rows[name]["device"] == "cpuset0"
    assert any(name == "worker-lost" and "SIGKILL" in detail for name, detail in reporter.phases)
    left = [p for p in descendants() if "greenkd.executors.worker" in " ".join(p.cmdline())]
    assert not left, "worker processes left behind"


@pytest.mark.parametrize("fuse", [False, True], ids=["independent", "fused"])
def test_dask_worker_killed_mid_task_has_its_task_rerun_elsewhere(
    small_teacher, parallel_root, tmp_path, monkeypatch, fuse
):
    from greenkd.distill.run import distill

    for key, value in parallel_env(parallel_root).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    on_epoch, killed = _kill_device_1_worker_mid_task(out)
    cfg = tiny_config(small_teacher, out, sched="rr", backend="dask", fuse=fuse, block_costs=False)
    summary = distill(cfg, reporter=RecordingReporter(on_epoch))
    _check_rerun_elsewhere(summary, out, killed)


# hydra's report when rank 1 (pid 24986) was killed and its clean-up then killed rank 0 (24985):
# it names the lowest rank that ended abnormally, not the first to end
HYDRA_AFTER_CLEANUP = """
===================================================================================
=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES
=   PID 24985 RUNNING AT vm
=   EXIT CODE: 9
=   CLEANING UP REMAINING PROCESSES
=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES
===================================================================================
YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)
""".splitlines()


def test_the_rank_seen_to_end_first_is_named_not_only_the_one_hydra_reports():
    from greenkd.executors.mpi import _failure

    assert _failure(9, HYDRA_AFTER_CLEANUP) == (
        "MPI rank process 24985 on vm ended (Killed (signal 9)); mpiexec stopped the other ranks"
    )
    assert _failure(9, HYDRA_AFTER_CLEANUP, [24985]) == _failure(9, HYDRA_AFTER_CLEANUP)
    assert _failure(9, HYDRA_AFTER_CLEANUP, [24986]) == (
        "MPI rank process 24986 on vm ended first; mpiexec stopped the other ranks and reports "
        "process 24985: Killed (signal 9)"
    )
    both = _failure(9, HYDRA_AFTER_CLEANUP, [24985, 24986])
    assert both.startswith("MPI rank process 24985 or 24986 on vm ended first (they had ended")


def test_mpi_rank_killed_mid_task_stops_every_rank_and_marks_the_run_partial(
    small_teacher, parallel_root, tmp_path
):
    out = tmp_path / "run"
    cfg = tiny_config(small_teacher, out, sched="rr", backend="mpi")
    cfg.write(tmp_path / "config.json")
    launcher = subprocess.Popen(
        [*GREENKD, "distill", "--config", str(tmp_path / "config.json"), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **parallel_env(parallel_root)},
    )
    try:
        deadline = time.monotonic() + 240
        # rank 0 has finished a task (its row is written) while rank 1 is still training
        while not ((out / "tasks.csv").is_file() and read_tasks(out)):
            assert launcher.poll() is None, launcher.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "rank 0 finished no task"
            time.sleep(0.1)
        everything = descendants(launcher.pid)  # mpiexec, its proxy, both ranks
        cores = json.loads((out / "config.json").read_text())["meta"]["device_cores"]["cpuset1"]
        [victim] = bound_to(set(cores), everything)
        victim.kill()
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("greenkd: error: MPI rank process ")
    assert str(victim.pid) in last and "signal 9" in last and "marked partial" in last
    _, alive = psutil.wait_procs(everything, timeout=15)
    assert not alive, f"left behind: {alive}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and str(victim.pid) in summary["error"]
    rows = read_tasks(out)
    assert summary["tasks_done"] == len(rows) >= 1
    assert all(int(r["pid"]) != victim.pid for r in rows)  # rank 1 never reached the gather


def _too_many_devices() -> str:
    return str(len(allowed_cores()) + 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "foo"], "unknown backend 'foo'"),
        (["--gpus", _too_many_devices()], "--allow-oversubscribe"),
        (["--backend", "mpi", "--gpus", _too_many_devices()], "--allow-oversubscribe"),
        (["--backend", "mpi", "--sched", "ws"], "--sched ws needs a dynamic backend"),
        (["--cores-per-device", "0"], "--cores-per-device must be >= 1"),
        (["--timings", "{tmp}"], "cannot be read"),
        (["--timings", "{tmp}/binary.csv"], "cannot be read"),
        (["--timings", "{tmp}/missing.csv"], "does not exist"),
        (["--timings", "{tmp}/partial.csv", "--sched", "binpack"], "has no time for conv2"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(
    args, message, small_teacher, parallel_root, tmp_path
):
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81task,seconds\n")
    (tmp_path / "partial.csv").write_text("task,seconds\nconv1,3\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    common = ["--model", str(small_teacher), "--n-train", "512", "--n-val", "128", "--quiet"]
    done = run_cli(
        ["distill", *common, "--out", str(tmp_path / "run"), *args], parallel_env(parallel_root)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greenkd: error:"), done.stderr
    assert message in lines[0]

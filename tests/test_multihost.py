"""Multi-host runs on one machine: two "hosts", each a group of workers with its own identity.

What a second machine would give is given at the boundary the real code reads: each "host"'s
workers run with their own `GREENKD_HOST` and their own fake msr driver (a FUSE mount answering
like the kernel's, `profiler_fakes`) whose package draws a known, different power; host B's
clock can be shifted (`GREENKD_CLOCK_SHIFT_S`). MPI (mpiexec's MPMD form, one rank per "host")
and Dask (a scheduler and one `dask worker` per "host") run for real.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from profiler_fakes import MsrMachine, fuse_unavailable_reason, mounted_msr, write_topology

pytest.register_assert_rewrite("parallel_fixtures")
from parallel_fixtures import (  # noqa: E402
    RecordingReporter,
    parallel_env,
    read_tasks,
    run_cli,
    tiny_config,
)

pytest_plugins = ("parallel_fixtures",)  # small_teacher, parallel_root

# the runs: real MPI and Dask runs on two fake msr drivers (FUSE)
two_host_run = pytest.mark.skipif(
    fuse_unavailable_reason() is not None, reason=fuse_unavailable_reason() or ""
)

POWER_W = {"hostA": 30.0, "hostB": 70.0}  # each host's package power
SHIFT_S = 40.0  # host B's clock runs this far ahead in the clock-offset runs
BIN = Path(sys.executable).parent
SHORT = {"epochs": 2, "eval_every": 2}  # the runs only need tasks on both hosts, a few seconds


def _feed(machines: dict[str, MsrMachine], stop: threading.Event) -> None:
    """Every 10 ms each package consumes its host's power times the time since the last step."""
    last = time.monotonic()
    while not stop.wait(0.01):
        now = time.monotonic()
        for host, machine in machines.items():
            machine.add_package_joules(0, POWER_W[host] * (now - last))
        last = now


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory, parallel_root) -> Iterator[dict[str, dict[str, str]]]:
    """Per "host", the environment of its workers: identity, its own msr driver and topology."""
    tmp_path = tmp_path_factory.mktemp("hosts")
    cpus = {0: (0, 0), 1: (0, 1)}
    machines = {host: MsrMachine(cpus) for host in POWER_W}
    envs = {}
    with (
        mounted_msr(machines["hostA"], tmp_path / "hostA" / "cpu") as root_a,
        mounted_msr(machines["hostB"], tmp_path / "hostB" / "cpu") as root_b,
    ):
        for host, root in (("hostA", root_a), ("hostB", root_b)):
            write_topology(tmp_path / host / "sys", cpus)
            envs[host] = {
                **parallel_env(parallel_root),
                "GREENKD_HOST": host,
                "GREENKD_MSR_ROOT": str(root),
                "GREENKD_SYSFS_ROOT": str(tmp_path / host / "sys"),
            }
        stop = threading.Event()
        feeder = threading.Thread(target=_feed, args=(machines, stop), daemon=True)
        feeder.start()
        try:
            yield envs
        finally:
            stop.set()
            feeder.join()


def _samples(run: Path, host: str) -> list[dict[str, str]]:
    with (run / "hosts" / host / "samples.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _check_complete_on_both_hosts(run: Path, summary: dict) -> None:
    """A complete run whose tasks ran on both hosts, each sampled once, energy complete."""
    assert summary["status"] == "complete"
    _check_each_host_sampled_once(run, summary)
    assert summary["hosts"]["energy_status"] == "complete"
    assert {r["host"] for r in read_tasks(run)} == {"hostA", "hostB"}


def _check_each_host_sampled_once(run: Path, summary: dict) -> None:
    hosts = summary["hosts"]
    assert sorted(p.name for p in (run / "hosts").iterdir()) == ["hostA", "hostB"]
    assert [h["host"] for h in hosts["hosts"]] == ["hostA", "hostB"]
    for host in POWER_W:
        rows = _samples(run, host)
        stamps = sorted({float(r["ts"]) for r in rows if r["metric"] == "energy"})
        # one 1 Hz sampler: one energy row per package per tick, at most one tick a second plus
        # the final sample at stop (a second sampler on the host would double the rows)
        package = [
            r
            for r in rows
            if (r["sensor"], r["device"], r["metric"]) == ("msr", "package0", "energy")
        ]
        assert len(package) == len(stamps) >= 3
        assert len(stamps) <= (stamps[-1] - stamps[0]) * 1.0 + 2
    seconds = hosts["seconds"]
    assert seconds > 3
    expected = sum(POWER_W.values()) * seconds
    assert hosts["node_energy_j"] == pytest.approx(expected, rel=0.02)
    for h in hosts["hosts"]:
        assert h["node_energy_j"] == pytest.approx(POWER_W[h["host"]] * seconds, rel=0.02)
        assert [(d["sensor"], d["device"]) for d in h["domains"]] == [("msr", "package0")]


# --------------------------------------------------------------------------- MPI


def _mpi_run(
    run: Path, config: Path, envs: dict[str, dict[str, str]]
) -> subprocess.CompletedProcess:
    """mpiexec's MPMD form: rank 0 with host A's environment, rank 1 with host B's."""
    command = [str(BIN / "mpiexec")]
    for k, (_host, env) in enumerate(envs.items()):
        if k:
            command.append(":")
        command += ["-n", "1"]
        for key, value in env.items():
            command += ["-env", key, value]
        command += [sys.executable, "-m", "greenkd", "distill", "--config", str(config), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ)


@pytest.fixture(scope="module")
def mpi_two_hosts(small_teacher, two_hosts, tmp_path_factory) -> tuple[Path, dict]:
    """A 2-rank MPI run, one rank per "host", host B's clock 40 s ahead (one run, two tests)."""
    tmp_path = tmp_path_factory.mktemp("mpi")
    run = tmp_path / "run"
    cfg = tiny_config(small_teacher, run, sched="rr", backend="mpi", **SHORT)
    cfg.write(tmp_path / "config.json")
    envs = {host: dict(env) for host, env in two_hosts.items()}
    envs["hostB"]["GREENKD_CLOCK_SHIFT_S"] = str(SHIFT_S)
    done = _mpi_run(run, tmp_path / "config.json", envs)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, json.loads((run / "summary.json").read_text())


@two_host_run
@pytest.mark.slow
def test_mpi_run_samples_each_host_once_and_sums_their_energy(mpi_two_hosts):
    run, summary = mpi_two_hosts
    _check_complete_on_both_hosts(run, summary)


@two_host_run
@pytest.mark.slow
def test_clock_offset_lines_a_shifted_hosts_samples_up_with_its_tasks(mpi_two_hosts):
    run, summary = mpi_two_hosts
    by_host = {h["host"]: h for h in summary["hosts"]["hosts"]}
    # measured against rank 0's host: B is 40 s ahead, A is the reference
    assert by_host["hostA"]["clock_offset_start_s"] == 0.0
    assert by_host["hostB"]["clock_offset_start_s"] == pytest.approx(-SHIFT_S, abs=0.5)
    assert by_host["hostB"]["clock_drift_s"] == pytest.approx(0.0, abs=0.5)
    window = (summary["hosts"]["window_start_ts"], summary["hosts"]["window_end_ts"])
    b_samples = [float(r["ts"]) for r in _samples(run, "hostB")]
    # B's samples sit in the run's window, not 40 s after it
    assert window[0] - 1.5 <= min(b_samples) and max(b_samples) <= window[1] + 1.5
    b_tasks = [r for r in read_tasks(run) if r["host"] == "hostB"]
    assert b_tasks
    for task in b_tasks:  # B's tasks, corrected too, lie within B's samples and the run
        start, end = float(task["start"]), float(task["end"])
        assert summary["start_ts"] <= start < end <= summary["end_ts"]
        assert min(b_samples) <= start and end <= max(b_samples)
    # and B's energy is counted in full over the window (uncorrected, it would fall outside it)
    assert by_host["hostB"]["node_energy_j"] == pytest.approx(
        POWER_W["hostB"] * summary["hosts"]["seconds"], rel=0.02
    )


# --------------------------------------------------------------------------- Dask


class DaskCluster:
    """A scheduler and one `dask worker` per "host", each worker with its host's environment."""

    def __init__(self, tmp: Path, envs: dict[str, dict[str, str]]) -> None:
        self.file = tmp / "scheduler.json"
        common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.file),
            ],
            **common,
        )
        self.workers: dict[str, subprocess.Popen] = {}
        deadline = time.monotonic() + 60
        while not self.file.is_file():  # the scheduler writes its address once it listens
            assert self.scheduler.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]
        for name, (host, env) in enumerate(envs.items()):
            self.workers[host] = subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "worker",
                    "--scheduler-file",
                    str(self.file),
                    "--nthreads",
                    "1",
                    "--resources",
                    "device=1",
                    "--name",
                    str(name),
                    "--no-nanny",
                    "--no-dashboard",
                ],
                env={**os.environ, **env},
                **common,
            )

    def close(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers.values(), self.scheduler]:
            try:  # a worker closing gracefully sometimes lingered 20 s: nothing of it is checked
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def dask_two_hosts(two_hosts, tmp_path, parallel_root, monkeypatch) -> Iterator[DaskCluster]:
    for key, value in parallel_env(parallel_root).items():
        monkeypatch.setenv(key, value)
    cluster = DaskCluster(tmp_path, two_hosts)
    try:
        yield cluster
    finally:
        cluster.close()


@two_host_run
@pytest.mark.slow
def test_dask_run_samples_each_host_once_and_sums_their_energy(
    small_teacher, dask_two_hosts, tmp_path
):
    from greenkd.distill.run import distill

    run = tmp_path / "dask-run"
    cfg = tiny_config(
        small_teacher,
        run,
        sched="rr",
        backend="dask",
        scheduler_address=dask_two_hosts.address,
        **SHORT,
    )
    summary = distill(cfg)
    _check_complete_on_both_hosts(run, summary)


@two_host_run
@pytest.mark.slow
def test_dask_host_whose_worker_dies_keeps_its_samples_and_is_named_partial(
    small_teacher, dask_two_hosts, tmp_path
):
    from greenkd.distill.run import distill

    run = tmp_path / "dask-run"
    killed: dict = {}

    def on_epoch(task: str, epoch: int) -> None:
        plan = json.loads((run / "plan.json").read_text())
        if killed or task not in plan["assignment"][1]:  # device 1: worker "1", host B
            return
        victim = dask_two_hosts.workers["hostB"]
        victim.kill()
        victim.wait()
        killed.update(ts=time.time(), task=task)

    cfg = tiny_config(
        small_teacher,
        run,
        sched="rr",
        backend="dask",
        scheduler_address=dask_two_hosts.address,
        **SHORT,
    )
    summary = distill(cfg, reporter=RecordingReporter(on_epoch))
    assert killed, "host B's worker was never killed"
    assert summary["status"] == "complete"  # Dask re-ran B's task on host A
    hosts = summary["hosts"]
    assert hosts["energy_status"] == "partial"
    [silent] = hosts["silent_hosts"]
    assert silent["host"] == "hostB"
    assert killed["ts"] - 2.0 <= silent["stopped_ts"] <= killed["ts"]
    by_host = {h["host"]: h for h in hosts["hosts"]}
    b = by_host["hostB"]
    assert b["status"] == "partial"
    assert not (run / "hosts" / "hostB" / "profile.json").exists()
    # what B sent before it died is kept and counted: its power over the time it was heard
    heard = silent["stopped_ts"] - hosts["window_start_ts"]
    assert heard > 0 and len(_samples(run, "hostB")) > 0
    assert b["node_energy_j"] == pytest.approx(POWER_W["hostB"] * heard, rel=0.05, abs=2.0)
    assert by_host["hostA"]["status"] == "complete"
    assert by_host["hostA"]["node_energy_j"] == pytest.approx(
        POWER_W["hostA"] * hosts["seconds"], rel=0.02
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "mpi", "--gpus", "2", "--hosts", "h1,h2,h3"], "does not split evenly"),
        (["--backend", "mpi", "--hosts", "h1,,h2"], "has an empty name"),
        (["--backend", "mpi", "--hosts", "h1", "--hostfile", "{tmp}/hosts"], "not both"),
        (["--backend", "mpi", "--hostfile", "{tmp}/missing"], "cannot be read"),
        (["--backend", "mpi", "--hostfile", "{tmp}/empty"], "names no host"),
        (["--backend", "dask", "--hosts", "h1,h2"], "are for --backend mpi"),
    ],
)
def test_bad_host_settings_get_one_line_and_exit_code_2(
    args, message, small_teacher, parallel_root, tmp_path
):
    (tmp_path / "hosts").write_text("h1:2\nh2:2\n")
    (tmp_path / "empty").write_text("# nobody\n\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    common = ["--model", str(small_teacher), "--quiet", "--out", str(tmp_path / "run")]
    done = run_cli(["distill", *common, *args], parallel_env(parallel_root))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greenkd: error:"), done.stderr
    assert message in lines[0]

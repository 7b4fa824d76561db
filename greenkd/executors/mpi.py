"""The MPI backend (mpi4py): one rank per device, as in the paper's Algorithm 1.

`mpiexec -n N greenkd distill --backend mpi ...` starts N ranks; each binds
itself to its device (from its rank on its node) before TensorFlow is imported.
After a start-up handshake (every rank's device, for the run's records), rank 0
loads data and teacher (training and caching it if needed), finds the targets
and makes the plan; then the two synchronisations of §3.3:

1. rank 0 broadcasts the plan (and its run settings); every rank loads the
   cached teacher and trains its planned tasks;
2. rank 0 gathers every rank's results (block weights as numpy arrays with
   their metrics, never pickled models), assembles and fine-tunes.

Only rank 0 writes the run directory. Waiting ranks sleep on a non-blocking
barrier instead of spinning in MPI's busy poll. Work stealing needs a dynamic
backend, so `--sched ws` is refused here.

`greenkd distill --backend mpi --gpus N` outside mpiexec starts
`mpiexec -n N` itself (the mpich wheel's, beside this Python) and watches it:
if a rank dies, mpiexec ends the others, and the launcher reports which rank
process died and how, and marks the run directory partial.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from greenkd.config import RunConfig
from greenkd.devices import Device, bind, plan_devices
from greenkd.errors import GreenkdError
from greenkd.executors.base import Progress, SilentProgress, TaskResult, Work, check_plan

T = TypeVar("T")

POLL_S = 0.05
# set by mpiexec/PMI in every rank: hydra (MPICH), Open MPI, PMIx launchers
_RANK_ENV = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


class MpiRunFailed(GreenkdError):
    """An MPI run that started but did not finish (a rank died or failed)."""


def under_mpiexec() -> bool:
    """True in a process started by mpiexec (or another MPI launcher)."""
    return any(name in os.environ for name in _RANK_ENV)


def check(cfg: RunConfig) -> None:
    """Settings the MPI backend cannot run, as one clear error before anything starts."""
    if cfg.sched == "ws":
        raise GreenkdError(
            "--sched ws needs a dynamic backend: use --backend local or dask for work "
            "stealing; MPI runs static plans (rr, binpack, opt)"
        )


def _sleep_until(request) -> None:
    """Wait for a non-blocking MPI request without MPI's busy poll (the core stays free)."""
    while not request.Test():
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- ranks


class MpiExecutor:
    """Rank 0's executor: broadcast the plan, train rank 0's tasks, gather the others'."""

    def __init__(self, comm, device: Device) -> None:
        self.comm = comm
        self.device = device
        self.lost_workers: list[dict[str, Any]] = []

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]:
        comm = self.comm
        plan = work.plan
        check_plan(plan, devices, "MPI")  # devices: one per rank
        # synchronisation 1: the plan and what to load, to every rank
        _sleep_until(comm.Ibarrier())
        comm.bcast({"source": work.source, "plan": plan}, root=0)
        yield from work.here.train(list(plan.assignment[0]), self.device.label, progress)
        # synchronisation 2: every rank's results, to rank 0
        _sleep_until(comm.Ibarrier())
        gathered = comm.gather([], root=0)
        for results in gathered[1:]:
            yield from results


def _follower(comm, device: Device) -> None:
    """Ranks 1..N-1: receive the plan, train the planned tasks, send the results to rank 0."""
    _sleep_until(comm.Ibarrier())
    message = comm.bcast(None, root=0)
    names = list(message["plan"].assignment[comm.rank])
    results = []
    if names:
        trainer = message["source"].load()
        results = list(trainer.train(names, device.label, SilentProgress()))
    _sleep_until(comm.Ibarrier())
    comm.gather(results, root=0)


def run_rank(cfg: RunConfig, lead: Callable[[MpiExecutor, list[Device]], T]) -> T | None:
    """The body of `greenkd distill --backend mpi` in one rank; rank 0 returns what `lead` does.

    Every rank binds itself to its device first; rank 0 then calls
    `lead(executor, devices)` (the run: set-up, plan, tasks through the executor,
    assembly), while the other ranks follow the plan it broadcasts. Any error ends
    the whole job (MPI_Abort) after its one-line message, so no rank is left
    waiting for a broadcast or a gather that will not come.
    """
    from mpi4py import MPI  # no TensorFlow yet: the rank binds its device first

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    try:
        check(cfg)
        if cfg.gpus not in (1, size):
            raise GreenkdError(
                f"--gpus {cfg.gpus} but mpiexec started {size} rank(s): one rank per device; "
                f"use mpiexec -n {cfg.gpus}"
            )
        cfg = cfg.replace(gpus=size)
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local = plan_devices(
            node.size,
            allow_oversubscribe=cfg.allow_oversubscribe,
            cores_per_device=cfg.cores_per_device,
        )
        device = local[node.rank]
        # what rank 0 records: each rank's device, renumbered by rank (several nodes
        # give several cpuset0 or gpu0, told apart by host in tasks.csv)
        devices = [dataclasses.replace(d, index=r) for r, d in enumerate(comm.allgather(device))]
        bind(device)
        from greenkd.tfsetup import configure_tensorflow  # after binding

        configure_tensorflow(device)
        if rank == 0:
            return lead(MpiExecutor(comm, device), devices)
        _follower(comm, device)
        return None
    except BaseException as exc:
        if isinstance(exc, GreenkdError):
            message = str(exc)
            code = 2
        else:
            traceback.print_exc(file=sys.stderr)
            message = f"{type(exc).__name__}: {exc}"
            code = 1
        if size > 1:
            print(
                f"greenkd: error: MPI rank {rank} of {size}: {message}", file=sys.stderr, flush=True
            )
            comm.Abort(code)
        raise


# --------------------------------------------------------------------------- launcher


def mpiexec_path() -> str:
    """The mpich wheel's mpiexec beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file():
        return str(beside)
    found = shutil.which("mpiexec")
    if found:
        return found
    raise GreenkdError("no mpiexec found: install the mpich wheel (pip install mpich)")


_BAD_PID = re.compile(r"PID (\d+) RUNNING AT (\S+)")
_EXIT_STRING = re.compile(r"EXIT STRING: (.+)")
_EXIT_CODE = re.compile(r"EXIT CODE: (\d+)")


def _pump(stream, sink, tail: collections.deque) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()
        tail.append(line.rstrip("\n"))


def launch(cfg: RunConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Start `mpiexec -n cfg.gpus greenkd distill --backend mpi` and return rank 0's summary.

    Bad settings fail here, before any rank starts; a run whose ranks fail raises
    MpiRunFailed with one line saying which rank process died and how.
    """
    from greenkd.executors import preflight
    from greenkd.rundir import RunDir

    preflight(cfg)
    with tempfile.TemporaryDirectory(prefix="greenkd-mpi-") as tmp:
        config = Path(tmp) / "config.json"
        cfg.write(config)
        command = [mpiexec_path(), "-n", str(cfg.gpus), sys.executable, "-m", "greenkd"]
        command += ["distill", "--config", str(config)] + (["--quiet"] if quiet else [])
        tail: collections.deque = collections.deque(maxlen=60)
        # the ranks write to pipes: keep rich's lines as wide as this terminal
        env = {**os.environ, "COLUMNS": str(shutil.get_terminal_size().columns)}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        pumps = [
            threading.Thread(target=_pump, args=(process.stdout, sys.stdout, tail), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, sys.stderr, tail), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        try:
            code = process.wait()
        except BaseException:
            process.terminate()  # mpiexec forwards it to the ranks and ends them
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        finally:
            for pump in pumps:
                pump.join(timeout=5)
    run = RunDir(cfg.out)
    summary = run.read_summary()
    if code == 0 and summary is not None and summary.get("status") == "complete":
        return summary
    reason = _failure(code, list(tail))
    if summary is None or summary.get("status") == "complete":
        # rank 0 was killed before it could write summary.json: write it for it
        done = _task_rows(run.tasks_csv)
        summary = {
            "status": "partial" if done else "failed",
            "error": reason,
            "tasks_done": done,
            "backend": "mpi",
            "n_devices": cfg.gpus,
            "end_ts": time.time(),
        }
        run.write_summary(summary)
    where = f"; finished tasks are in {run.tasks_csv}" if summary.get("tasks_done") else ""
    raise MpiRunFailed(f"{reason}; the run is marked {summary.get('status')}{where}")


def _task_rows(path: Path) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    return max(0, len([line for line in lines if line.strip()]) - 1)


def _failure(code: int, tail: list[str]) -> str:
    """One line on why mpiexec failed, from its exit code and its last lines."""
    text = "\n".join(tail)
    ours = [line for line in tail if line.startswith("greenkd: error:")]
    bad = _BAD_PID.search(text)
    if bad:
        how = _EXIT_STRING.search(text)
        exit_code = _EXIT_CODE.search(text)
        detail = (
            how.group(1).strip()
            if how
            else f"exit code {exit_code.group(1) if exit_code else code}"
        )
        first = ours[0].removeprefix("greenkd: error: ") + "; " if ours else ""
        return (
            f"{first}MPI rank process {bad.group(1)} on {bad.group(2)} ended ({detail}); "
            "mpiexec stopped the other ranks"
        )
    if ours:
        return ours[0].removeprefix("greenkd: error: ")
    return f"mpiexec exited with code {code}"

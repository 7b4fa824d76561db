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

import atexit
import collections
import dataclasses
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

from greenkd.config import RunConfig
from greenkd.devices import Device, bind, plan_devices
from greenkd.errors import GreenkdError
from greenkd.executors.base import Progress, SilentProgress, TaskResult, Work, check_plan
from profilers.hostid import host_name, host_time
from profilers.hosts import (
    OFFSET_EXCHANGES,
    HostSampler,
    host_energy,
    measure_offset,
    sampled_hosts,
)

T = TypeVar("T")

POLL_S = 0.05
CLOCK_TAG = 77  # point-to-point messages of the clock-offset exchanges
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
    host_list(cfg)


def host_list(cfg: RunConfig) -> list[str]:
    """The hosts of `--hosts` or `--hostfile` (none: mpiexec's default, this host).

    `--gpus` counts every device of the run, so each host gets gpus / hosts ranks (mpiexec
    `-ppn`): the count must divide evenly.
    """
    if cfg.hosts and cfg.hostfile:
        raise GreenkdError("give --hosts or --hostfile, not both")
    if (cfg.hosts or cfg.hostfile) and cfg.backend != "mpi":
        raise GreenkdError(
            "--hosts and --hostfile are for --backend mpi; a Dask cluster's hosts are those of "
            "its workers (start them there and give --scheduler-address)"
        )
    if cfg.hosts:
        hosts = [h.strip() for h in cfg.hosts.split(",")]
        if not all(hosts):
            raise GreenkdError(f"--hosts {cfg.hosts!r} has an empty name: write h1,h2")
    elif cfg.hostfile:
        try:
            lines = Path(cfg.hostfile).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise GreenkdError(f"--hostfile {cfg.hostfile} cannot be read: {exc}") from None
        # mpich's format: one host per line, optionally host:slots; # starts a comment
        hosts = [ln.split("#")[0].split(":")[0].strip() for ln in lines]
        hosts = [h for h in hosts if h]
        if not hosts:
            raise GreenkdError(f"--hostfile {cfg.hostfile} names no host")
    else:
        return []
    if len(set(hosts)) != len(hosts):
        raise GreenkdError(f"a host is named twice in {cfg.hosts or cfg.hostfile}")
    if cfg.gpus % len(hosts):
        raise GreenkdError(
            f"--gpus {cfg.gpus} does not split evenly over {len(hosts)} hosts: --gpus counts "
            f"every device of the run (a multiple of {len(hosts)})"
        )
    return hosts


def _sleep_until(request) -> None:
    """Wait for a non-blocking MPI request without MPI's busy poll (the core stays free)."""
    while not request.Test():
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- host samplers


class _Hosts:
    """One sampler per host on a run whose ranks sit on several hosts (`profilers.hosts`).

    Collective: every rank enters `start` and `stop`. The lowest rank of each host samples it;
    its clock offset to rank 0's host is measured by a few round trips with rank 0, at start
    and at end. Rank 0 learns every host's start offset (to correct task times) and, after the
    stop, sums the hosts' energy over the window between the two.
    """

    def __init__(self, comm, run_dir: str) -> None:
        self.comm = comm
        self.run_dir = run_dir
        hosts = comm.allgather(host_name())
        self.host_of = hosts
        self.leaders = sorted({h: r for r, h in reversed(list(enumerate(hosts)))}.values())
        self.active = len(set(hosts)) > 1
        self.sampler: HostSampler | None = None
        self.offsets: dict[str, float] = {}
        self.window_start: float | None = None
        self.hosts: dict[str, Any] | None = None

    def _offset(self) -> float:
        """This leader's clock offset to rank 0 (rank 0 answers every leader in turn)."""
        comm = self.comm
        if comm.rank == 0:
            for leader in self.leaders[1:]:
                for _ in range(OFFSET_EXCHANGES):
                    comm.recv(source=leader, tag=CLOCK_TAG)
                    comm.send(host_time(), dest=leader, tag=CLOCK_TAG)
            return 0.0
        if comm.rank not in self.leaders:
            return 0.0

        def ask() -> float:
            comm.send(None, dest=0, tag=CLOCK_TAG)
            return comm.recv(source=0, tag=CLOCK_TAG)

        return measure_offset(ask)

    def start(self) -> None:
        if not self.active:
            return
        offset = self._offset()
        if self.comm.rank in self.leaders:
            self.sampler = HostSampler(self.run_dir, offset).start()
        leaders = self.comm.allgather(offset if self.sampler is not None else None)
        self.offsets = {self.host_of[r]: o for r, o in enumerate(leaders) if o is not None}
        self.window_start = host_time()  # rank 0's: every sampler has its first sample

    def correct(self, result: TaskResult) -> TaskResult:
        """A task's times on rank 0's clock."""
        offset = self.offsets.get(result.host, 0.0)
        result.start, result.end = result.start + offset, result.end + offset
        return result

    def stop(self) -> None:
        if not self.active:
            return
        end = host_time()  # rank 0 reads it before any sampler takes its last sample
        offset = self._offset()
        if self.sampler is not None:
            self.sampler.stop(offset)
        _sleep_until(self.comm.Ibarrier())  # every host's profile.json is written
        if self.comm.rank == 0 and self.window_start is not None:
            self.hosts = host_energy(self.run_dir, self.window_start, end)


# --------------------------------------------------------------------------- ranks


class MpiExecutor:
    """Rank 0's executor: broadcast the plan, train rank 0's tasks, gather the others'."""

    def __init__(self, comm, device: Device) -> None:
        self.comm = comm
        self.device = device
        self.lost_workers: list[dict[str, Any]] = []
        self.hosts: dict[str, Any] | None = None  # a multi-host run's energy, after the run

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]:
        comm = self.comm
        plan = work.plan
        check_plan(plan, devices, "MPI")  # devices: one per rank
        # synchronisation 1: the plan and what to load, to every rank
        _sleep_until(comm.Ibarrier())
        comm.bcast({"source": work.source, "plan": plan}, root=0)
        hosts = _Hosts(comm, work.source.cfg.out)
        hosts.start()  # one sampler per host, before the first task
        for result in work.here.train(list(plan.assignment[0]), self.device.label, progress):
            yield hosts.correct(result)
        # synchronisation 2: every rank's results, to rank 0
        _sleep_until(comm.Ibarrier())
        gathered = comm.gather([], root=0)
        hosts.stop()  # after the last task
        self.hosts = hosts.hosts
        for results in gathered[1:]:
            for result in results:
                yield hosts.correct(result)


def _follower(comm, device: Device) -> None:
    """Ranks 1..N-1: receive the plan, train the planned tasks, send the results to rank 0."""
    _sleep_until(comm.Ibarrier())
    message = comm.bcast(None, root=0)
    hosts = _Hosts(comm, message["source"].cfg.out)
    hosts.start()
    names = list(message["plan"].assignment[comm.rank])
    results = []
    if names:
        trainer = message["source"].load()
        results = list(trainer.train(names, device.label, SilentProgress()))
    _sleep_until(comm.Ibarrier())
    comm.gather(results, root=0)
    hosts.stop()


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
    _mark_alive()
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
            framework=cfg.framework,
        )
        device = local[node.rank]
        # what rank 0 records: each rank's device, renumbered by rank (several nodes
        # give several cpuset0 or gpu0, told apart by host in tasks.csv)
        devices = [dataclasses.replace(d, index=r) for r, d in enumerate(comm.allgather(device))]
        bind(device)
        from greenkd.framework import configure  # after binding

        configure(device)
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


# a folder where each rank of a launched run keeps a file named by its pid while it runs: a rank
# whose interpreter finishes removes it; one killed, or ended by MPI_Abort after its error line
# (the rank to name then too), leaves it
_ALIVE_ENV = "GREENKD_MPI_ALIVE_DIR"


def _mark_alive() -> None:
    """In a rank of a launched run: its file, removed when the process exits cleanly."""
    folder = os.environ.get(_ALIVE_ENV)
    if folder:
        marker = Path(folder) / str(os.getpid())
        marker.touch()
        atexit.register(marker.unlink, missing_ok=True)


class _RankEnds(threading.Thread):
    """The order in which the rank processes of a local mpiexec end.

    hydra's report names the lowest rank that ended abnormally; after its clean-up has killed
    the other ranks (SIGKILL), that is usually rank 0, whichever rank died first. This thread
    finds the rank processes (the children of mpiexec's proxies) and blocks on a pidfd of each
    (Linux 5.3+; elsewhere it records nothing and hydra's word stands), so it costs no CPU while
    they run; it records which ended at each of its wakes: one process, or the few that ended
    together before it woke on a loaded machine.
    """

    def __init__(self, mpiexec: subprocess.Popen, alive: Path, ranks: int) -> None:
        super().__init__(name="mpi-rank-watch", daemon=True)
        self.pid = mpiexec.pid
        self.alive = alive
        self.ranks = ranks
        self.ended: list[list[int]] = []
        self.stop = threading.Event()

    def _new_ranks(self, seen: set[int]) -> list[int]:
        try:
            proxies = psutil.Process(self.pid).children()
            found = [rank.pid for proxy in proxies for rank in proxy.children()]
        except psutil.Error:
            return []
        return [pid for pid in found if pid not in seen]

    def run(self) -> None:
        if not hasattr(os, "pidfd_open"):
            return
        fds: dict[int, int] = {}  # pidfd -> rank pid
        seen: set[int] = set()
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                looking = len(seen) < self.ranks
                if looking:
                    for pid in self._new_ranks(seen):
                        seen.add(pid)
                        try:
                            fds[os.pidfd_open(pid)] = pid
                        except OSError:  # ended before it was found
                            self.ended.append([pid])
                # while ranks are still to be found: look again soon, then ever more rarely
                wait = (0.2 if time.monotonic() - started < 10 else 2.0) if looking else 1.0
                if not fds:
                    self.stop.wait(wait)
                    continue
                ready, _, _ = select.select(list(fds), [], [], wait)
                if ready:
                    self.ended.append(sorted(fds[fd] for fd in ready))
                    for fd in ready:
                        os.close(fd)
                        del fds[fd]
        finally:
            for fd in fds:
                os.close(fd)

    def first_killed(self) -> list[int]:
        """The rank process(es) that ended first without exiting cleanly; [] if not seen."""
        for group in self.ended:
            killed = [pid for pid in group if (self.alive / str(pid)).exists()]
            if killed:
                return killed
        return []


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
        command = [mpiexec_path(), "-n", str(cfg.gpus)]
        hosts = host_list(cfg)
        if hosts:  # hydra: the hosts, and the ranks on each
            where = ["-hosts", ",".join(hosts)] if cfg.hosts else ["-f", str(cfg.hostfile)]
            command += [*where, "-ppn", str(cfg.gpus // len(hosts))]
        command += [sys.executable, "-m", "greenkd"]
        command += ["distill", "--config", str(config)] + (["--quiet"] if quiet else [])
        tail: collections.deque = collections.deque(maxlen=60)
        alive = Path(tmp) / "alive"
        alive.mkdir()
        env = {
            **os.environ,
            # the ranks write to pipes: keep rich's lines as wide as this terminal
            "COLUMNS": str(shutil.get_terminal_size().columns),
            _ALIVE_ENV: str(alive),
        }
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        pumps = [
            threading.Thread(target=_pump, args=(process.stdout, sys.stdout, tail), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, sys.stderr, tail), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        watch = _RankEnds(process, alive, cfg.gpus)
        if not hosts:  # every rank a local process (on other hosts: hydra's word alone)
            watch.start()
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
            watch.stop.set()
            for pump in pumps:
                pump.join(timeout=5)
            if watch.is_alive():
                watch.join(timeout=5)
            first = watch.first_killed()  # before the folder goes
    summary = RunDir(cfg.out).read_summary()
    if code == 0 and summary is not None and summary.get("status") == "complete":
        return summary
    reason = _failure(code, list(tail), first)
    summary = failed_summary(cfg.out, cfg.gpus, reason)
    where = (
        f"; finished tasks are in {RunDir(cfg.out).tasks_csv}" if summary.get("tasks_done") else ""
    )
    raise MpiRunFailed(f"{reason}; the run is marked {summary.get('status')}{where}")


def failed_summary(out: str | os.PathLike[str], n_devices: int, reason: str) -> dict[str, Any]:
    """summary.json of a run whose ranks died, as launch() leaves it; returns it.

    Rank 0 killed before it wrote summary.json: written for it, partial (some tasks done) or
    failed. A run across hosts also gets `hosts`, what every host's sampler wrote before the
    ranks died (`profilers.hosts.sampled_hosts`): each host named with the time of its last
    sample, and its energy up to then, partial.
    """
    from greenkd.rundir import RunDir

    run = RunDir(out)
    summary = run.read_summary()
    changed = False
    if summary is None or summary.get("status") == "complete":
        done = _task_rows(run.tasks_csv)
        summary = {
            "status": "partial" if done else "failed",
            "error": reason,
            "tasks_done": done,
            "backend": "mpi",
            "n_devices": n_devices,
            "end_ts": time.time(),
        }
        changed = True
    if summary.get("hosts") is None:  # rank 0 never stopped the host samplers
        hosts = sampled_hosts(out)
        if hosts is not None:
            summary["hosts"] = hosts
            changed = True
    if changed:
        run.write_summary(summary)
    return summary


def _task_rows(path: Path) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    return max(0, len([line for line in lines if line.strip()]) - 1)


def _failure(code: int, tail: list[str], first: Sequence[int] = ()) -> str:
    """One line on why mpiexec failed, from its exit code and its last lines, and the rank
    process(es) seen to end first (`_RankEnds`) where they are not the one hydra names."""
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
        head = ours[0].removeprefix("greenkd: error: ") + "; " if ours else ""
        named, host = int(bad.group(1)), bad.group(2)
        if not first or list(first) == [named]:
            return (
                f"{head}MPI rank process {named} on {host} ended ({detail}); "
                "mpiexec stopped the other ranks"
            )
        which = " or ".join(str(pid) for pid in first)
        together = " (they had ended together when looked at)" if len(first) > 1 else ""
        return (
            f"{head}MPI rank process {which} on {host} ended first{together}; mpiexec stopped "
            f"the other ranks and reports process {named}: {detail}"
        )
    if ours:
        return ours[0].removeprefix("greenkd: error: ")
    return f"mpiexec exited with code {code}"

"""The local backend: one worker process per device on this machine.

Each worker is a fresh interpreter (`python -m greenkd.executors.worker`, not
multiprocessing's spawn, which would re-import the parent's main module and
with it perhaps TensorFlow) that binds itself to its device before TensorFlow
is imported (`devices.bind`), loads the cached teacher and the data once, then
trains whatever task lists the parent sends it over a socket pair and sends
back a `TaskResult` per task (block weights as numpy arrays, metrics,
start/end, device, host, pid) plus per-epoch progress.

Static plans (rr, binpack, opt) give each worker its planned list, in order;
with `--fuse` the list goes as one job trained in one fused pass. `ws` keeps
one shared queue, longest task first: whichever worker is idle takes the next.
A worker that dies (a crash, the OOM killer, SIGKILL) loses only its unfinished
tasks: they are queued again and idle workers take them; the run fails only
when no worker is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from greenkd.devices import Device
from greenkd.errors import GreenkdError
from greenkd.executors import allreduce
from greenkd.executors.base import Progress, TaskResult, TaskSource, Work, check_plan, jobs

STOP_TIMEOUT_S = 10.0


@dataclass
class _Worker:
    device: Device
    process: subprocess.Popen
    conn: Connection
    sentinel: int  # a pidfd: readable once the process has ended
    ready: bool = False
    busy: list[str] = field(default_factory=list)  # names sent and not yet returned
    alive: bool = True

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.conn.send(("start",))

    @classmethod
    def spawn(cls, device: Device, source: TaskSource) -> _Worker:
        ours, theirs = socket.socketpair()
        env = {**os.environ, **device.env()}
        process = subprocess.Popen(
            [sys.executable, "-m", "greenkd.executors.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
        )
        theirs.close()
        worker = cls(device, process, Connection(ours.detach()), os.pidfd_open(process.pid))
        # it binds, loads TensorFlow (and a cached teacher and the data) while we go on
        worker.conn.send(("bind", device))
        worker.conn.send(("load", source))
        return worker


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class LocalExecutor:
    """Runs a plan on one spawned worker process per device; yields results as they arrive."""

    def __init__(
        self, source: TaskSource, devices: list[Device] | None = None, *, keep: bool = False
    ) -> None:
        self.source = source
        self.lost_workers: list[dict[str, Any]] = []
        # keep: the workers stay after the tasks, teacher and data loaded, for `replicas()`
        # (data-parallel fine-tuning) until `close()`
        self.keep = keep
        self._kept: list[_Worker] = []
        # Given the devices, the workers start now: binding and importing TensorFlow
        # overlap this process's own set-up (data, teacher, targets, plan).
        self._early = [_Worker.spawn(d, source) for d in devices] if devices else []

    def __del__(self) -> None:
        # started but never used (the run failed first), or kept and never closed
        for worker in [*getattr(self, "_early", []), *getattr(self, "_kept", [])]:
            with contextlib.suppress(OSError):
                worker.process.kill()

    def replicas(self) -> _Replicas | None:
        """The kept workers as one data-parallel group, or None when none is left."""
        live = [w for w in self._kept if w.alive and w.process.poll() is None]
        return _Replicas(live) if live else None

    def close(self) -> None:
        """Stop the kept workers (each finishes what it is doing first)."""
        kept, self._kept = self._kept, []
        _stop(kept, graceful=True)

    def __call__(
        self, work: Work, devices: list[Device], progress: Progress
    ) -> Iterator[TaskResult]:
        check_plan(work.plan, devices, "local")
        workers: list[_Worker] = []
        early, self._early = self._early, []
        if [w.device for w in early] != list(devices):
            _stop(early, graceful=False)
            early = []
        finished = False
        try:
            workers.extend(early or [_Worker.spawn(device, work.source) for device in devices])
            for worker in workers:
                worker.start()
            yield from self._dispatch(work, workers, progress)
            finished = True
        finally:
            if finished and self.keep:
                self._kept = workers
            else:  # after an error or an interrupt, busy workers would finish their task first
                _stop(workers, graceful=finished)

    def _dispatch(
        self, work: Work, workers: list[_Worker], progress: Progress
    ) -> Iterator[TaskResult]:
        plan = work.plan
        dynamic = plan.policy == "ws"
        # per worker, its planned jobs (ws: none; every task waits in the shared queue)
        own: list[list[list[str]]] = [[] if dynamic else list(js) for js in jobs(plan)]
        shared: list[str] = list(plan.queue_order) if dynamic else []
        orphans: list[str] = []
        pending = set(work.names)

        def next_job(w: int) -> list[str]:
            if own[w]:
                return own[w].pop(0)
            for queue in (shared, orphans):
                if queue:
                    return [queue.pop(0)]
            return []

        def give_work(w: int) -> None:
            job = next_job(w)
            if job:
                workers[w].busy = list(job)
                workers[w].conn.send(("run", job))

        while pending:
            live = [w for w in workers if w.alive]
            if not live:
                lost = "; ".join(
                    f"{x['device']} (pid {x['pid']}) {x['reason']}" for x in self.lost_workers
                )
                raise GreenkdError(
                    f"every worker process died ({lost}); {len(pending)} task(s) unfinished"
                )
            ready = wait([w.conn for w in live] + [w.sentinel for w in live])
            for w, worker in enumerate(workers):
                if not worker.alive:
                    continue
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            result = self._handle(worker, worker.conn.recv(), progress, pending)
                            if result is not None:
                                yield result
                            if worker.ready and not worker.busy:
                                give_work(w)
                    except (EOFError, ConnectionResetError):
                        pass  # the process died; its sentinel says so below
                if worker.sentinel in ready or worker.process.poll() is not None:
                    worker.process.wait()
                    self._lose(w, workers, own, orphans, progress)
                    for v, other in enumerate(workers):
                        if other.alive and other.ready and not other.busy:
                            give_work(v)

    def _handle(
        self, worker: _Worker, message: tuple, progress: Progress, pending: set[str]
    ) -> TaskResult | None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
        elif kind == "epoch":
            progress.epoch(message[1], message[2], message[3])
        elif kind == "result":
            result = message[1]
            if result.name in worker.busy:
                worker.busy.remove(result.name)
            if result.name in pending:
                pending.discard(result.name)
                return result
        elif kind == "error":
            where = f" on {', '.join(worker.busy)}" if worker.busy else " while starting"
            raise GreenkdError(
                f"worker {worker.device.label} (pid {worker.pid}) failed{where}: {message[1]}"
            )
        return None

    def _lose(
        self,
        w: int,
        workers: list[_Worker],
        own: list[list[list[str]]],
        orphans: list[str],
        progress: Progress,
    ) -> None:
        """A worker died: its unfinished and unstarted tasks go back in the queue, one by one."""
        worker = workers[w]
        worker.alive = False
        rerun = list(worker.busy) + [name for job in own[w] for name in job]
        own[w] = []
        orphans.extend(rerun)
        reason = _signal_name(worker.process.returncode)
        self.lost_workers.append(
            {
                "device": worker.device.label,
                "pid": worker.pid,
                "reason": reason,
                "ts": time.time(),
                "in_flight": list(worker.busy),
                "requeued": rerun,
            }
        )
        worker.busy = []
        if rerun:
            progress.phase(
                "worker-lost",
                f"{worker.device.label} (pid {worker.pid}) {reason}; "
                f"re-running {', '.join(rerun)} on the other workers",
            )


class _Replicas:
    """Kept workers running one collective job, summing their arrays among themselves in shared
    memory (`allreduce`); this process makes the job's directory and watches for failures."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers
        self.size = len(workers)

    def __call__(self, job: Callable[..., Any]) -> list[Any]:
        if self.size == 1:  # one worker sums nothing: no shared memory
            return self._run(job, None)
        with allreduce.job_directory(self.size) as directory:
            return self._run(job, directory)

    def _run(self, job: Callable[..., Any], directory) -> list[Any]:
        for rank, worker in enumerate(self.workers):
            worker.conn.send(("collective", job, rank, self.size, directory))
        return self._results()

    def _results(self) -> list[Any]:
        results: dict[int, Any] = {}
        while len(results) < self.size:
            ready = wait([w.conn for w in self.workers] + [w.sentinel for w in self.workers])
            for rank, worker in enumerate(self.workers):
                if worker.conn in ready:
                    try:
                        while worker.conn.poll():
                            kind, *body = worker.conn.recv()
                            if kind == "done":
                                results[rank] = body[0]
                            elif kind == "error":
                                raise GreenkdError(
                                    f"worker {worker.device.label} (pid {worker.pid}) failed "
                                    f"in a collective job: {body[0]}"
                                )
                    except (EOFError, ConnectionResetError):
                        pass  # the process died; its sentinel says so below
                if worker.sentinel in ready and worker.process.poll() is not None:
                    worker.alive = False
                    raise GreenkdError(
                        f"worker {worker.device.label} (pid {worker.pid}) "
                        f"{_signal_name(worker.process.returncode)} in a collective job"
                    )
        return [results[r] for r in range(self.size)]


def _stop(workers: list[_Worker], *, graceful: bool) -> None:
    """Ask every live worker to stop (or kill it at once); end those that do not stop in time."""
    if not workers:
        return
    for worker in workers:
        if worker.process.poll() is not None:
            continue
        if not graceful:
            worker.process.kill()
            continue
        with contextlib.suppress(OSError):  # its end of the socket is already closed
            worker.conn.send(("stop",))
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker.conn.close()
        os.close(worker.sentinel)

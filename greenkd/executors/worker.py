"""A local worker process: `python -m greenkd.executors.worker FD` (started by local.py).

A fresh interpreter that imports only what it needs, so it can bind itself to
its device before TensorFlow is imported, whatever the parent's main module
imports. It talks to the parent over the socket FD (pickled messages):

parent -> worker: ("bind", Device), ("load", TaskSource), ("start",),
                  then ("run", [task names]) ... ("collective", job, ...) ... ("stop",)

The worker binds and loads TensorFlow on "bind"; on "load" it unpickles the
task source (which imports no framework by itself) and, if the teacher is
already cached, loads data and teacher while the parent prepares; "start" says
the parent's teacher is cached (it may have trained it meanwhile).
worker -> parent: ("ready", pid, host), ("epoch", task, epoch, mse), ("result", TaskResult),
                  ("error", one line)
A collective job ("collective", job, rank, size, directory: data-parallel fine-tuning,
executors.base.Replicas) runs with the loaded tasks; its reductions go between the workers
through shared memory in `directory` (executors.allreduce), not through the parent, and it
ends with ("done", what it returned).
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from multiprocessing.connection import Connection

from greenkd.devices import bind
from greenkd.errors import GreenkdError
from greenkd.executors.allreduce import SharedReduce
from greenkd.executors.base import TaskSource, Trainer


class _PipeProgress:
    """Sends each finished epoch to the parent, which draws the progress."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def phase(self, name: str, detail: str = "") -> None: ...

    def epoch(self, task: str, epoch: int, mse: float) -> None:
        self.conn.send(("epoch", task, epoch, mse))


def _identity(arrays: list) -> list:
    """A collective job on one worker (a 1-device run's fine-tune) sums nothing."""
    return list(arrays)


def serve(conn: Connection) -> None:
    """Bind to the device the parent names, load the tasks once, train what is sent."""
    try:
        kind, device = conn.recv()
    except (EOFError, ConnectionResetError, KeyboardInterrupt):
        return
    if kind != "bind":
        raise RuntimeError(f"expected a bind message, got {kind!r}")
    try:
        bind(device)  # before TensorFlow is imported, which the next line does
        from greenkd.framework import configure  # after binding

        configure(device)
        _, source = conn.recv()  # ("load", TaskSource): unpickled only now, after binding
        trainer = _load_if_cached(source)
        conn.recv()  # "start": the parent has its teacher cached by now
        if trainer is None:
            trainer = source.load()
        conn.send(("ready", os.getpid(), socket.gethostname()))
        progress = _PipeProgress(conn)
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            if message[0] == "collective":  # ("collective", job, rank, size, directory)
                _, job, rank, size, directory = message
                conn.send(("done", _collective(job, trainer, rank, size, directory, conn)))
                continue
            for result in trainer.train(list(message[1]), device.label, progress):
                conn.send(("result", result))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return  # the parent is gone or is stopping the run: nobody to report to
    except GreenkdError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _collective(job, trainer: Trainer, rank: int, size: int, directory, conn: Connection):
    """Run one collective job (executors.base.Replicas) with the other workers, its sums in
    the shared memory of `directory` (executors.allreduce); alone, without any."""
    if size == 1:
        return job(trainer, rank, size, _identity)
    reduce = SharedReduce(directory, rank, size, conn)
    try:
        return job(trainer, rank, size, reduce)
    finally:
        reduce.close()


def _load_if_cached(source: TaskSource) -> Trainer | None:
    """The loaded tasks now if the teacher is on disk, else None (the parent is training it)."""
    try:
        return source.load() if source.cached() else None
    except GreenkdError:
        return None  # the same error, if it is one, comes again after "start", to be reported


def main() -> None:
    serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()

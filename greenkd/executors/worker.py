"""A local worker process: `python -m greenkd.executors.worker FD` (started by local.py).

A fresh interpreter that imports only what it needs, so it can bind itself to
its device before TensorFlow is imported, whatever the parent's main module
imports. It talks to the parent over the socket FD (pickled messages):

parent -> worker: ("bind", Device), ("load", TaskSource), ("start",),
                  then ("run", [task names]) ... ("collective", job, rank, size) ... ("stop",)

The worker binds and loads TensorFlow on "bind"; on "load" it unpickles the
task source (which imports no framework by itself) and, if the teacher is
already cached, loads data and teacher while the parent prepares; "start" says
the parent's teacher is cached (it may have trained it meanwhile).
worker -> parent: ("ready", pid, host), ("epoch", task, epoch, mse), ("result", TaskResult),
                  ("error", one line)
A collective job (data-parallel fine-tuning, executors.base.Replicas) runs with the loaded
tasks; each of its reductions is ("reduce", arrays) -> ("reduced", sums), and it ends with
("done", what it returned).
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from multiprocessing.connection import Connection

from greenkd.devices import bind
from greenkd.errors import GreenkdError
from greenkd.executors.base import TaskSource, Trainer


class _PipeProgress:
    """Sends each finished epoch to the parent, which draws the progress."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def phase(self, name: str, detail: str = "") -> None: ...

    def epoch(self, task: str, epoch: int, mse: float) -> None:
        self.conn.send(("epoch", task, epoch, mse))


class _Reducer:
    """A collective job's `reduce`: sends this worker's arrays, returns every worker's sums.

    A job on one worker (a 1-device run's fine-tune) sums nothing: its arrays come straight back,
    without a round trip through the run's process (3 s of the default run's fine-tune, 620 steps,
    that a 1-device baseline has no reason to pay)."""

    def __init__(self, conn: Connection, size: int) -> None:
        self.conn, self.size = conn, size

    def __call__(self, arrays: list) -> list:
        if self.size == 1:
            return list(arrays)
        self.conn.send(("reduce", arrays))
        kind, summed = self.conn.recv()
        if kind != "reduced":
            raise RuntimeError(f"expected the reduced arrays, got {kind!r}")
        return summed


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
            if message[0] == "collective":  # ("collective", job, rank, size): Replicas
                _, job, rank, size = message
                conn.send(("done", job(trainer, rank, size, _Reducer(conn, size))))
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

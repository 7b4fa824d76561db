"""A local worker process: `python -m greenkd.executors.worker FD` (started by local.py).

A fresh interpreter that imports only what it needs, so it can bind itself to
its device before TensorFlow is imported, whatever the parent's main module
imports. It talks to the parent over the socket FD (pickled messages):

parent -> worker: ("bind", Device, RunConfig), ("start",), then ("run", [task names]) ... ("stop",)

The worker binds and loads TensorFlow on "bind", and if the teacher is already
cached also its data and teacher, while the parent prepares; "start" says the
parent's teacher is cached (it may have trained it meanwhile).
worker -> parent: ("ready", pid, host), ("epoch", task, epoch, mse), ("result", TaskResult),
                  ("error", one line)
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from multiprocessing.connection import Connection

from greenkd.devices import bind, configure_tensorflow
from greenkd.errors import GreenkdError


class _PipeProgress:
    """Sends each finished epoch to the parent, which draws the progress."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def epoch(self, task: str, epoch: int, mse: float) -> None:
        self.conn.send(("epoch", task, epoch, mse))


def serve(conn: Connection) -> None:
    """Bind to the device the parent names, load teacher and data once, train what is sent."""
    try:
        kind, device, cfg = conn.recv()
    except (EOFError, ConnectionResetError, KeyboardInterrupt):
        return
    if kind != "bind":
        raise RuntimeError(f"expected a bind message, got {kind!r}")
    try:
        bind(device)  # before TensorFlow is imported, which the next lines do
        configure_tensorflow(device)
        from greenkd.distill.run import prepare, run_inline

        setup = _prepare_if_cached(cfg)
        conn.recv()  # "start": the parent has its teacher cached by now
        if setup is None:
            setup = prepare(cfg, train_teacher=False)
        conn.send(("ready", os.getpid(), socket.gethostname()))
        progress = _PipeProgress(conn)
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            for result in run_inline(setup, list(message[1]), device.label, progress):
                conn.send(("result", result))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return  # the parent is gone or is stopping the run: nobody to report to
    except GreenkdError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _prepare_if_cached(cfg):
    """Data and teacher now if the teacher is on disk, else None (the parent is training it)."""
    from greenkd import models
    from greenkd.distill.run import prepare

    if cfg.model in models.ZOO:
        path = models.teacher_path(cfg)
        # the parent writes the model, then its .json: both there means the model is whole
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            return None
    try:
        return prepare(cfg, train_teacher=False)
    except GreenkdError:
        return None  # the same error, if it is one, comes again after "start", to be reported


def main() -> None:
    serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()

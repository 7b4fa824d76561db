"""Quiet, predictable TensorFlow start-up; import this module instead of importing TensorFlow first.

TensorFlow 2.21 writes C++ notices to stderr while it loads ("oneDNN custom
operations are on", "could not find cuda drivers", and on machines without a
GPU a cuInit error), whatever TF_CPP_MIN_LOG_LEVEL says, because they come
before its logging is initialised. They are noise in every greenkd command, so
the import and the first device query run with file descriptor 2 pointed at
/dev/null. Python exceptions are unaffected. Set GREENKD_TF_VERBOSE=1 to see
the notices.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from greenkd.errors import GreenkdError

if TYPE_CHECKING:
    from greenkd.devices import Device

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def _stderr_to_devnull():
    if os.environ.get("GREENKD_TF_VERBOSE") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _record_environment() -> None:
    """Test hook: with GREENKD_FRAMEWORK_ENV_LOG set, append this process's device environment,
    as it is when the framework loads, to that file (one JSON line per process). The tests of
    device binding read it to check that every process of a run saw only its own GPU."""
    log = os.environ.get("GREENKD_FRAMEWORK_ENV_LOG")
    if not log:
        return
    import json

    keys = (
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
        "TF_NUM_INTRAOP_THREADS",
        "OMP_NUM_THREADS",
    )
    record = {
        "pid": os.getpid(),
        "argv": sys.argv,
        "framework": "tensorflow",
        "env": {k: os.environ.get(k) for k in keys},
        "cores": sorted(os.sched_getaffinity(0)),
    }
    with open(log, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if "tensorflow" not in sys.modules:
    _record_environment()
    with _stderr_to_devnull():
        import tensorflow as _tf

        _tf.config.list_physical_devices()

import keras  # noqa: E402  (after the quiet TensorFlow import above)
import tensorflow as tf  # noqa: E402

if os.environ.get("GREENKD_TF_VERBOSE") != "1":
    # tf.function's "N of the last M calls triggered retracing" fires when a
    # validation split ends in a smaller batch; harmless, and greenkd traces
    # each task's functions on purpose
    import logging

    tf.get_logger().setLevel(logging.ERROR)

__all__ = ["configure_tensorflow", "keras", "tf"]


def configure_tensorflow(device: Device) -> None:
    """Set TensorFlow's thread counts for `device` (before any op runs in this process): a CPU
    device's cores, or a GPU worker's share of the node's cores (its input pipeline and host
    ops), never the whole machine per worker; and memory growth on its GPU."""
    if device.kind == "remote":
        return  # an external Dask cluster's worker: bound by whoever started it
    if device.kind == "gpu":
        for gpu in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):  # already initialised: the env var held
                tf.config.experimental.set_memory_growth(gpu, True)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(device.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        if tf.config.threading.get_intra_op_parallelism_threads() != device.threads:
            raise GreenkdError(
                f"cannot give TensorFlow {device.threads} thread(s) for {device.label}: it "
                "already ran an op in this process"
            ) from None

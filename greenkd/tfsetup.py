"""Quiet, predictable TensorFlow start-up; import this module instead of importing TensorFlow first.

TensorFlow 2.21 writes C++ notices to stderr while it loads ("oneDNN custom
operations are on", "could not find cuda drivers", and on machines without a
GPU a cuInit error), whatever TF_CPP_MIN_LOG_LEVEL says, because they come
before its logging is initialised. They are noise in every greenkd command, so
the import and the first device query run with file descriptor 2 pointed at
/dev/null. Python exceptions are unaffected. Set GREENKD_TF_VERBOSE=1 to see
the notices.
"""

import contextlib
import os
import sys

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


if "tensorflow" not in sys.modules:
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

__all__ = ["keras", "tf"]

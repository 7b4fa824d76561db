"""Ctrl-C that is never lost: SIGINT is remembered as well as raised.

Python turns SIGINT into a KeyboardInterrupt raised in whatever Python code the main thread
runs next. Inside a long TensorFlow call that can be code TensorFlow calls from C++ and whose
exceptions it does not pass on; then the interrupt vanishes and the run goes on to the end (seen
once in the test suite: a `greenkd distill --no-fuse` sent SIGINT after its second task exited 0,
every task done; not reproduced alone, so the exact swallowing call is not known). Under
`latched()` the handler also sets a latch, and the run checks it at its own safe points (each
epoch of a pass, each finished task, each phase): `raise_if_interrupted()` raises the
interrupt again there, so Ctrl-C always ends the run as an interrupt, partial results kept.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_hit = threading.Event()


def _on_sigint(signum, frame) -> None:
    _hit.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def latched() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and is remembered, until the block ends (main thread only;
    elsewhere, or when SIGINT is ignored or handled by someone else, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return
    _hit.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT came under `latched()`, even if its first raise was lost."""
    if _hit.is_set():
        raise KeyboardInterrupt("interrupted")

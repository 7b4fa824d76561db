"""Ctrl-C is remembered: a SIGINT whose KeyboardInterrupt some library swallowed is raised again
at the run's next safe point (greenkd.interrupts)."""

from __future__ import annotations

import os
import signal

import pytest

from greenkd.interrupts import latched, raise_if_interrupted


def test_a_swallowed_sigint_is_raised_again_at_the_next_check():
    with latched():
        raise_if_interrupted()  # nothing came yet
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            pass  # what a library calling back into Python may do with it
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_new_latch_starts_clear_and_other_handlers_are_left_alone():
    with latched():
        raise_if_interrupted()
    mine = []
    old = signal.signal(signal.SIGINT, lambda *_: mine.append(1))
    try:
        with latched():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            raise_if_interrupted()  # someone else's handler took it: not latched
        assert mine == [1]
    finally:
        signal.signal(signal.SIGINT, old)

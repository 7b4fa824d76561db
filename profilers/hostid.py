"""Who and when this host is: its name and its wall clock, with the one override seam for tests.

On a multi-host run every host stamps its samples, marks and task times with its own clock, and
the run's files tell hosts apart by name. Both come from here:

- `host_name()`: `$GREENKD_HOST` if set, else the machine's host name;
- `host_time()`: Unix seconds, `time.time()` shifted by `$GREENKD_CLOCK_SHIFT_S` if set.

The variables exist only so that tests on one machine can play several hosts honestly (a group
of workers per "host", each with its own identity and, for the clock-offset test, its own skewed
clock); on a real cluster neither is set. The shift is read at every call, so a process's clock
is one clock however late the variable was set.
"""

from __future__ import annotations

import math
import os
import socket
import time

from greenkd.errors import GreenkdError

HOST_ENV = "GREENKD_HOST"
CLOCK_SHIFT_ENV = "GREENKD_CLOCK_SHIFT_S"


def host_name() -> str:
    """This host's name: `$GREENKD_HOST`, else `socket.gethostname()`."""
    return os.environ.get(HOST_ENV, "").strip() or socket.gethostname()


def clock_shift_s() -> float:
    """The test-only shift of this host's clock, `$GREENKD_CLOCK_SHIFT_S` (0 when unset)."""
    text = os.environ.get(CLOCK_SHIFT_ENV, "").strip()
    if not text:
        return 0.0
    try:
        shift = float(text)
    except ValueError:
        shift = math.nan
    if not math.isfinite(shift):
        raise GreenkdError(f"{CLOCK_SHIFT_ENV} must be a number of seconds, got {text!r}")
    return shift


def host_time() -> float:
    """This host's wall clock in Unix seconds (the one clock of its samples and task times)."""
    return time.time() + clock_shift_s()

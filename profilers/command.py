"""Profiling a command: the idle baseline, then the command under the sampler, its exit code.

The command is started with posix_spawn as a shell would (PATH lookup, default SIGPIPE and
SIGXFSZ). SIGINT and SIGTERM sent to greenkd are forwarded to it, unless the kernel sent them to
the whole foreground process group (the terminal's Ctrl-C), which the command got already; once
it has exited the summary is written, and then `CommandInterrupted` tells the caller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from greenkd.errors import GreenkdError
from profilers.sampler import Profiler

# si_code of a signal the kernel raised itself, e.g. the terminal's Ctrl-C to
# the whole foreground process group: the child got its own copy already.
SI_KERNEL = 0x80


class CommandError(GreenkdError):
    """The command to profile could not be started; `exit_code` follows the shell (127 not found, 126 not runnable)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CommandInterrupted(KeyboardInterrupt):
    """greenkd itself got SIGINT/SIGTERM while profiling a command; raised after the summary is written.

    A KeyboardInterrupt, so a caller looping over commands (a sweep) stops;
    `exit_code` is the command's own exit code, which `greenkd profile` exits with.
    """

    def __init__(self, signals: list[str], exit_code: int) -> None:
        super().__init__(
            f"interrupted by {', '.join(signals)}; the command exited with {exit_code}"
        )
        self.signals = signals
        self.exit_code = exit_code


def _resolve(program: str) -> str:
    """The executable for argv[0], as a shell would find it; CommandError 127 if there is none."""
    found = shutil.which(program)
    if found is None:
        where = "no such file" if os.sep in program else "not found on PATH"
        raise CommandError(f"command not found: {program} ({where})", 127)
    return found


def exit_code_of(wait_status: int) -> int:
    """Shell-style exit code from a wait status: the code, or 128 + signal number."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def run_command(argv: Sequence[str], **options: Any) -> int:
    """Profile a command: idle baseline, run it, forward SIGINT/SIGTERM to it, return its exit code.

    `options` go to `Profiler` as they are (out, hz, idle_seconds, gpus, file names, roots).
    A command that exits non-zero or dies of a signal leaves a summary marked partial. If this
    process gets SIGINT/SIGTERM, the command gets it too, and once it has exited and the summary
    is written, CommandInterrupted (a KeyboardInterrupt carrying the exit code) is raised.
    """
    argv = list(argv)
    if not argv:
        raise GreenkdError(
            "no command to profile: give one after `--`, e.g. `greenkd profile -- python train.py`"
        )
    executable = _resolve(argv[0])
    profiler = Profiler(**options)
    profiler.record_command(argv)
    on_main = threading.current_thread() is threading.main_thread()
    watched = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    # Blocked before the sampler thread exists, so it inherits the mask and
    # every signal waits for sigtimedwait in this thread, with its origin.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched) if on_main else None
    try:
        profiler.start()
        if on_main:
            early = signal.sigpending() & {signal.SIGINT, signal.SIGTERM}
            if early:
                signum = signal.sigtimedwait(early, 0)
                number = signum.si_signo if signum is not None else min(early)
                name = signal.Signals(number).name
                profiler.stop(
                    reason=f"interrupted by {name} before the command started",
                    exit_code=128 + number,
                )
                return 128 + number
        try:
            pid = os.posix_spawn(
                executable,
                argv,
                os.environ,
                setsigmask=(),
                # Python ignores SIGPIPE and SIGXFSZ; the command gets the defaults, as from a shell.
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ),
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            profiler.stop(reason=f"the command could not start: {exc.strerror}", exit_code=code)
            raise CommandError(f"cannot run {argv[0]}: {exc.strerror}", code) from exc
        profiler.command_started(pid)
        code, received = _wait(pid, on_main, profiler.command_exited)
    except BaseException:
        if profiler.running:
            profiler.stop(reason="greenkd profile failed while the command ran")
        raise
    finally:
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    reasons = []
    if received:
        reasons.append(f"interrupted by {', '.join(received)} (forwarded to the command)")
    if code > 128 and code - 128 < signal.NSIG:
        reasons.append(f"the command was killed by {signal.Signals(code - 128).name}")
    elif code != 0:
        reasons.append(f"the command exited with code {code}")
    profiler.stop(reason="; ".join(reasons) or None, exit_code=code)
    if received:
        raise CommandInterrupted(received, code)
    return code


def _collect(pid: int, block: bool, before_reap: Callable[[], None]) -> int | None:
    """The child's exit code once it has exited and is reaped; None while it runs (`block` False).

    With waitid the exited child is first left a zombie (WNOWAIT) so that `before_reap` can still
    read it (its final CPU time); without (macOS) it is reaped at once.
    """
    if hasattr(os, "waitid"):
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        if os.waitid(os.P_PID, pid, flags) is None:
            return None
        before_reap()
        _, status = os.waitpid(pid, 0)
        return exit_code_of(status)
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return exit_code_of(status) if done == pid else None


def _wait(pid: int, on_main: bool, before_reap: Callable[[], None]) -> tuple[int, list[str]]:
    """Wait for the child, forwarding SIGINT/SIGTERM; return its exit code and the signals received.

    `before_reap` runs once the child has exited but before it is reaped, while its final CPU
    time can still be read.
    """
    received: list[str] = []
    if not on_main:
        code = _collect(pid, True, before_reap)
        assert code is not None  # a blocking wait returns once the child has exited
        return code, received
    watched = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    while True:
        info = signal.sigtimedwait(watched, 0.5)
        if info is not None and info.si_signo in (signal.SIGINT, signal.SIGTERM):
            received.append(signal.Signals(info.si_signo).name)
            if info.si_code != SI_KERNEL:
                # If it exited in between, _collect below collects it.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, info.si_signo)
        code = _collect(pid, False, before_reap)
        if code is not None:
            return code, received

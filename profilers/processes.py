"""The profiled work's own processes: a root process and every descendant, found through /proc.

A profiled command is a child of the profiling process, and a `with Profiler()` block runs in
it, so the work's processes are this process and its descendants. The children of each
process are read from `/proc/<pid>/task/<tid>/children`; on a kernel built without
CONFIG_PROC_CHILDREN, from every process's parent in `/proc/<pid>/stat`. A process once seen is
kept, so one that is re-parented (its parent exited) still counts as the work's own.

`TreeCpu` adds up the CPU time of such a tree, for the attribution (`profilers.attribution`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _task_children(proc: Path, pid: int) -> set[int] | None:
    """The children of `pid` (over all its threads); None where the kernel has no children files."""
    task = proc / str(pid) / "task"
    try:
        tids = os.listdir(task)
    except OSError:
        return set()  # the process has exited
    children: set[int] = set()
    for tid in tids:
        path = task / tid / "children"
        try:
            text = path.read_text()
        except FileNotFoundError:
            if (task / tid).exists():
                return None  # the thread is there but the file is not: no CONFIG_PROC_CHILDREN
            continue  # the thread has exited
        except OSError:
            continue
        children.update(int(p) for p in text.split())
    return children


def _parents(proc: Path) -> dict[int, int]:
    """pid -> parent pid of every process, from /proc/<pid>/stat."""
    parents = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            stat = (proc / entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(roots: Iterable[int], proc: str | os.PathLike[str] = "/proc") -> set[int]:
    """The processes under `roots` (the roots not included)."""
    root = Path(proc)
    found: set[int] = set()
    frontier = list(roots)
    parents: dict[int, int] | None = None
    while frontier:
        pid = frontier.pop()
        children = _task_children(root, pid)
        if children is None:
            if parents is None:
                parents = _parents(root)
            children = {child for child, parent in parents.items() if parent == pid}
        new = children - found
        found |= new
        frontier.extend(new)
    return found


class OwnProcesses:
    """Callable: the pids of the work so far, the roots and every descendant ever seen."""

    def __init__(
        self, roots: Iterable[int] | None = None, proc: str | os.PathLike[str] = "/proc"
    ) -> None:
        self.roots = set(roots) if roots is not None else {os.getpid()}
        self.proc = proc
        self._seen: set[int] = set(self.roots)

    def add_root(self, pid: int) -> None:
        """Count `pid` and its descendants as the work's own from now on."""
        self.roots.add(pid)
        self._seen.add(pid)

    def __call__(self) -> frozenset[int]:
        self._seen |= descendants(self._seen, self.proc)
        return frozenset(self._seen)


class TreeCpu:
    """User + system CPU seconds of a process tree so far, its members' as they come and go.

    Each `read` lists the members (`OwnProcesses`: the roots and every descendant seen) and
    reads every live member's CPU time through psutil; a member that has exited keeps the time
    last read, so what it used up to then is not lost. A member counts all its CPU time since it
    started: a root present at the first read counts from there only because callers take
    differences between reads. Blind spots: a child that starts and exits between two reads is
    never seen, and a member's CPU after its last read before it exits is missing (for a
    command's root, the profiler reads it once more as a zombie, before it is reaped).

    psutil is imported on the first read, not at import: `greenkd profile`'s start-up stays lean.
    A pid is tracked with its start time, so a pid reused by an unrelated process is not read.
    """

    def __init__(self, members: OwnProcesses | None = None) -> None:
        self.members = members
        self.error: str | None = None
        self.unreadable: set[int] = set()
        self._lock = threading.Lock()
        self._processes: dict[int, Any] = {}  # pid -> psutil.Process, while it lives
        self._cpu_s: dict[int, float] = {}  # pid -> user + system seconds at its last read
        self._pids: frozenset[int] = frozenset()

    @property
    def pids(self) -> frozenset[int]:
        """Every member seen so far, live or exited."""
        return self._pids

    @property
    def seen(self) -> int:
        """How many processes have been members."""
        return len(self._cpu_s)

    @property
    def exited(self) -> int:
        """How many members have exited (their last-read CPU time is kept)."""
        return len(self._cpu_s) - len(self._processes)

    def prepare(self) -> None:
        """Import psutil now (e.g. in the sampler's thread while a command starts)."""
        try:
            import psutil  # noqa: F401
        except ImportError:
            self.error = "psutil is not installed (`pip install psutil`)"

    def read(self) -> float | None:
        """The tree's CPU seconds so far; 0 before it has members, None without psutil."""
        if self.members is None:
            return 0.0
        try:
            import psutil
        except ImportError:
            self.error = "psutil is not installed (`pip install psutil`)"
            return None
        with self._lock:
            self._pids = self.members()
            for pid in self._pids - self._cpu_s.keys():
                self._cpu_s[pid] = 0.0
                try:
                    self._processes[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    pass  # it exited before its first read: its CPU time is not known
                except psutil.AccessDenied:
                    self.unreadable.add(pid)
            for pid, process in list(self._processes.items()):
                try:
                    times = process.cpu_times()
                    # The times of a pid that another process took over are not this member's.
                    alive = process.is_running()
                except psutil.NoSuchProcess:
                    alive = False
                except psutil.AccessDenied:
                    self.unreadable.add(pid)
                    continue
                if not alive:
                    del self._processes[pid]
                    continue
                self._cpu_s[pid] = times.user + times.system
            return sum(self._cpu_s.values())

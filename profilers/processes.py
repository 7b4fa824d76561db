"""The profiled work's own processes: a root process and every descendant, found through /proc.

A profiled command is a child of the profiling process, and a `with Profiler()` block runs in
it, so the work's processes are this process and its descendants. The children of each
process are read from `/proc/<pid>/task/<tid>/children`; on a kernel built without
CONFIG_PROC_CHILDREN, from every process's parent in `/proc/<pid>/stat`. A process once seen is
kept, so one that is re-parented (its parent exited) still counts as the work's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


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

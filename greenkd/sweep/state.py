"""A sweep's state on disk (sweep.json) and the rules `--resume` follows.

A run whose summary.json says `complete`, made with its planned settings, is never run again;
a partial or failed one is set aside under `.attempts/` and run again.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError
from greenkd.fileio import read_json, write_json_atomic
from greenkd.sweep.machine import Machine
from greenkd.sweep.spec import SweepRun, SweepSpec

SWEEP_FILE = "sweep.json"
ATTEMPTS_DIR = ".attempts"


@dataclass
class RunRecord:
    """A run's line in sweep.json."""

    run: str
    devices: int
    sched: str
    threads: str
    repeat: int
    baseline_for: list[str] = field(default_factory=list)
    framework: str = "tensorflow"
    status: str = "pending"  # pending | running | complete | partial | failed
    error: str | None = None
    interrupted: bool = False
    exit_code: int | None = None
    started_ts: float | None = None
    ended_ts: float | None = None
    seconds: float | None = None
    attempts: int = 0
    # The machine's 1-minute load average as the run starts and ends: a busy machine explains noisy times.
    load_start: float | None = None
    load_end: float | None = None

    @classmethod
    def planned(cls, run: SweepRun) -> RunRecord:
        return cls(
            run.name,
            run.devices,
            run.sched,
            run.threads,
            run.repeat,
            list(run.baseline_for),
            run.framework,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SweepState:
    """sweep.json: the spec, the machine, the teacher and every run's state, rewritten atomically."""

    path: Path
    name: str
    spec: SweepSpec
    machine: Machine
    created_ts: float
    records: list[RunRecord]
    status: str = "running"  # running | complete | interrupted | failed
    error: str | None = None  # why the sweep itself failed
    teacher: dict[str, Any] | None = None  # the first framework's (a sweep of one: its only)
    # every framework's teacher, by framework, in a sweep of several (each trains its own)
    teachers: dict[str, dict[str, Any]] | None = None
    command: list[str] = field(default_factory=lambda: list(sys.argv))

    def save(self) -> None:
        write_json_atomic(
            self.path / SWEEP_FILE,
            {
                "name": self.name,
                "created_ts": self.created_ts,
                "updated_ts": time.time(),
                "status": self.status,
                "error": self.error,
                "experiment": self.spec.experiment,
                "spec": self.spec.to_dict(),
                "machine": {
                    "device_kind": self.machine.kind,
                    "gpus": self.machine.gpus,
                    "cores": self.machine.cores,
                },
                "teacher": self.teacher,
                **({"teachers": self.teachers} if self.teachers else {}),
                "command": self.command,
                "runs": [r.to_dict() for r in self.records],
            },
        )


def is_complete(run_dir: Path) -> bool:
    """A finished run: summary.json (written last by the run) says complete."""
    summary = read_json(run_dir / "summary.json")
    return bool(summary) and summary.get("status") == "complete"


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's settings without its output path, which moves with the results."""
    return {k: v for k, v in config.items() if k != "out"}


def settings_diff(run: SweepRun, run_dir: Path) -> list[str]:
    """How the settings in a run directory's config.json differ from the planned ones ([] if equal)."""
    payload = read_json(run_dir / "config.json") or {}
    used = _settings(dict(payload.get("config") or {}))
    want = _settings(json.loads(json.dumps(run.config.to_dict(), default=str)))
    return [
        f"{k} {used.get(k)!r} instead of {want.get(k)!r}"
        for k in sorted(set(used) | set(want))
        if used.get(k) != want.get(k)
    ]


def check_same_settings(run: SweepRun, run_dir: Path) -> None:
    """Resuming must not mix runs made with other settings under the same name."""
    differ = settings_diff(run, run_dir)
    if differ:
        raise GreenkdError(
            f"{run_dir} was run with other settings ({', '.join(differ[:4])}); resume with the "
            "settings it was started with, or start a new sweep with --name"
        )


def sweep_dir_for(spec: SweepSpec, out: Path, *, resume: bool, name_given: bool) -> Path:
    """Where the sweep lives: out/<name>; a fresh default-named sweep never reuses a directory.

    Without --name, a new sweep next to an earlier one becomes <name>-2, <name>-3 ... and
    --resume picks the newest of them.
    """
    numbered = sorted(
        (p for p in out.glob(f"{spec.name}-*") if p.name[len(spec.name) + 1 :].isdigit()),
        key=lambda p: int(p.name[len(spec.name) + 1 :]),
    )
    taken = [out / spec.name, *numbered]
    existing = [p for p in taken if p.exists()]
    if resume:
        if name_given or not existing:
            return out / spec.name
        return existing[-1]
    first = out / spec.name
    if not first.exists() or not any(first.iterdir()):
        return first
    if name_given:
        raise GreenkdError(
            f"{first} already holds a sweep: add --resume to finish it (complete runs are kept) "
            "or choose another --name"
        )
    last = int(existing[-1].name[len(spec.name) + 1 :]) if existing[-1] != first else 1
    return out / f"{spec.name}-{last + 1}"


def set_aside(run_dir: Path, attempts: Path) -> None:
    """Keep an unfinished earlier attempt of a run under .attempts/ instead of overwriting it."""
    if not run_dir.exists():
        return
    attempts.mkdir(exist_ok=True)
    k = 1
    while (attempts / f"{run_dir.name}.{k}").exists():
        k += 1
    run_dir.rename(attempts / f"{run_dir.name}.{k}")

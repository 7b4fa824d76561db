"""The reader of run and sweep directories, beside their one writer (`greenkd.rundir`).

A run directory is read as it is on disk: files that are missing or unreadable become notes and
a `reason` the run is left out of the scaling figures, never an exception. Only a path that holds
no run at all is an error (`GreenkdError`, with what to give instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from greenkd.errors import GreenkdError
from greenkd.fileio import read_json
from greenkd.rundir import RunDir
from profilers.energy import SAMPLE_FIELDS

# The tasks.csv columns a run must have for its tasks to be used (the writer writes many more).
REQUIRED_TASK_COLUMNS = ("task", "device", "start", "end")
PLAN_FILE = "plan.json"
SAMPLES_FILE = "samples.csv"  # written by the profiler that wraps the run
PROFILE_FILE = "profile.json"


@dataclass
class Run:
    """One run directory, read as it is on disk."""

    name: str
    path: Path
    status: str  # complete | partial | failed
    reason: str | None  # why the run is left out of the scaling figures; None when it is usable
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    tasks: pd.DataFrame | None = None
    samples: pd.DataFrame | None = None
    profile: dict[str, Any] | None = None
    plan: dict[str, Any] | None = (
        None  # plan.json (else summary.json's "plan"): the schedule as predicted
    )
    notes: list[str] = field(default_factory=list)  # files missing or unreadable, and what follows

    @property
    def usable(self) -> bool:
        """Complete, with a wall time and a device count: fit for the scaling figures."""
        return self.reason is None

    @property
    def devices(self) -> int | None:
        """The device count n (config `gpus`: GPUs, or CPU workers where there is no GPU)."""
        value = self.config.get("gpus")
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    @property
    def repeat(self) -> int:
        """The repeat index the sweep gave this run (0 without --repeat)."""
        return int(self.meta.get("repeat") or 0)

    @property
    def window(self) -> tuple[float, float] | None:
        """The run's (start_ts, end_ts) from summary.json."""
        s = self.summary or {}
        start, end = s.get("start_ts"), s.get("end_ts")
        if finite(start) and finite(end) and end > start:
            return float(start), float(end)
        return None

    @property
    def wall_s(self) -> float:
        """Wall time: summary seconds.total, else end_ts - start_ts, else NaN."""
        s = self.summary or {}
        total = (s.get("seconds") or {}).get("total")
        if finite(total):
            return float(total)
        window = self.window
        return window[1] - window[0] if window else math.nan


@dataclass
class SweepData:
    """A sweep directory: its spec and every run found in it."""

    name: str
    path: Path
    created_ts: float | None
    spec: dict[str, Any]
    runs: list[Run]
    notes: list[str] = field(default_factory=list)


def find_sweeps(path: str | Path) -> list[Path]:
    """The sweep directories at `path`: itself if it is one, else its subdirectories that are."""
    root = Path(path)
    if not root.exists():
        raise GreenkdError(
            f"no results at {root}: give a sweep directory (with sweep.json) or a results "
            "directory holding sweeps"
        )
    if not root.is_dir():
        raise GreenkdError(f"{root} is a file; give a sweep directory or a results directory")
    if (root / "config.json").is_file() and not (root / "sweep.json").is_file():
        raise GreenkdError(
            f"{root} is one run; give its sweep directory ({root.parent}) or a results directory"
        )
    if _is_sweep_dir(root):
        return [root]
    sweeps = sorted(p for p in root.iterdir() if p.is_dir() and _is_sweep_dir(p))
    if not sweeps:
        raise GreenkdError(
            f"{root} holds no runs: expected sweep.json or run directories with config.json "
            "(run `greenkd sweep` first)"
        )
    return sweeps


def _is_sweep_dir(path: Path) -> bool:
    return (path / "sweep.json").is_file() or any(_run_dirs(path))


def _run_dirs(path: Path) -> Iterable[Path]:
    return (p for p in sorted(path.iterdir()) if p.is_dir() and RunDir(p).config_json.is_file())


def load_sweep(path: str | Path) -> SweepData:
    """Read a sweep directory: sweep.json and every run directory; unreadable parts become notes."""
    root = Path(path)
    if not root.is_dir():
        raise GreenkdError(f"no sweep directory at {root}")
    notes: list[str] = []
    listed: list[dict[str, Any]] = []
    spec: dict[str, Any] = {}
    name, created_ts = root.name, None
    sweep_json = root / "sweep.json"
    if sweep_json.is_file():
        payload = read_json(sweep_json)
        if payload is None:
            notes.append("sweep.json is not valid JSON; runs were found from their directories")
        else:
            name = str(payload.get("name") or root.name)
            created_ts = payload.get("created_ts") if finite(payload.get("created_ts")) else None
            spec = payload.get("spec") or {}
            listed = [r for r in payload.get("runs") or [] if isinstance(r, dict) and r.get("run")]
    else:
        notes.append("no sweep.json; runs were found from their directories")
    by_name = {str(r["run"]): r for r in listed}
    names = list(by_name)
    names += [p.name for p in _run_dirs(root) if p.name not in by_name]
    if not names:
        raise GreenkdError(
            f"{root} holds no runs: sweep.json lists none and no run directory has config.json"
        )
    runs = [load_run(root / n, listed=by_name.get(n)) for n in names]
    return SweepData(name=name, path=root, created_ts=created_ts, spec=spec, runs=runs, notes=notes)


def load_run(path: str | Path, listed: dict[str, Any] | None = None) -> Run:
    """Read one run directory; `listed` is its entry in sweep.json (status and error), if any."""
    path = Path(path)
    files = RunDir(path)
    listed = listed or {}
    run = Run(name=path.name, path=path, status="partial", reason=None)
    if not path.is_dir():
        run.status = str(listed.get("status") or "failed")
        run.reason = f"{run.status}: {listed.get('error') or 'no run directory'}"
        return run
    payload = read_json(files.config_json)
    if payload is None or not isinstance(payload.get("config", payload), dict):
        run.reason = "config.json missing or not valid JSON"
        run.status = str(listed.get("status") or "failed")
        return run
    run.config = dict(payload.get("config", payload))
    run.meta = dict(payload.get("meta") or {})

    summary = read_json(files.summary_json)
    if summary is None:
        if listed.get("status") == "failed":
            run.status, run.reason = "failed", f"failed: {listed.get('error') or 'no summary.json'}"
        else:
            run.status = "partial"
            run.reason = "partial: no summary.json (the run did not finish)"
    else:
        run.summary = summary
        run.status = str(summary.get("status") or listed.get("status") or "partial")
        error = summary.get("error") or listed.get("error")
        if run.status != "complete":
            run.reason = f"{run.status}: {error or 'no error recorded'}"
        elif not math.isfinite(run.wall_s):
            run.reason = "summary.json has neither seconds.total nor start_ts/end_ts"
        elif run.devices is None:
            run.reason = "config.json has no device count (gpus)"

    run.tasks = read_tasks(files.tasks_csv, run.notes)
    run.samples = read_samples(path / SAMPLES_FILE, run.notes)
    run.profile = read_json(path / PROFILE_FILE)
    if run.profile is None and (path / PROFILE_FILE).exists():
        run.notes.append("profile.json is not valid JSON")
    run.plan = read_json(path / PLAN_FILE)
    if run.plan is None:
        if (path / PLAN_FILE).exists():
            run.notes.append(f"{PLAN_FILE} is not valid JSON: no predicted schedule")
        plan = (run.summary or {}).get("plan")
        run.plan = plan if isinstance(plan, dict) else None
    return run


def read_tasks(path: Path, notes: list[str]) -> pd.DataFrame | None:
    """tasks.csv with a `seconds` column, its whole rows only; None (and a note) if unusable."""
    if not path.is_file():
        notes.append("no tasks.csv: per-layer runtimes and task allocation are not available")
        return None
    try:
        tasks = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        notes.append(f"tasks.csv unreadable ({exc})")
        return None
    missing = [c for c in REQUIRED_TASK_COLUMNS if c not in tasks.columns]
    if missing:
        notes.append(f"tasks.csv lacks columns {', '.join(missing)}")
        return None
    for col in ("start", "end"):
        tasks[col] = pd.to_numeric(tasks[col], errors="coerce")
    # A killed run may leave a half-written last line; keep the rows that are whole.
    tasks = tasks.dropna(subset=["start", "end"]).copy()
    tasks["device"] = tasks["device"].astype(str)
    tasks["seconds"] = tasks["end"] - tasks["start"]
    if "index" not in tasks.columns:
        tasks["index"] = range(len(tasks))
    return tasks.reset_index(drop=True)


def read_samples(path: Path, notes: list[str]) -> pd.DataFrame | None:
    """samples.csv (the profiler's tidy rows) sorted by time; None (and a note) if unusable."""
    if not path.is_file():
        notes.append("no samples.csv: the run was not profiled, so no energy, power or utilisation")
        return None
    try:
        samples = pd.read_csv(
            path, dtype={"sensor": str, "device": str, "metric": str, "unit": str}
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        notes.append(f"samples.csv unreadable ({exc}): no energy, power or utilisation")
        return None
    missing = [c for c in SAMPLE_FIELDS if c not in samples.columns]
    if missing:
        notes.append(f"samples.csv lacks columns {', '.join(missing)}: not used")
        return None
    samples["ts"] = pd.to_numeric(samples["ts"], errors="coerce")
    samples["value"] = pd.to_numeric(samples["value"], errors="coerce")
    samples = samples.dropna(subset=["ts", "value", "sensor", "device", "metric"])
    return samples.sort_values("ts", kind="stable").reset_index(drop=True)


def finite(value: Any) -> bool:
    """A real number, not a bool, not NaN or infinite: what a JSON field must be to be used."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

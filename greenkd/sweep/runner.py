"""Running a sweep: the teacher once, then each run not yet complete as a profiled child process.

Each run is `python -m greenkd distill --config ...` under `profilers.run_command`; the state
goes to sweep.json after every change, and the report is written once every run has ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from greenkd.config import check_model_and_dataset
from greenkd.fileio import read_json
from greenkd.rundir import RunDir
from greenkd.sweep.machine import check_devices, cores_per_device, this_machine
from greenkd.sweep.progress import print_run_line, run_progress
from greenkd.sweep.spec import SweepRun, SweepSpec
from greenkd.sweep.state import (
    ATTEMPTS_DIR,
    SWEEP_FILE,
    RunRecord,
    SweepState,
    check_same_settings,
    is_complete,
    set_aside,
    settings_diff,
    sweep_dir_for,
)
from greenkd.sweep.teacher import prepare_teacher

RUN_LOG = "distill.log"
# The child's stdout and stderr (TensorFlow's logging included) go to the run's log, not over the
# progress bars; `exec` keeps the distill process the profiler's direct child, so signals reach it.
_LOG_WRAPPER = 'log=$1; shift; exec "$@" >"$log" 2>&1'


@dataclass
class SweepResult:
    """What a finished sweep leaves: its directory, its report, and how its runs ended."""

    sweep_dir: Path
    report: Path
    records: list[RunRecord]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status != "complete"]


def run_sweep(
    spec: SweepSpec,
    out: str | Path = "results",
    reports: str | Path = "reports",
    *,
    resume: bool = False,
    name_given: bool = False,
    quiet: bool = False,
    console: Console | None = None,
    python: str = sys.executable,
) -> SweepResult:
    """Run every configuration of the grid not already complete, then write the report."""
    machine = this_machine()
    check_devices(spec, machine)
    out = Path(out)
    sweep_dir = sweep_dir_for(spec, out, resume=resume, name_given=name_given)
    plan = spec.expand(sweep_dir, cores_per_device=cores_per_device(spec, machine))
    if console is None:
        console = Console(quiet=quiet)
        if not console.is_terminal:  # a pipe or a log file: one line per run, not wrapped at 80
            console = Console(quiet=quiet, width=200)
    previous = read_json(sweep_dir / SWEEP_FILE) if resume else None
    if resume and previous is None:
        console.print(f"nothing to resume at {sweep_dir}: starting it")
    state = SweepState(
        path=sweep_dir,
        name=sweep_dir.name,
        spec=spec,
        machine=machine,
        created_ts=float((previous or {}).get("created_ts") or time.time()),
        records=[RunRecord.planned(r) for r in plan],
        teacher=(previous or {}).get("teacher"),
        teachers=(previous or {}).get("teachers"),
    )
    earlier = {r.get("run"): r for r in (previous or {}).get("runs") or [] if isinstance(r, dict)}
    todo: list[tuple[SweepRun, RunRecord]] = []
    for run, record in zip(plan, state.records, strict=True):
        run_dir = sweep_dir / run.name
        if resume and is_complete(run_dir):
            check_same_settings(run, run_dir)
            old = earlier.get(run.name) or {}
            for key in ("exit_code", "started_ts", "ended_ts", "seconds", "load_start", "load_end"):
                setattr(record, key, old.get(key))
            record.status, record.attempts = "complete", int(old.get("attempts") or 1)
        else:
            record.attempts = int((earlier.get(run.name) or {}).get("attempts") or 0)
            todo.append((run, record))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    state.save()
    console.print(
        f"[bold]sweep {state.name}[/]: {len(plan)} runs ({len(plan) - len(todo)} already complete) "
        f"on {machine.describe()} -> {sweep_dir}"
    )
    with _terminate_as_interrupt():
        try:
            if todo:
                # names and files are checked here at once; the rest waits for the teacher step
                check_model_and_dataset(plan[0].config)
                _prepare_teachers(state, plan, todo, console, python)
            runner = _Runner(state, console, python)
            for i, (run, record) in enumerate(todo):
                runner.run(run, record, position=(len(plan) - len(todo) + i, len(plan)))
        except KeyboardInterrupt:
            state.status = "interrupted"
            for record in state.records:
                if record.status == "running":
                    record.status = "partial"
                    record.error = record.error or "interrupted"
                    record.interrupted = True
            state.save()
            resume_flags = f"--resume --name {state.name}" + (
                f" --out {out}" if str(out) != "results" else ""
            )
            print(
                f"greenkd: sweep {state.name} interrupted; finished runs are kept. "
                f"Finish it with: greenkd sweep {resume_flags} (and the same settings)",
                file=sys.stderr,
            )
            raise
        except (
            BaseException
        ) as exc:  # a user error (the teacher's settings) or a crash: say so, then re-raise
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
            state.save()
            raise
    state.status = "complete"
    state.save()
    from greenkd.report import write_report  # pandas and plotly load here only

    report = write_report(sweep_dir, reports)
    return SweepResult(sweep_dir, report, state.records)


def _prepare_teachers(
    state: SweepState,
    plan: list[SweepRun],
    todo: list[tuple[SweepRun, RunRecord]],
    console: Console,
    python: str,
) -> None:
    """The teacher of every framework with runs left, each trained (or loaded) by its framework.

    A sweep of one framework keeps sweep.json's `teacher` and teacher.json as before; a sweep of
    several also records `teachers` by framework (teacher-FRAMEWORK.json)."""
    frameworks = state.spec.frameworks
    if len(frameworks) == 1:
        state.teacher = prepare_teacher(plan[0].config, state.path, console, python)
        state.save()
        return
    left = {run.framework for run, _ in todo}
    teachers = dict(state.teachers or {})
    for framework in frameworks:
        if framework not in left:
            continue
        first = next(run for run in plan if run.framework == framework)
        teachers[framework] = prepare_teacher(
            first.config, state.path, console, python, tag=framework
        )
        state.teachers = teachers
        state.teacher = teachers.get(frameworks[0]) or teachers[framework]
        state.save()


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system stopping the job) ends the sweep like Ctrl-C: state saved, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Runner:
    """Runs one configuration under the profiler and records how it ended."""

    def __init__(self, state: SweepState, console: Console, python: str) -> None:
        self.state = state
        self.console = console
        self.python = python
        self.n_targets = int((state.teacher or {}).get("n_targets") or 0)

    def run(self, run: SweepRun, record: RunRecord, position: tuple[int, int]) -> None:
        import profilers

        sweep_dir = self.state.path
        run_dir = sweep_dir / run.name
        set_aside(run_dir, sweep_dir / ATTEMPTS_DIR)
        run_dir.mkdir(parents=True)
        rundir = RunDir(run_dir)
        rundir.write_config(run.config, **run.meta(self.state.name))
        argv = [
            "/bin/sh",
            "-c",
            _LOG_WRAPPER,
            "sh",
            str(run_dir / RUN_LOG),
            self.python,
            "-m",
            "greenkd",
            "distill",
            "--config",
            str(rundir.config_json),
            "--out",
            str(run_dir),
            "--quiet",
        ]
        used_gpus = self.state.machine.used_gpus(run.devices)
        record.status, record.error, record.interrupted = "running", None, False
        record.started_ts, record.ended_ts, record.exit_code = time.time(), None, None
        record.load_start, record.load_end = os.getloadavg()[0], None
        record.attempts += 1
        self.state.save()
        code: int | None = None
        try:
            with run_progress(self.console, run.name, run_dir, position, self.n_targets):
                code = profilers.run_command(
                    argv,
                    out=run_dir,
                    hz=self.state.spec.hz,
                    idle_seconds=self.state.spec.idle_seconds,
                    power_model=self.state.spec.power_model,
                    gpus=used_gpus,
                    summary_name="profile.json",
                )
        except profilers.CommandInterrupted as exc:
            self._finish(run, record, run_dir, exc.exit_code, interrupted=", ".join(exc.signals))
            raise
        except KeyboardInterrupt:
            self._finish(run, record, run_dir, None, interrupted="SIGINT")
            raise
        self._finish(run, record, run_dir, code)
        print_run_line(self.console, run.name, record, run_dir)

    def _finish(
        self,
        run: SweepRun,
        record: RunRecord,
        run_dir: Path,
        code: int | None,
        interrupted: str | None = None,
    ) -> None:
        """Record how the run ended, from the run's own summary.json where it wrote one."""
        record.ended_ts, record.exit_code = time.time(), code
        record.load_end = os.getloadavg()[0]
        rundir = RunDir(run_dir)
        summary = read_json(rundir.summary_json)
        if summary is not None:
            record.status = str(summary.get("status") or "failed")
            record.error = summary.get("error")
            record.seconds = (summary.get("seconds") or {}).get("total")
        else:
            record.status = "failed"
            record.error = _failure_text(run_dir / RUN_LOG, code)
        has_config = read_json(rundir.config_json) is not None
        differ = settings_diff(run, run_dir) if has_config else []
        if record.status == "complete" and differ:  # never count a run made with other settings
            record.status = "failed"
            record.error = "the run did not use its planned settings: " + ", ".join(differ[:4])
        if interrupted:
            record.interrupted = True
            if record.status == "complete":  # it finished just as the signal came
                record.interrupted = False
            else:
                record.error = f"interrupted by {interrupted}" + (
                    f" ({record.error})" if record.error else ""
                )
        # The child rewrote config.json with its own meta; put the sweep's back beside it.
        rundir.add_meta(**run.meta(self.state.name))
        self.state.save()


def _failure_text(log: Path, code: int | None) -> str:
    """Why a run left no summary.json: its exit status and the last line it wrote."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        lines = []
    status = (
        "no exit status"
        if code is None
        else (
            f"killed by {signal.Signals(code - 128).name}"
            if 128 < code < 128 + signal.NSIG
            else f"exit code {code}"
        )
    )
    return f"{status}: {lines[-1]}" if lines else f"{status}, no output"

"""`greenkd sweep`: a grid of distillation runs, each its own process under the profiler, resumable.

    SweepSpec ─► [SweepRun] ─► teacher trained once (a child process; cached by its settings)
        for each run: results/<sweep>/<run>/config.json, then
            profilers.run_command(python -m greenkd distill --config ... --quiet)
            ─► tasks.csv, blocks/, student.keras, summary.json (the child) + samples.csv, profile.json
        sweep.json after every change of state ─► greenkd.report.write_report ─► reports/<sweep>/report.html

A run whose summary.json says `complete` is never run again by `--resume`; a partial or
failed one is moved to `.attempts/` and run again. TensorFlow is never imported here: the
parent of a sweep must not hold a GPU its runs need.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from greenkd import devices as devices_mod
from greenkd.config import RunConfig, SweepRun, SweepSpec
from greenkd.errors import GreenkdError
from greenkd.fileio import read_json, write_json_atomic

SWEEP_FILE = "sweep.json"
TEACHER_FILE = "teacher.json"
RUN_LOG = "distill.log"
ATTEMPTS_DIR = ".attempts"
# The child's stdout and stderr (TensorFlow's logging included) go to the run's log, not over the
# progress bars; `exec` keeps the distill process the profiler's direct child, so signals reach it.
_LOG_WRAPPER = 'log=$1; shift; exec "$@" >"$log" 2>&1'
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


@dataclass(frozen=True)
class Machine:
    """What a sweep can spread runs over here: GPUs, else CPU cores."""

    kind: str  # "gpu" or "cpu"
    gpus: int
    cores: int

    @property
    def devices(self) -> int:
        return self.gpus if self.kind == "gpu" else self.cores

    def describe(self) -> str:
        if self.kind == "gpu":
            return f"{self.gpus} GPU(s)"
        return f"no GPU: CPU workers on {self.cores} core(s)"


def this_machine() -> Machine:
    """GPUs through NVML (no TensorFlow), else the cores this process may run on."""
    gpus = devices_mod.gpu_count()
    cores = len(devices_mod.allowed_cores())
    return Machine("gpu" if gpus else "cpu", gpus, cores)


def check_devices(spec: SweepSpec, machine: Machine) -> None:
    """Refuse device counts the machine does not have, unless oversubscription is allowed."""
    most = max(spec.devices)
    if most <= machine.devices or spec.allow_oversubscribe:
        return
    have = (
        f"{machine.gpus} GPU(s)"
        if machine.kind == "gpu"
        else f"no GPU and {machine.cores} CPU core(s) for CPU workers"
    )
    raise GreenkdError(
        f"--gpus asks for {most} devices but this machine has {have}; "
        "use fewer or pass --allow-oversubscribe to share them"
    )


def cores_per_device(spec: SweepSpec, machine: Machine) -> int:
    """Cores each CPU device gets at every device count, so speedups compare equal devices."""
    return max(1, machine.cores // max(spec.devices))


# ----------------------------------------------------------------------------- state


@dataclass
class RunRecord:
    """A run's line in sweep.json."""

    run: str
    devices: int
    sched: str
    threads: str
    repeat: int
    baseline_for: list[str] = field(default_factory=list)
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
            run.name, run.devices, run.sched, run.threads, run.repeat, list(run.baseline_for)
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
    teacher: dict[str, Any] | None = None
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


# ----------------------------------------------------------------------------- the sweep


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
                state.teacher = prepare_teacher(plan[0].config, sweep_dir, console, python)
                state.save()
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


def prepare_teacher(
    cfg: RunConfig, sweep_dir: Path, console: Console, python: str
) -> dict[str, Any]:
    """Train (or load) the teacher once in a child process, so that no run's time includes it."""
    result_path = sweep_dir / TEACHER_FILE
    result_path.unlink(missing_ok=True)
    log_path = sweep_dir / "teacher.log"
    argv = [
        python,
        "-c",
        "from greenkd.sweep import teacher_main; teacher_main()",
        json.dumps(cfg.to_dict(), default=str),
        str(result_path),
    ]
    with (
        console.status("teacher: loading, or training it once (cached by its settings)"),
        log_path.open("w") as log,
    ):
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    result = read_json(result_path)
    if code != 0 or result is None:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("greenkd: error: ")]
        if errors:  # a user error in the settings (unknown dataset, missing model file ...)
            raise GreenkdError(errors[-1].removeprefix("greenkd: error: "))
        last = lines[-1] if lines else f"exit code {code}"
        raise GreenkdError(f"preparing the teacher failed: {last} (full log: {log_path})")
    state = {"file": "from its file", "cached": "cached"}.get(
        result["source"], f"trained in {result['train_seconds']:.0f} s"
    )
    console.print(
        f"teacher {Path(result['path']).name} ({state}): top-1 {result['accuracy']:.2%}, "
        f"{result['n_targets']} layer tasks"
    )
    return result


def teacher_main() -> None:
    """Child entry: argv = [config JSON, result path]; writes the teacher's path, accuracy, task count."""
    try:
        cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
        from greenkd import models
        from greenkd.distill.run import prepare

        setup = prepare(cfg)
        source = (
            "file"
            if cfg.model not in models.ZOO
            else "trained"
            if setup.teacher.trained_now
            else "cached"
        )
        write_json_atomic(
            sys.argv[2],
            {
                "path": str(setup.teacher.path),
                "source": source,
                "accuracy": setup.teacher.accuracy,
                "trained_now": setup.teacher.trained_now,
                "train_seconds": setup.teacher.seconds,
                "n_targets": len(setup.targets),
                "targets": [t.name for t in setup.targets],
            },
        )
    except GreenkdError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        sys.exit(2)


class _Runner:
    """Runs one configuration under the profiler and draws its progress."""

    def __init__(self, state: SweepState, console: Console, python: str) -> None:
        self.state = state
        self.console = console
        self.python = python
        self.n_targets = int((state.teacher or {}).get("n_targets") or 0)

    def run(self, run: SweepRun, record: RunRecord, position: tuple[int, int]) -> None:
        import profilers

        sweep_dir = self.state.path
        run_dir = sweep_dir / run.name
        _set_aside(run_dir, sweep_dir / ATTEMPTS_DIR)
        run_dir.mkdir(parents=True)
        config_path = run_dir / "config.json"
        run.config.write(config_path, **run.meta(self.state.name))
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
            str(config_path),
            "--out",
            str(run_dir),
            "--quiet",
        ]
        used_gpus = list(range(min(run.devices, self.state.machine.gpus))) or None
        record.status, record.error, record.interrupted = "running", None, False
        record.started_ts, record.ended_ts, record.exit_code = time.time(), None, None
        record.load_start, record.load_end = os.getloadavg()[0], None
        record.attempts += 1
        self.state.save()
        code: int | None = None
        try:
            with self._progress(run, run_dir, position):
                code = profilers.run_command(
                    argv,
                    out=run_dir,
                    hz=self.state.spec.hz,
                    idle_seconds=self.state.spec.idle_seconds,
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
        self._print_line(run, record, run_dir)

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
        summary = read_json(run_dir / "summary.json")
        if summary is not None:
            record.status = str(summary.get("status") or "failed")
            record.error = summary.get("error")
            record.seconds = (summary.get("seconds") or {}).get("total")
        else:
            record.status = "failed"
            record.error = _failure_text(run_dir / RUN_LOG, code)
        payload = read_json(run_dir / "config.json")
        differ = settings_diff(run, run_dir) if payload is not None else []
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
        if payload is not None:
            payload["meta"] = {**(payload.get("meta") or {}), **run.meta(self.state.name)}
            write_json_atomic(run_dir / "config.json", payload)
        self.state.save()

    def _print_line(self, run: SweepRun, record: RunRecord, run_dir: Path) -> None:
        if record.status != "complete":
            self.console.print(f"  {run.name:<22} [red]{record.status}[/]  {record.error}")
            return
        summary = read_json(run_dir / "summary.json") or {}
        profile = read_json(run_dir / "profile.json") or {}
        energy_j = (profile.get("total") or {}).get("energy_j")
        energy = f"{energy_j / 1e3:.2f} kJ" if isinstance(energy_j, int | float) else "energy n/a"
        accepted = len(summary.get("accepted") or [])
        self.console.print(
            f"  {run.name:<22} [green]complete[/] {record.seconds or 0:7.1f} s  "
            f"top-1 {summary.get('student_accuracy', float('nan')):.2%} "
            f"(teacher {summary.get('teacher_accuracy', float('nan')):.2%})  "
            f"{accepted}/{summary.get('n_targets', '?')} blocks  {energy}"
        )

    @contextlib.contextmanager
    def _progress(self, run: SweepRun, run_dir: Path, position: tuple[int, int]) -> Iterator[None]:
        """A bar over the sweep's runs and one over this run's layer tasks (tasks.csv rows)."""
        if self.console.quiet or not self.console.is_terminal:  # a log gets the per-run lines only
            yield
            return
        done, total = position
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            auto_refresh=False,
        )
        progress.add_task(f"runs · {run.name}", total=total, completed=done)
        tasks_bar = progress.add_task("layer tasks", total=self.n_targets or None)
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                rows = _count_rows(run_dir / "tasks.csv")
                note = "layer tasks"
                if self.n_targets and rows >= self.n_targets:
                    note = "assembling and fine-tuning"
                progress.update(tasks_bar, completed=rows, description=note)
                progress.refresh()

        progress.start()
        # The poller must not take SIGINT/SIGTERM/SIGCHLD: the profiler waits for them in this
        # (the main) thread to forward them to the run; a new thread inherits the blocked mask.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            poller = threading.Thread(target=poll, name="greenkd-sweep-progress", daemon=True)
            poller.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            yield
        finally:
            stop.set()
            poller.join()
            progress.stop()


def _set_aside(run_dir: Path, attempts: Path) -> None:
    """Keep an unfinished earlier attempt of a run under .attempts/ instead of overwriting it."""
    if not run_dir.exists():
        return
    attempts.mkdir(exist_ok=True)
    k = 1
    while (attempts / f"{run_dir.name}.{k}").exists():
        k += 1
    run_dir.rename(attempts / f"{run_dir.name}.{k}")


def _count_rows(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return max(0, sum(1 for line in fh if line.endswith(b"\n")) - 1)
    except FileNotFoundError:
        return 0


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

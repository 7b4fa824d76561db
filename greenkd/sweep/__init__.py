"""`greenkd sweep`: a grid of distillation runs, each its own process under the profiler, resumable.

    SweepSpec ─► [SweepRun] ─► teacher trained once (a child process; cached by its settings)
        for each run: results/<sweep>/<run>/config.json, then
            profilers.run_command(python -m greenkd distill --config ... --quiet)
            ─► tasks.csv, blocks/, student.keras, summary.json (the child) + samples.csv, profile.json
        sweep.json after every change of state ─► greenkd.report.write_report ─► reports/<sweep>/report.html

spec.py      the grid (SweepSpec, SweepRun), the built-in default and experiment TOMLs
machine.py   what the runs spread over here (GPUs, else CPU cores) and the device counts allowed
state.py     sweep.json and the resume rules
teacher.py   the teacher, prepared once in a child process
runner.py    run_sweep: each run under the profiler, then the report
progress.py  the bars and per-run lines a sweep prints

A run whose summary.json says `complete` is never run again by `--resume`; a partial or
failed one is moved to `.attempts/` and run again. TensorFlow is never imported here: the
parent of a sweep must not hold a GPU its runs need.
"""

from greenkd.sweep.machine import Machine, check_devices, cores_per_device, this_machine
from greenkd.sweep.runner import SweepResult, run_sweep
from greenkd.sweep.spec import (
    DEFAULT_SWEEP_DESCRIPTION,
    DEFAULT_SWEEP_RUN,
    SweepRun,
    SweepSpec,
    resolve_experiment,
)
from greenkd.sweep.state import RunRecord, SweepState, sweep_dir_for
from greenkd.sweep.teacher import prepare_teacher

__all__ = [
    "DEFAULT_SWEEP_DESCRIPTION",
    "DEFAULT_SWEEP_RUN",
    "Machine",
    "RunRecord",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "SweepState",
    "check_devices",
    "cores_per_device",
    "prepare_teacher",
    "resolve_experiment",
    "run_sweep",
    "sweep_dir_for",
    "this_machine",
]

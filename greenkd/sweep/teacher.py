"""The sweep's teacher: trained (or loaded) once in a child process, so that no run's time includes it.

The parent holds no TensorFlow: `prepare_teacher` starts `teacher_main` as
`python -c "from greenkd.sweep.teacher import teacher_main; teacher_main()"` and reads back the
teacher.json it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from greenkd.config import RunConfig
from greenkd.errors import GreenkdError
from greenkd.fileio import read_json, write_json_atomic

TEACHER_FILE = "teacher.json"
TEACHER_LOG = "teacher.log"


def prepare_teacher(
    cfg: RunConfig, sweep_dir: Path, console: Console, python: str, *, tag: str = ""
) -> dict[str, Any]:
    """Train (or load) the teacher once in a child process, so that no run's time includes it.

    `tag` names its files (teacher-TAG.json, teacher-TAG.log): a sweep of several frameworks
    prepares one teacher per framework."""
    suffix = f"-{tag}" if tag else ""
    result_path = sweep_dir / TEACHER_FILE.replace(".json", f"{suffix}.json")
    result_path.unlink(missing_ok=True)
    log_path = sweep_dir / TEACHER_LOG.replace(".log", f"{suffix}.log")
    argv = [
        python,
        "-c",
        "from greenkd.sweep.teacher import teacher_main; teacher_main()",
        json.dumps(cfg.to_dict(), default=str),
        str(result_path),
    ]
    with (
        console.status("teacher: loading, or training it once (cached by its settings)"),
        log_path.open("w") as log,
    ):
        code = subprocess.run(
            argv, stdout=log, stderr=subprocess.STDOUT, env=teacher_env(cfg.framework), check=False
        ).returncode
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
    training = result.get("training")
    how = f", {training['epochs_run']} epochs, {training['stopped']}" if training else ""
    console.print(
        f"{tag + ' ' if tag else ''}teacher {Path(result['path']).name} ({state}{how}): top-1 {result['accuracy']:.2%}, "
        f"{result['n_targets']} layer tasks{_skipped_text(result)}"
    )
    return result


def _skipped_text(result: dict) -> str:
    skipped = [s["name"] for s in result.get("skipped_targets") or []]
    if not skipped:
        return ""
    return f" ({', '.join(skipped)} skipped: block larger than the conv)"


def teacher_env(framework: str = "tensorflow") -> dict[str, str]:
    """The teacher child's environment: it trains on one GPU (the first the sweep may use) or
    none, and takes memory as it needs it, never every GPU of the node; Keras loads
    `framework` there."""
    from greenkd.devices import GPU_MEMORY_ENV, NO_GPU_ENV, framework_env, visible_gpus
    from profilers.gpus import visible_env

    gpus = visible_gpus()
    return {
        **os.environ,
        **(visible_env(gpus[0]) if gpus else NO_GPU_ENV),
        **GPU_MEMORY_ENV,
        **framework_env(framework),
    }


def teacher_main() -> None:
    """Child entry: argv = [config JSON, result path]; writes the teacher's path, accuracy, how
    its training stopped, and its layer tasks."""
    try:
        cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
        # TensorFlow loads here, in the child only.
        from greenkd import models
        from greenkd.distill.setup import prepare

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
                # how a zoo teacher's training stopped (also when it was cached); None for a file
                "training": setup.teacher.training_record(),
                "n_targets": len(setup.targets),
                "targets": [t.name for t in setup.targets],
                # no task: their block would be larger than the conv (replace_growing)
                "skipped_targets": [s.to_dict() for s in setup.skipped],
            },
        )
    except GreenkdError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        sys.exit(2)

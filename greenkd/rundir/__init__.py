"""The one place that writes a run directory (DESIGN.md, "The run directory").

config.json    the RunConfig, greenkd version, host, devices
tasks.csv      one row per layer task, appended and flushed as each finishes
blocks/        each finished task's block weights (.npz), so a killed run loses nothing
student.keras  the assembled, fine-tuned student
plan.json      the schedule as planned (devices, assignment, predicted loads), before the tasks run
summary.json   written last and atomically; its `status` says complete, partial or failed

A sweep writes a run's config.json before the run starts (`write_config`) and adds its own
meta back after the run rewrote it (`add_meta`); the run itself calls `create`.

The reader of run and sweep directories (pandas) sits beside this writer: `greenkd.rundir.read`.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from greenkd import __version__
from greenkd.config import RunConfig
from greenkd.fileio import read_json, write_json_atomic

TASK_COLUMNS = (
    "task",
    "index",
    "device",
    "host",
    "pid",
    "start",
    "end",
    "seconds",
    "seconds_setup",
    "seconds_train",
    "seconds_eval",
    "seconds_compile",
    "epochs",
    "best_epoch",
    "stop",
    "kernel",
    "strides",
    "params_before",
    "params_after",
    "flops_before",
    "flops_after",
    "mse_first",
    "mse_best",
    "accuracy",
    "accepted",
    "fused_group",
    "block_step_s",
    "trunk_step_s",
    "seconds_block",
    "seconds_trunk",
)


class RunDir:
    """A run's output directory; every writer of run files goes through here."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def tasks_csv(self) -> Path:
        return self.path / "tasks.csv"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def student_keras(self) -> Path:
        return self.path / "student.keras"

    def create(self, cfg: RunConfig, **meta: Any) -> None:
        """Start a fresh run: config.json written, stale task rows and summary removed."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (self.tasks_csv, self.summary_json):
            stale.unlink(missing_ok=True)
        meta = {
            "version": __version__,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created_ts": time.time(),
            **meta,
        }
        self.write_config(cfg, **meta)

    @property
    def config_json(self) -> Path:
        return self.path / "config.json"

    @property
    def plan_json(self) -> Path:
        return self.path / "plan.json"

    def write_config(self, cfg: RunConfig, **meta: Any) -> None:
        """config.json: the settings plus `meta` (version, host, devices ...)."""
        cfg.write(self.config_json, **meta)

    def add_meta(self, **meta: Any) -> None:
        """Merge `meta` into an existing config.json's meta (a sweep's labels after its run)."""
        payload = read_json(self.config_json)
        if payload is None:
            return
        payload["meta"] = {**(payload.get("meta") or {}), **meta}
        write_json_atomic(self.config_json, payload)

    def write_plan(self, plan: dict[str, Any]) -> None:
        """plan.json: the schedule as predicted, written before the tasks run."""
        write_json_atomic(self.plan_json, plan)

    def append_task(self, row: dict[str, Any]) -> None:
        """Append one task row to tasks.csv and flush it to disk."""
        new = not self.tasks_csv.exists()
        with self.tasks_csv.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=TASK_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in TASK_COLUMNS})
            fh.flush()
            os.fsync(fh.fileno())

    def save_block(self, name: str, weights: list[np.ndarray]) -> None:
        blocks = self.path / "blocks"
        blocks.mkdir(exist_ok=True)
        tmp = blocks / f".{name}.tmp.npz"
        np.savez(tmp, *weights)
        tmp.replace(blocks / f"{name}.npz")

    def load_block(self, name: str) -> list[np.ndarray]:
        with np.load(self.path / "blocks" / f"{name}.npz") as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_json, summary)

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_json.is_file():
            return None
        return json.loads(self.summary_json.read_text())


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.6f}"
    return "" if value is None else value

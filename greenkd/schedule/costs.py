"""Where task costs come from: a timing file, the timing store, or an analytic estimate (issue 5).

Sources, recorded in `Plan.cost_source`: "timings-file" (`--timings FILE`), "store"
(times measured by earlier runs with the same model, dataset, settings and hardware),
"calibration" (a few timed steps, measured by the distill side) and "analytic".
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError
from greenkd.fileio import write_json_atomic
from greenkd.schedule.core import TaskCost

STORE_ENV = "GREENKD_TIMINGS"
DEFAULT_STORE = "~/.cache/greenkd/timings.json"
_STORE_FORMAT = 1


def timing_key(model: str, dataset: str, settings: Mapping[str, Any], hardware: str) -> str:
    """Key for one measured configuration: readable parts plus a digest of the settings."""
    blob = json.dumps(dict(settings), sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"{model}|{dataset}|{hardware}|{digest}"


def default_store_path() -> Path:
    """$GREENKD_TIMINGS, else ~/.cache/greenkd/timings.json."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()


class TimingStore:
    """Measured task times per timing key, in one JSON file shared by all runs."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()

    def _read(self) -> dict[str, Any]:
        try:
            payload = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"format": _STORE_FORMAT, "entries": {}}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GreenkdError(
                f"timing store {self.path} is unreadable ({exc}); delete it or set "
                f"{STORE_ENV} to another path"
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("entries"), dict):
            raise GreenkdError(
                f"timing store {self.path} has no 'entries' table; delete it or set "
                f"{STORE_ENV} to another path"
            )
        return payload

    def get(self, key: str) -> dict[str, TaskCost] | None:
        """The stored costs for `key` by task name, or None if nothing was stored."""
        entry = self._read()["entries"].get(key)
        if not entry:
            return None
        try:
            return {
                name: TaskCost(name, float(t["seconds"]), float(t.get("prefix_seconds", 0.0)))
                for name, t in entry["tasks"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise GreenkdError(
                f"timing store {self.path}: entry {key!r} is malformed; delete the file or "
                f"set {STORE_ENV} to another path"
            ) from None

    def lookup(self, key: str, names: Sequence[str]) -> list[TaskCost] | None:
        """Costs for exactly `names`, in that order, or None unless every one is stored."""
        stored = self.get(key)
        if stored is None or any(name not in stored for name in names):
            return None
        return [stored[name] for name in names]

    def put(self, key: str, costs: Iterable[TaskCost] | Mapping[str, TaskCost]) -> None:
        """Merge `costs` into the entry for `key` (newer times win) and rewrite atomically."""
        items = list(costs.values()) if isinstance(costs, Mapping) else list(costs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        # Runs finishing together must not drop each other's times: read-merge-write under a lock.
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            payload = self._read()
            entry = payload["entries"].setdefault(key, {"tasks": {}})
            for c in items:
                entry["tasks"][c.name] = {"seconds": c.seconds, "prefix_seconds": c.prefix_seconds}
            entry["updated_ts"] = time.time()
            payload["format"] = _STORE_FORMAT
            write_json_atomic(self.path, payload)


def _number(row: dict[str, str], column: str, where: str) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise GreenkdError(f"{where}: column {column!r} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise GreenkdError(f"{where}: column {column!r} is {text!r}, not a finite number")
    return value


def load_timings_file(path: str | Path) -> list[TaskCost]:
    """Read task costs from a CSV `task,seconds[,prefix_seconds]` or a run's tasks.csv.

    A tasks.csv without a `seconds` column gives `end - start`; `prefix_seconds` or
    `seconds_prefix` gives the teacher-prefix share. Rows are put in model order by a
    `task_index` or `index` column, else kept in file order. `#` lines are comments.
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise GreenkdError(f"timings file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GreenkdError(f"timings file {path} cannot be read: {exc}") from None
    reader = csv.DictReader(lines)
    columns = set(reader.fieldnames or [])
    if "task" not in columns:
        raise GreenkdError(
            f"timings file {path} needs a header with a 'task' column (task,seconds or a run's tasks.csv)"
        )
    if "seconds" not in columns and not {"start", "end"} <= columns:
        raise GreenkdError(
            f"timings file {path} needs a 'seconds' column or 'start' and 'end' columns"
        )
    prefix_column = next((c for c in ("prefix_seconds", "seconds_prefix") if c in columns), None)
    # tasks.csv rows are appended as tasks finish; its `index` is the task's model position
    order_column = next((c for c in ("task_index", "index") if c in columns), None)
    rows: list[tuple[float, TaskCost]] = []
    seen: set[str] = set()
    for line_no, row in enumerate(reader, start=2):
        where = f"timings file {path}, row {line_no}"
        name = (row.get("task") or "").strip()
        if not name:
            raise GreenkdError(f"{where}: empty task name")
        if name in seen:
            raise GreenkdError(f"{where}: task {name!r} appears twice")
        seen.add(name)
        if "seconds" in columns:
            seconds = _number(row, "seconds", where)
        else:
            seconds = _number(row, "end", where) - _number(row, "start", where)
        prefix = _number(row, prefix_column, where) if prefix_column else 0.0
        if seconds < 0 or not 0 <= prefix <= seconds:
            raise GreenkdError(
                f"{where}: need 0 <= prefix seconds ({prefix}) <= seconds ({seconds})"
            )
        index = _number(row, order_column, where) if order_column else float(len(rows))
        rows.append((index, TaskCost(name, seconds, prefix)))
    if not rows:
        raise GreenkdError(f"timings file {path} has a header but no task rows")
    return [cost for _, cost in sorted(rows, key=lambda r: r[0])]


# Analytic model. Per image and step a layer task runs the teacher up to its target
# (prefix FLOPs), the block forward and backward (~3x its FLOPs), moves its input and
# output activations through memory-bound work (batch norm, activations, depthwise
# convolution, the loss, their gradients), and pays a fixed share (evaluation of the
# spliced model, data pipeline) close to one full teacher pass. FLOPs alone rank the
# VGG16 tasks backwards (Spearman -0.85 on the reference shape): the reference runs took
# longest on the early layers, whose 32x32x64 activations are 30x the late ones'.
# ELEMENT_FLOPS and FIXED_FULL_PASSES are a least-squares fit to that shape
# (benchmarks/schedule_vgg16_times.csv, derived from issue 7's aggregate figures; the
# fit is within 12% per task, Spearman 0.99). Measured times replace them whenever any exist.
ELEMENT_FLOPS = 26000.0  # FLOP-equivalents per activation element (input + output)
FIXED_FULL_PASSES = 0.87  # per-task fixed work, in full teacher forwards (deepest prefix)
NOMINAL_FLOPS_PER_S = 5e12  # effective, not peak: small convolutions and batches


def _get(info: Mapping[str, Any], key: str, alias: str) -> Any:
    return info[key] if key in info or alias not in info else info[alias]


def _elements(info: Mapping[str, Any], side: str) -> float:
    """`<side>_elements`, or the product of a distill Target's `<side>_shape`."""
    if f"{side}_elements" not in info and f"{side}_shape" in info:
        return float(math.prod(info[f"{side}_shape"]))
    return float(info[f"{side}_elements"])


def analytic_costs(
    targets_info: Sequence[Mapping[str, Any]],
    *,
    images: int = 1,
    flops_per_s: float = NOMINAL_FLOPS_PER_S,
    element_flops: float = ELEMENT_FLOPS,
    fixed_full_passes: float = FIXED_FULL_PASSES,
) -> list[TaskCost]:
    """Estimate task costs from per-image FLOPs and activation sizes, when nothing was measured.

    Each dict has `name, prefix_flops, block_flops, input_elements, output_elements`
    (per image; a distill `Target.to_dict()` works too: `flops_after`, `input_shape`,
    `output_shape`); `images` is how many images a task processes (epochs x training set).
    The seconds are nominal; their ratios are what the policies use.
    """
    if flops_per_s <= 0 or images < 1 or element_flops < 0 or fixed_full_passes < 0:
        raise GreenkdError(
            "analytic cost model needs flops_per_s > 0, images >= 1, and non-negative weights"
        )
    rows = []
    for info in targets_info:
        try:
            rows.append(
                (
                    str(info["name"]),
                    float(info["prefix_flops"]),
                    float(_get(info, "block_flops", "flops_after")),
                    _elements(info, "input") + _elements(info, "output"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GreenkdError(
                f"analytic cost model: target info {dict(info)!r} lacks a number for {exc}"
            ) from None
    full_pass_flops = max((r[1] for r in rows), default=0.0)
    out = []
    for name, prefix_flops, block_flops, elements in rows:
        prefix_s = images * prefix_flops / flops_per_s
        own_flops = (
            3.0 * block_flops + element_flops * elements + fixed_full_passes * full_pass_flops
        )
        out.append(TaskCost(name, prefix_s + images * own_flops / flops_per_s, prefix_s))
    return out

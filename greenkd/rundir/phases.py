"""Whole-run accounting: each phase's share of a run and the Amdahl bound its serial phases set.

A run's `seconds` (summary.json) are by the phases the run went through; a reader of the whole
run's efficiency wants them as the five parts that decide it:

- `setup`: data, teacher and targets in the run's own process (serial);
- `tasks`: the layer tasks, spread over the devices;
- `selection`: choosing and assembling the student, evaluation included, fine-tuning left out
  (serial, but for target mode's spliced evaluations, `evaluate_in_select`, where they ran on
  the workers: then `selection` is in `parallel` and only those seconds count as spread);
- `finetune`: every fine-tune of the run, the brief ones that target-mode selection runs and the
  run's own (spread over the devices when data-parallel, else serial);
- `other`: the rest of `total` (writing the student, the summary's own sums).

**The bound.** With S the seconds of the serial parts and P those of the parts spread over n
devices, a 1-device run of the same work takes at most S + n·P (its parallel parts are at most n
times longer there, short of superlinear effects), so this run's efficiency T1 / (n·T) can be at
most
(S + n·P) / (n·(S + P)): Amdahl's law read from the n-device run itself. 1 for a 1-device run; its
`serial_share` s gives the bound for any n: 1 / (n·s + 1 - s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

PARTS = ("setup", "tasks", "selection", "finetune", "other")


def _seconds(seconds: Mapping[str, Any], key: str) -> float:
    value = seconds.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def whole_run(
    seconds: Mapping[str, Any], n_devices: int, parallel: Iterable[str] = ("tasks",)
) -> dict[str, Any]:
    """The run's parts (PARTS) in seconds and as shares of `total`, which of them ran spread
    over the devices, the serial share and the Amdahl bound of efficiency for `n_devices`.

    `seconds` is summary.json's: `setup`, `tasks`, `select`, `assemble`, `finetune`,
    `finetune_in_select` (the part of `select` spent fine-tuning), `evaluate_in_select` (the part
    spent measuring spliced sets) and `total`.
    """
    total = _seconds(seconds, "total")
    inside = _seconds(seconds, "finetune_in_select")
    parts = {
        "setup": _seconds(seconds, "setup"),
        "tasks": _seconds(seconds, "tasks"),
        "selection": max(0.0, _seconds(seconds, "select") + _seconds(seconds, "assemble") - inside),
        "finetune": _seconds(seconds, "finetune") + inside,
    }
    parts["other"] = max(0.0, total - sum(parts.values()))
    spread = [p for p in PARTS if p in set(parallel)]
    spread_s = {p: parts[p] for p in spread}
    if "selection" in spread_s:  # only its spliced evaluations ran on the devices
        spread_s["selection"] = min(parts["selection"], _seconds(seconds, "evaluate_in_select"))
    n = max(1, int(n_devices))
    run_s = sum(parts.values())  # total, or a little more where rounding made `other` negative
    par = sum(spread_s.values())
    serial = run_s - par
    bound = (serial + n * par) / (n * run_s) if run_s > 0 else math.nan
    return {
        "seconds": parts,
        "shares": {p: (s / run_s if run_s > 0 else math.nan) for p, s in parts.items()},
        "parallel": spread,
        "parallel_seconds": spread_s,  # of each part in `parallel`, the seconds that were spread
        "devices": n,
        "serial_share": serial / run_s if run_s > 0 else math.nan,
        "amdahl_efficiency": bound,
        "amdahl_speedup": n * bound,
    }

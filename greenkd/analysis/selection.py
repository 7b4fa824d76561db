"""Block selection per group: the sets a run tried on its way to a student (summary.json
`selection`), as parameters against top-1, and why it chose the set it did.

The selection depends on the teacher, the data and the layer tasks, never on the device count or
the scheduler, so one run per group says it all: the group's run with the most devices (its first
repeat), as the other per-group figures. A run without sets tried says why: threshold mode keeps
blocks one by one, and runs from before greenkd chose sets recorded none.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from greenkd.analysis.tables import largest_runs
from greenkd.rundir.read import SweepData, finite

SET_COLUMNS = [
    "group",
    "run",
    "n_blocks",
    "blocks",
    "params",
    "flops",
    "compression_params",
    "accuracy_spliced",
    "accuracy_finetuned",
    "meets_target",
    "chosen",
]
GROUP_COLUMNS = [
    "group",
    "run",
    "mode",
    "goal",
    "needed_accuracy",
    "target_params",
    "sets",
    "finetunes",
    "blocks",
    "n_targets",
    "compression_params",
    "teacher_accuracy",
    "student_accuracy",
    "met",
    "why",
]


def goal_text(selection: dict[str, Any]) -> str:
    """'top-1 >= 97.05%', '>= 3x fewer params', or the threshold rule."""
    goal = selection.get("goal") or {}
    if selection.get("mode") == "threshold":
        parts = []
        if finite(goal.get("max_drop")):
            parts.append(f"each block within {goal['max_drop'] * 100:.2f} points")
        if finite(goal.get("min_accuracy")):
            parts.append(f"each block >= {goal['min_accuracy']:.2%}")
        return " and ".join(parts) or "threshold"
    if finite(goal.get("target_params")):
        return f">= {goal['target_params']:g}x fewer params"
    if finite(goal.get("needed_accuracy")):
        return f"top-1 >= {goal['needed_accuracy']:.2%}"
    return ""


def selection_tables(sweep: SweepData, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per group: mode, goal, sets tried, chosen, met and why; per set tried of those runs)."""
    groups, sets = [], []
    for run in largest_runs(sweep, runs):
        s = run.summary or {}
        selection = s.get("selection") or {}
        tried = selection.get("sets") or []
        chosen = selection.get("chosen")
        goal = selection.get("goal") or {}
        row = {
            "group": _group(runs, run.name),
            "run": run.name,
            "mode": selection.get("mode") or run.config.get("acceptance") or "",
            "goal": goal_text(selection) if selection else "",
            "needed_accuracy": _num(goal.get("needed_accuracy")),
            "target_params": _num(goal.get("target_params")),
            "sets": len(tried),
            "finetunes": int(selection.get("finetunes") or 0),
            "blocks": len(s.get("accepted") or []),
            "n_targets": int(s.get("n_targets") or 0),
            "compression_params": _num(s.get("compression_params")),
            "teacher_accuracy": _num(s.get("teacher_accuracy")),
            "student_accuracy": _num(s.get("student_accuracy")),
            "met": selection.get("met"),
            "why": str(selection.get("why") or "") if tried else no_sets_reason(selection),
        }
        groups.append(row)
        for t in tried:
            sets.append(
                {
                    "group": row["group"],
                    "run": run.name,
                    "n_blocks": int(t.get("n_blocks") or len(t.get("blocks") or [])),
                    "blocks": ", ".join(t.get("blocks") or []),
                    "params": _num(t.get("params")),
                    "flops": _num(t.get("flops")),
                    "compression_params": _num(t.get("compression_params")),
                    "accuracy_spliced": _num(t.get("accuracy_spliced")),
                    "accuracy_finetuned": _num(t.get("accuracy_finetuned")),
                    "meets_target": t.get("meets_target"),
                    "chosen": chosen is not None and list(t.get("blocks") or []) == list(chosen),
                }
            )
    return pd.DataFrame(groups, columns=GROUP_COLUMNS), pd.DataFrame(sets, columns=SET_COLUMNS)


def no_sets_reason(selection: dict[str, Any]) -> str:
    """Why a run has no trade-off curve to draw."""
    if not selection:
        return "no selection recorded: a run from before greenkd chose block sets"
    if selection.get("mode") == "threshold":
        return (
            "threshold mode: each block kept on its own spliced top-1 (the paper's rule); "
            "no sets tried"
        )
    return str(selection.get("why") or "no set of blocks to try")


def _group(runs: pd.DataFrame, name: str) -> str:
    match = runs.loc[runs["run"] == name, "group"]
    return str(match.iloc[0]) if len(match) else ""


def _num(value: Any) -> float:
    return float(value) if finite(value) else math.nan

"""The table of benchmarks/device_distill.sh: time and energy of each profiled distillation.

    python benchmarks/device_distill_table.py WORK [--report OUT/device_distill.md]
        [--json OUT/device_distill.json]

WORK holds one folder per run (`fused`, `independent`, `workers2`), each with `run/` (the
`greenkd distill --out`), `profile/` (the `greenkd profile -o`) and `exit` (the exit code of the
profiled command; 124 when the script's time limit stopped it). Prints a Markdown table of each
run's phases (the task phase, the compile time inside it, the whole run), the profiler's wall
time and energy (the GPUs' measured energy, the node's, the dynamic part over the idle baseline)
and the ratios the issue asks for: fused / independent, and two workers sharing one GPU against
one. A run stopped early keeps what it wrote and is marked; its ratios are then bounds. Only the
standard library: it runs wherever the runs were taken.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

RUNS = ("fused", "independent", "workers2")
LABELS = {
    "fused": "fused, 1 worker",
    "independent": "independent, 1 worker",
    "workers2": "fused, 2 workers on 1 GPU",
}


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_run(folder: Path) -> dict[str, Any]:
    """One run's figures, None where it wrote nothing."""
    exit_text = (folder / "exit").read_text().strip() if (folder / "exit").exists() else ""
    run = load_json(folder / "run" / "summary.json") or {}
    prof = load_json(folder / "profile" / "summary.json") or {}
    seconds = run.get("seconds") or {}
    gpus = prof.get("gpus") or {}
    total = prof.get("total") or {}
    nvml = [
        u["avg_pct"]
        for u in prof.get("utilization") or []
        if u.get("sensor") == "nvml" and u.get("avg_pct") is not None
    ]
    cpu = [
        u["avg_pct"]
        for u in prof.get("utilization") or []
        if u.get("sensor") == "procstat" and u.get("avg_pct") is not None
    ]
    gpu_domains = [
        d for d in prof.get("domains") or [] if d.get("sensor") == "nvml" and d.get("used")
    ]
    dyn = [d.get("dynamic_energy_j") for d in gpu_domains]
    tasks_csv = folder / "run" / "tasks.csv"
    n_tasks = len(list(csv.DictReader(tasks_csv.open()))) if tasks_csv.exists() else None
    tasks = seconds.get("tasks")
    compile_s = run.get("seconds_compile_tasks")
    return {
        "run": folder.name,
        "exit": int(exit_text) if exit_text.lstrip("-").isdigit() else None,
        "run_status": run.get("status"),
        "profile_status": prof.get("status"),
        "n_tasks": n_tasks,
        "accepted": len(run["accepted"]) if isinstance(run.get("accepted"), list) else None,
        "student_accuracy": run.get("student_accuracy"),
        "teacher_accuracy": run.get("teacher_accuracy"),
        "tasks_s": tasks,
        "compile_s": compile_s,
        "tasks_less_compile_s": tasks - compile_s
        if tasks is not None and compile_s is not None
        else None,
        "run_total_s": seconds.get("total"),
        "wall_s": prof.get("duration_s"),
        "gpu_energy_j": gpus.get("used_energy_j"),
        "gpu_dynamic_j": sum(dyn) if dyn and None not in dyn else None,
        "node_energy_j": total.get("energy_j"),
        "gpu_util_pct": sum(nvml) / len(nvml) if nvml else None,
        "cpu_util_pct": sum(cpu) / len(cpu) if cpu else None,
        "profile_reason": prof.get("reason"),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(a: dict, b: dict, key: str) -> str:
    """a/b, marked a bound where a run was stopped before it ended."""
    x, y = a.get(key), b.get(key)
    if x is None or y is None or y == 0:
        return "n/a"
    text = f"{x / y:.3f}"
    a_cut, b_cut = a["exit"] not in (0, None), b["exit"] not in (0, None)
    if a_cut and not b_cut:
        return f">= {text} ({a['run']} stopped)"
    if b_cut and not a_cut:
        return f"<= {text} ({b['run']} stopped)"
    if a_cut and b_cut:
        return f"{text} (both stopped: no bound)"
    return text


COLUMNS = (
    ("exit", "exit", 0),
    ("n_tasks", "tasks done", 0),
    ("tasks_s", "task phase s", 1),
    ("compile_s", "compile in it s", 1),
    ("tasks_less_compile_s", "tasks less compile s", 1),
    ("run_total_s", "run total s", 1),
    ("wall_s", "profiled wall s", 1),
    ("gpu_energy_j", "GPU J", 0),
    ("gpu_dynamic_j", "GPU dynamic J", 0),
    ("node_energy_j", "node J", 0),
    ("gpu_util_pct", "GPU util %", 0),
    ("cpu_util_pct", "CPU util %", 0),
    ("accepted", "accepted", 0),
    ("student_accuracy", "student top-1", 4),
)
RATIO_KEYS = (
    ("tasks_s", "task phase"),
    ("tasks_less_compile_s", "task phase less compile"),
    ("run_total_s", "run total"),
    ("wall_s", "profiled wall"),
    ("gpu_energy_j", "GPU energy"),
    ("node_energy_j", "node energy"),
)


def table(rows: dict[str, dict], header: str) -> list[str]:
    lines = [header, ""]
    lines.append("| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    lines.append("| --- |" + " ---: |" * len(COLUMNS))
    for name, row in rows.items():
        cells = [fmt(row[key], digits) for key, _, digits in COLUMNS]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | fused / independent | 2 workers / 1 worker |", "| --- | ---: | ---: |"]
    fused, indep, two = rows.get("fused"), rows.get("independent"), rows.get("workers2")
    for key, title in RATIO_KEYS:
        a = ratio(fused, indep, key) if fused and indep else "n/a"
        b = ratio(two, fused, key) if two and fused else "n/a"
        lines.append(f"| {title} | {a} | {b} |")
    lines.append("")
    lines.append(
        "Target (issue 12): fused task phase at most 0.25 of the independent one. "
        "2 workers / 1 worker below 1 in time: a second stream on the one GPU helps; "
        "its energy ratio below 1: it saves energy too (greenup = 1 / that ratio)."
    )
    for name, row in rows.items():
        if row["exit"] not in (0, None) or row["profile_status"] not in ("complete", None):
            lines.append(
                f"- {LABELS.get(name, name)}: exit {row['exit']}, run {row['run_status']}, "
                f"profile {row['profile_status']} ({row['profile_reason']})"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--header", default="## greenkd distillation on the device")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.work.is_dir():
        print(f"error: {args.work} is not a folder", file=sys.stderr)
        return 2
    rows = {name: read_run(args.work / name) for name in RUNS if (args.work / name).is_dir()}
    if not rows:
        print(f"error: no run folder ({', '.join(RUNS)}) under {args.work}", file=sys.stderr)
        return 2
    text = "\n".join(table(rows, args.header)) + "\n"
    print(text)
    if args.report:
        args.report.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

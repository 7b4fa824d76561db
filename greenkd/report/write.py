"""Writing reports: one self-contained file per sweep (plus its card), and the index of them all."""

from __future__ import annotations

import json
from pathlib import Path

from greenkd.analysis import find_sweeps, load_sweep
from greenkd.errors import GreenkdError
from greenkd.fileio import write_text_atomic
from greenkd.report.build import build_report
from greenkd.report.index import report_card, write_index
from greenkd.report.page import safe_name


def write_reports(results: str | Path, out: str | Path = "reports") -> list[Path]:
    """Write `<out>/<sweep>/report.html` for each sweep under `results`, then `<out>/index.html`."""
    sweeps = find_sweeps(results)
    paths: list[Path] = []
    problems: list[str] = []
    for sweep_dir in sweeps:
        if len(sweeps) == 1:
            paths.append(write_report(sweep_dir, out, index=False))
            continue
        try:
            paths.append(write_report(sweep_dir, out, index=False))
        except GreenkdError as exc:  # one empty sweep among several: list it, report the rest
            problems.append(f"{sweep_dir.name}: {exc}")
    if not paths:
        raise GreenkdError("; ".join(problems))
    write_index(out, problems)
    return paths


def write_report(sweep_dir: str | Path, out: str | Path = "reports", *, index: bool = True) -> Path:
    """Write one sweep's report atomically and return its path (the sweep prints it)."""
    sweep = load_sweep(sweep_dir)
    report = build_report(sweep)
    folder = Path(out) / safe_name(sweep.name)
    path = folder / "report.html"
    write_text_atomic(path, report.html)
    card = report_card(sweep, sweep_dir, report)
    write_text_atomic(folder / "report.json", json.dumps(card, indent=2) + "\n")
    if index:
        write_index(out)
    return path

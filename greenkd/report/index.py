"""The index of reports (`<out>/index.html`) and the card each report leaves for it (report.json)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from greenkd.analysis import SweepData, best_row
from greenkd.fileio import write_text_atomic
from greenkd.report.build import Report
from greenkd.report.page import page_html, when


def report_card(sweep: SweepData, sweep_dir: str | Path, report: Report) -> dict[str, Any]:
    """What the index shows of one report: runs, devices, groups, best speedup and greenup."""
    runs, scaling = report.runs, report.scaling
    return {
        "sweep": sweep.name,
        "source": str(Path(sweep_dir).resolve()),
        "created_ts": sweep.created_ts,
        "generated_ts": time.time(),
        "runs": len(runs),
        "complete": int((runs["status"] == "complete").sum()),
        "usable": int(runs["usable"].sum()),
        "figures": len(report.figures),
        "devices": sorted({int(n) for n in runs["devices"].dropna()}),
        "groups": list(dict.fromkeys(str(x) for x in runs.loc[runs["usable"], "label"])),
        "best_speedup": best(scaling, "speedup"),
        "best_greenup": best(scaling, "greenup"),
    }


def best(scaling: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """The largest value of a metric over n > 1, with its group and device count."""
    row = best_row(scaling, metric)
    if row is None:
        return None
    return {"value": float(row[metric]), "group": str(row["label"]), "devices": int(row["devices"])}


def best_text(best: dict[str, Any] | None) -> str:
    """'2.41× (bin packing · autotune, n=4)', or a dash."""
    return "—" if not best else f"{best['value']:.2f}× ({best['group']}, n={best['devices']})"


def write_index(out: str | Path, problems: list[str] | None = None) -> Path:
    """`<out>/index.html`: every report found under `out`, newest sweep first."""
    out = Path(out)
    cards = []
    for card_path in sorted(out.glob("*/report.json")):
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError:
            continue
        card["href"] = f"{card_path.parent.name}/report.html"
        cards.append(card)
    cards.sort(key=lambda c: -(c.get("created_ts") or 0))
    profiles = [c for c in cards if c.get("kind") == "profile"]
    cards = [c for c in cards if c.get("kind") != "profile"]
    rows = "".join(
        f"<tr><td><a href='{html.escape(c['href'])}'>{html.escape(str(c['sweep']))}</a></td>"
        f"<td>{when(c.get('created_ts'))}</td><td class='num'>{c.get('usable', 0)} / {c.get('runs', 0)}</td>"
        f"<td>{html.escape(', '.join(map(str, c.get('devices') or [])))}</td>"
        f"<td>{html.escape(best_text(c.get('best_speedup')))}</td>"
        f"<td>{html.escape(best_text(c.get('best_greenup')))}</td><td>{when(c.get('generated_ts'))}</td></tr>"
        for c in cards
    )
    body = (
        "<header><h1>greenkd reports</h1><p class='sub'>One report per sweep and one page per "
        "profile; each file opens offline.</p></header><section>"
    )
    if cards or not profiles:
        body += (
            "<table class='tbl'><thead><tr><th>sweep</th><th>started</th><th>usable / runs</th>"
            f"<th>devices</th><th>best speedup</th><th>best greenup</th><th>report written</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    if profiles:
        body += profile_table(profiles)
    if problems:
        body += (
            "<h3>Not reported</h3><ul>"
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul>"
        )
    body += "</section>"
    path = out / "index.html"
    write_text_atomic(path, page_html("greenkd reports", body))
    return path


def profile_table(cards: list[dict[str, Any]]) -> str:
    """The profiles' pages (cards written by `greenkd.report.profile`), newest first."""
    rows = "".join(
        f"<tr><td><a href='{html.escape(c['href'])}'>{html.escape(str(c.get('profile')))}</a></td>"
        f"<td>{when(c.get('created_ts'))}</td>"
        f"<td class='num'>{_number(c.get('duration_s'), '{:,.1f} s')}</td>"
        f"<td>{html.escape(str(c.get('status') or '—'))}</td>"
        f"<td class='num'>{_number(c.get('energy_j'), '{:,.1f} J')}</td>"
        f"<td><code>{html.escape(str(c.get('command') or 'Python block'))}</code></td>"
        f"<td class='num'>{_number(c.get('exit_code'), '{}')}</td>"
        f"<td>{when(c.get('generated_ts'))}</td></tr>"
        for c in cards
    )
    return (
        "<h3>Profiles</h3><table class='tbl'><thead><tr><th>profile</th><th>started</th>"
        "<th>duration</th><th>status</th><th>node energy</th><th>command</th><th>exit code</th>"
        f"<th>page written</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _number(value: Any, form: str) -> str:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return form.format(value) if ok else "—"

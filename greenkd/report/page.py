"""The HTML around the figures: page shell, CSS, the resize script, tables, cards, sections, and the
formatting of numbers and times in them. No pandas work here beyond iterating a table's rows."""

from __future__ import annotations

import html
import math
import time
from typing import Any

import pandas as pd

from greenkd import __version__


def count_text(n: int, unit: str) -> str:
    """'1 GPU', '4 GPUs', '2 CPU workers'."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def device_summary(devices: set[str]) -> str:
    """'cpu, cpu0–cpu31' rather than 33 names."""
    groups: dict[str, list[int]] = {}
    plain = []
    for d in devices:
        stem = d.rstrip("0123456789")
        if stem != d:
            groups.setdefault(stem, []).append(int(d[len(stem) :]))
        else:
            plain.append(d)
    parts = sorted(plain)
    for stem, nums in sorted(groups.items()):
        nums.sort()
        parts.append(f"{stem}{nums[0]}" if len(nums) == 1 else f"{stem}{nums[0]}–{stem}{nums[-1]}")
    return ", ".join(parts)


WRAPPED = {"note", "why", "reason", "notes"}  # long free text; every other cell stays on one line


def data_table(df: pd.DataFrame, columns: list[tuple[Any, str, Any]], row_class: Any = None) -> str:
    """A table of `df`'s rows; each column is (key, title, format), a key pair formats two values."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for key, _, fmt in columns:
            if isinstance(key, tuple):
                text, numeric = fmt(*(row[k] for k in key)), True
            else:
                value = row.get(key)
                numeric = fmt is not str
                text = "—" if is_missing(value) else fmt(value)
            cls = "num" if numeric else "wrap" if key in WRAPPED else "text"
            cells.append(f"<td class='{cls}'>{html.escape(text)}</td>")
        cls = row_class(row) if row_class else ""
        body.append(
            f"<tr class='{cls}'>{''.join(cells)}</tr>" if cls else f"<tr>{''.join(cells)}</tr>"
        )
    return f"<div class='scroll'><table class='tbl'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def is_missing(value: Any) -> bool:
    """None, NaN or an empty string: shown as a dash."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value


def fmt_int(v: Any) -> str:
    return f"{int(v):,}"


def fmt_f1(v: Any) -> str:
    return f"{float(v):,.1f}"


def fmt_f2(v: Any) -> str:
    return f"{float(v):.2f}"


def fmt_range1(lo: Any, hi: Any) -> str:
    return "—" if is_missing(lo) or lo == hi else f"{lo:,.1f}–{hi:,.1f}"


def fmt_range_kj(lo: Any, hi: Any) -> str:
    return "—" if is_missing(lo) or lo == hi else f"{lo / 1e3:,.2f}–{hi / 1e3:,.2f}"


def first_text(values: Any) -> str:
    """The first non-empty string among `values`, else ''."""
    return next((str(v) for v in values if isinstance(v, str) and v), "")


def when(ts: Any) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM', or a dash."""
    if not isinstance(ts, int | float) or not math.isfinite(ts):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def card(title: str, value: str, detail: str) -> str:
    """A headline number with its title and one line of detail."""
    return (
        f"<div class='card'><div class='k'>{html.escape(title)}</div><div class='v'>{html.escape(value)}</div>"
        f"<div class='d'>{html.escape(detail)}</div></div>"
    )


def notice(text: str) -> str:
    """A boxed message: why a section has no figure."""
    return f"<p class='notice'>{html.escape(text)}</p>"


def notes_notice(shared: list[str]) -> str:
    """What every row of a table would say (greenkd.analysis.shared_notes), said once above it."""
    return notice(f"In every row: {'; '.join(shared)}.") if shared else ""


def estimate_badge() -> str:
    """The label every figure from the opt-in power model carries (`--power-model`): not measured."""
    return "<span class='badge estimate' title='from the power model, not measured'>estimate</span>"


def section(sid: str, title: str, intro: str, body: str) -> str:
    """A section of the page; `intro` is HTML (sub- and superscripts), the title is escaped."""
    return f"<section id='{sid}'><h2>{html.escape(title)}</h2><p class='intro'>{intro}</p>{body}</section>"


def safe_name(name: str) -> str:
    """A sweep name as one path component."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return cleaned or "sweep"


def fmt_ratio(v: Any) -> str:
    """'1.23×', or a dash."""
    return "—" if is_missing(v) else f"{float(v):.2f}×"


def fmt_num(v: Any) -> str:
    """'1,234.5', or a dash."""
    return "—" if is_missing(v) else f"{float(v):,.1f}"


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#f6f8fa; --accent:#4C78A8; }
* { box-sizing: border-box; }
body { margin:0; font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color:var(--fg);
       background:var(--bg); line-height:1.45; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 24px; display:flex; gap:18px; flex-wrap:wrap; font-size:14px; }
nav a { color:var(--muted); text-decoration:none; } nav a:hover { color:var(--accent); }
header, section { max-width:1280px; margin:20px auto; padding:20px 28px; background:#fff;
      border:1px solid var(--line); border-radius:10px; }
h1 { margin:0 0 4px; font-size:26px; } h2 { margin:0 0 6px; font-size:20px; } h3 { font-size:15px; margin:18px 0 6px; }
code { background:var(--bg); padding:1px 6px; border-radius:4px; }
.sub, .intro, .hint { color:var(--muted); font-size:14px; margin:4px 0 12px; }
.note { color:#8a6d00; font-size:13px; margin:4px 0; }
.notice { background:#fff8e1; border:1px solid #f0d78c; border-radius:8px; padding:10px 14px; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap:12px; margin-top:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:26px; font-weight:600; margin:2px 0; } .card .d { color:var(--muted); font-size:13px; }
.grid2 { display:grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap:12px; }
@media (max-width: 1100px) { .grid2 { grid-template-columns: minmax(0, 1fr); } }
.fig { min-width:0; border:1px solid #eef1f4; border-radius:8px; padding:4px; }
.scroll { overflow-x:auto; }
.tbl { border-collapse:collapse; font-size:13px; margin:10px 0; width:100%; }
.tbl th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line);
          padding:6px 8px; white-space:nowrap; }
.tbl td { border-bottom:1px solid #eef1f4; padding:5px 8px; vertical-align:top; }
.tbl td { white-space:nowrap; } .tbl td.wrap { white-space:normal; min-width:220px; }
.tbl td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
.tbl tbody tr:nth-child(even) { background:#fafbfc; }
.tbl tr.skipped td { color:#8c959f; }
.badge { display:inline-block; font-size:11px; font-weight:600; text-transform:uppercase; letter-spacing:.05em;
         border-radius:10px; padding:1px 8px; margin-left:6px; vertical-align:middle; }
.badge.estimate { background:#fde7e9; color:#a3162b; border:1px solid #f3b6be; }
footer { max-width:1280px; margin:0 auto 30px; color:var(--muted); font-size:12px; padding:0 28px; }
"""


# Each plot is drawn while the page is still parsing, before the grid has its final columns:
# resize every plot to its box once the page has loaded.
RESIZE_JS = (
    "window.addEventListener('load', function () { if (window.Plotly) {"
    " document.querySelectorAll('.plotly-graph-div').forEach(function (d) { Plotly.Plots.resize(d); }); } });"
)


def page_html(title: str, body: str) -> str:
    """The whole page: head with the CSS, `body`, the footer and the resize script."""
    footer = f"<footer>greenkd {__version__} · written {when(time.time())} · self-contained, opens offline</footer>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}{footer}"
        f"<script>{RESIZE_JS}</script></body></html>"
    )

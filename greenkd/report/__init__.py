"""One self-contained HTML report per sweep (plotly.js inlined, opens offline), and an index of reports.

Sections follow the paper: speedup and efficiency against the ideal (Fig. 5a/b, 6a/b), energy and
greenup (Table 9), per-layer runtimes (Fig. 5c/d), task allocation (Fig. 6c/d), the predicted schedule
against the measured one (issue 7), power and utilisation over time, accuracy (Table 7), and the
machine with the sensors used and missing.

Modules: `build` (analyse a sweep, lay out the page), `sections/` (one module per section; the
numbers they show come from `greenkd.analysis`), `figures` (figures into divs), `style` (template,
colours), `page` (HTML shell, CSS, tables, formatting), `index` (the index page and report cards),
`write` (the files).
"""

from __future__ import annotations

from greenkd.report.build import Report, build_report
from greenkd.report.index import write_index
from greenkd.report.style import SCHED_COLOURS, SCHED_NAMES
from greenkd.report.write import write_report, write_reports

__all__ = [
    "SCHED_COLOURS",
    "SCHED_NAMES",
    "Report",
    "build_report",
    "write_index",
    "write_report",
    "write_reports",
]

"""Analyse a sweep and lay out its report: the Report object tests and the writer use."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from greenkd.analysis import SweepData, run_table, scaling_table
from greenkd.report.figures import Figures
from greenkd.report.page import page_html
from greenkd.report.sections import NAV, Context, render_all
from greenkd.report.style import display_label, group_styles


@dataclass
class Report:
    """A built report: the page and the figures drawn in it."""

    sweep: SweepData
    html: str
    figures: list[go.Figure] = field(default_factory=list)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_table, with display labels
    scaling: pd.DataFrame = field(default_factory=pd.DataFrame)


def build_report(sweep: SweepData) -> Report:
    """Analyse a sweep and lay out every section; figures are collected in drawing order."""
    runs = run_table(sweep)
    runs["label"] = [
        display_label(label, sched)
        for label, sched in zip(runs["label"], runs["sched"], strict=True)
    ]
    scaling = scaling_table(runs)
    kind = device_kind(runs)
    ctx = Context(
        sweep=sweep,
        runs=runs,
        scaling=scaling,
        figures=Figures(),
        style=group_styles(runs[runs["usable"]]),
        unit="GPUs" if kind == "gpu" else "CPU workers" if kind == "cpu" else "devices",
        label_of=dict(zip(runs["group"], runs["label"], strict=True)),
    )
    sections = render_all(ctx)
    drawn = "".join(sections)  # a section with nothing to show (e.g. hosts) is absent: no link
    nav = "".join(
        f"<a href='#{sid}'>{title}</a>" for sid, title in NAV if f"<section id='{sid}'" in drawn
    )
    page = page_html(f"greenkd · {sweep.name}", f"<nav>{nav}</nav>" + "".join(sections))
    return Report(sweep=sweep, html=page, figures=ctx.figures.figures, runs=runs, scaling=scaling)


def device_kind(runs: pd.DataFrame) -> str:
    """'gpu' or 'cpu' when every run says the same, else ''."""
    kinds = {k for k in runs["device_kind"] if k}
    return kinds.pop() if len(kinds) == 1 else ""

"""The profile's figures over time: power, utilisation, cumulative energy, GPU clocks and temperature.

Every figure shares the x-axis (seconds since the work started), the idle baseline shaded before
0, and the marks: intervals shaded with their label, points in time as dashed lines. A domain
keeps its colour in every figure; a figure is drawn only where the samples have its metric.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from greenkd.analysis.profile import (
    MODEL_SENSOR,
    PER_CORE,
    ProfileData,
    cumulative_energy_lines,
    display_names,
    fields_text,
    metric_lines,
    node_total_line,
    total_domains,
)
from greenkd.analysis.timeline import Line
from greenkd.report.figures import Figures, downsample
from greenkd.report.page import notice, section
from greenkd.report.style import DEVICE_COLOURS, FALLBACK_COLOURS

MAX_LABELLED_MARKS = 16  # more labels than this overlap; the marks table has them all
MAX_CPU_LINES = 8  # per-CPU utilisation lines beside the node's, on machines with this many CPUs
TOTAL_COLOUR = "#3c4043"
IDLE_FILL = "#9aa0a6"
# Purples and browns: apart from the domains' colours, so a shaded mark is not read as a domain.
MARK_COLOURS = ["#7B61A8", "#B279A2", "#9D755D", "#C08497", "#5E548E"]
GPU_STATE = (
    ("clock_sm", "SM clock (MHz)"),
    ("temperature", "temperature (°C)"),
    ("memory_used", "memory used (MiB)"),
)


class Palette:
    """One colour per domain, the same in every figure."""

    def __init__(self) -> None:
        self.colours: dict[str, str] = {}
        self.cycle = DEVICE_COLOURS + FALLBACK_COLOURS

    def __call__(self, name: str) -> str:
        if name not in self.colours:
            self.colours[name] = self.cycle[len(self.colours) % len(self.cycle)]
        return self.colours[name]


def render(profile: ProfileData, spans: pd.DataFrame, figures: Figures) -> str:
    """The 'Over time' section: a figure per metric the samples have, or why there is none."""
    intro = (
        "From samples.csv, time 0 the work's start; the grey band before it is the idle baseline. "
        "Shaded intervals and dashed lines are the marks (an <code>X</code> … <code>X_end</code> "
        "pair is an interval). Power is each domain's own reading, or its counter's energy over the "
        "sampling interval. Per-core rows are left out, and per-CPU utilisation on machines with more "
        f"than {MAX_CPU_LINES} CPUs (the energy table has every domain)."
    )
    origin = profile.origin_ts
    if profile.samples is None or profile.samples.empty or origin is None:
        return section("time", "Over time", intro, notice("No samples to draw."))
    palette = Palette()
    divs: list[str] = []
    absent: list[str] = []
    for title, build in (
        ("power", power_figure),
        ("utilisation", utilisation_figure),
        ("cumulative energy", energy_figure),
        ("GPU clocks and temperature", gpu_state_figure),
    ):
        fig, height = build(profile, origin, palette)
        if fig is None:
            absent.append(title)
            continue
        decorate(fig, profile, spans, origin)
        divs.append(figures.div(fig, height))
    body = "".join(divs)
    if not divs:
        body += notice("The samples hold no power, utilisation, energy or GPU rows.")
    if absent:
        why = _why_absent(profile)
        body += f"<p class='note'>Not sampled: {html.escape(', '.join(absent))}{why}.</p>"
    if len(spans) > MAX_LABELLED_MARKS:
        body += (
            f"<p class='note'>{len(spans)} marks: drawn without labels so they stay readable; the "
            "marks table names them.</p>"
        )
    return section("time", "Over time", intro, body)


def _why_absent(profile: ProfileData) -> str:
    missing = [
        str(m.get("sensor"))
        for m in (profile.summary or {}).get("missing") or []
        if m.get("sensor")
    ]
    return (
        f" (missing sensors: {', '.join(dict.fromkeys(missing))}; see Sensors for the fix)"
        if missing
        else ""
    )


def _trace(name: str, series: Line, origin: float, colour: str, unit: str, **kw: Any) -> go.Scatter:
    x, y = downsample(series[0] - origin, series[1])
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        name=name,
        legendgroup=name,
        line={"color": colour, "width": kw.pop("width", 1.8), **kw.pop("line", {})},
        hovertemplate=f"{name}: %{{y:,.1f}} {unit}<extra></extra>",
        **kw,
    )


def _dashed(key: tuple[str, str]) -> dict[str, Any]:
    """A power model's line (`--power-model`) is dashed: an estimate, not a reading."""
    return {"line": {"dash": "dash"}} if key[0] == MODEL_SENSOR else {}


def _layout(fig: go.Figure, title: str, y_title: str) -> None:
    fig.update_layout(title=title, hovermode="x unified")
    fig.update_xaxes(title_text="seconds since the work started")
    fig.update_yaxes(title_text=y_title, rangemode="tozero")


def power_figure(profile: ProfileData, origin: float, palette: Palette) -> tuple[Any, int]:
    """Power per domain (W), with each domain's idle power as a dotted line."""
    lines = metric_lines(profile, "power")
    if not lines:
        return None, 0
    names = display_names(list(lines))
    fig = go.Figure()
    for key, line in lines.items():
        fig.add_trace(_trace(names[key], line, origin, palette(names[key]), "W", **_dashed(key)))
    idle = profile.summary.get("idle") if profile.summary else None
    end = max(float(line[0].max()) for line in lines.values()) - origin
    for d in (profile.summary or {}).get("domains") or []:
        key = (str(d.get("sensor")), str(d.get("device")))
        watts = d.get("idle_power_w")
        if key not in lines or watts is None or not idle:
            continue
        name = names[key]
        fig.add_trace(
            go.Scatter(
                x=[float(idle["start_ts"]) - origin, end],
                y=[watts, watts],
                mode="lines",
                name=f"{name} idle",
                legendgroup=name,
                showlegend=False,
                line={"color": palette(name), "width": 1.2, "dash": "dot"},
                hovertemplate=f"{name} idle power: %{{y:,.1f}} W<extra></extra>",
            )
        )
    _layout(fig, "Power per domain (dotted: idle power from the baseline)", "power (W)")
    return fig, 380


def utilisation_figure(profile: ProfileData, origin: float, palette: Palette) -> tuple[Any, int]:
    """Utilisation (%): the node's CPUs and each GPU."""
    lines = metric_lines(profile, "utilization", per_core_max=MAX_CPU_LINES)
    if not lines:
        return None, 0
    names = display_names(list(lines))
    fig = go.Figure()
    for key, line in lines.items():
        thin = {"width": 1.0, "opacity": 0.75} if PER_CORE.match(key[1]) else {}
        fig.add_trace(_trace(names[key], line, origin, palette(names[key]), "%", **thin))
    _layout(fig, "Utilisation", "utilisation (%)")
    fig.update_yaxes(range=[0, 105])
    return fig, 340


def energy_figure(profile: ProfileData, origin: float, palette: Palette) -> tuple[Any, int]:
    """Cumulative energy per domain (J), 0 at the work's start, with the node total."""
    lines = cumulative_energy_lines(profile)
    if not lines:
        return None, 0
    names = display_names(list(lines))
    fig = go.Figure()
    total = node_total_line(lines, total_domains(profile))
    if total is not None:
        fig.add_trace(_trace("node total", total, origin, TOTAL_COLOUR, "J", width=2.6))
    for key, line in lines.items():
        fig.add_trace(_trace(names[key], line, origin, palette(names[key]), "J", **_dashed(key)))
    _layout(
        fig,
        "Cumulative energy per domain (0 at the work's start; the end value is the table's)",
        "energy (J)",
    )
    fig.update_yaxes(rangemode="normal")
    return fig, 380


def gpu_state_figure(profile: ProfileData, origin: float, palette: Palette) -> tuple[Any, int]:
    """SM clock, temperature and memory used per GPU, one panel per metric sampled."""
    panels = [(title, metric_lines(profile, m)) for m, title in GPU_STATE]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None, 0
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=[title.split(" (")[0] for title, _ in panels],
    )
    for row, (title, lines) in enumerate(panels, start=1):
        names = display_names(list(lines))
        unit = title.split("(")[-1].rstrip(")")
        for key, line in lines.items():
            trace = _trace(names[key], line, origin, palette(names[key]), unit)
            trace.showlegend = row == 1
            fig.add_trace(trace, row=row, col=1)
        fig.update_yaxes(title_text=title, row=row, col=1)
    fig.update_layout(title="GPU clocks, temperature and memory", hovermode="x unified")
    fig.update_layout(margin={"t": 84})
    fig.update_xaxes(title_text="seconds since the work started", row=len(panels), col=1)
    return fig, 200 + 170 * len(panels)


def decorate(fig: go.Figure, profile: ProfileData, spans: pd.DataFrame, origin: float) -> None:
    """The idle baseline and the marks on a figure, across all its panels.

    Shapes and labels are set in one assignment: plotly re-validates every shape on each
    `add_shape`, which makes thousands of marks take minutes.
    """
    band = {"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "layer": "below"}
    band["line"] = {"width": 0}
    label = {"xref": "x", "yref": "paper", "xanchor": "left", "showarrow": False}
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    idle = (profile.summary or {}).get("idle") or {}
    if (idle.get("seconds") or 0) > 0:
        x0 = float(idle["start_ts"]) - origin
        x1 = float(idle["end_ts"]) - origin
        shapes.append({**band, "x0": x0, "x1": x1, "fillcolor": IDLE_FILL, "opacity": 0.14})
        notes.append(
            {
                **label,
                "x": x0,
                "y": 1,
                "yanchor": "top",
                "text": "idle baseline",
                "font": {"size": 11, "color": "#5f6368"},
            }
        )
    labelled = len(spans) <= MAX_LABELLED_MARKS
    colour_of: dict[str, str] = {}
    for i, span in enumerate(spans.itertuples(index=False)):
        colour = colour_of.setdefault(span.label, MARK_COLOURS[len(colour_of) % len(MARK_COLOURS)])
        x0 = span.start_ts - origin
        if np.isfinite(span.end_ts):
            x1 = span.end_ts - origin
            shapes.append({**band, "x0": x0, "x1": x1, "fillcolor": colour, "opacity": 0.12})
        else:
            line = {"color": colour, "width": 1.4, "dash": "dash"}
            shapes.append(
                {**band, "type": "line", "x0": x0, "x1": x0, "line": line, "layer": "above"}
            )
        if labelled:
            hover = f"{span.label} {fields_text(span.fields)}".strip()
            notes.append(
                {
                    **label,
                    "x": x0,
                    "y": 1.0 + 0.055 * (i % 2),  # alternate rows: neighbours do not overlap
                    "yanchor": "bottom",
                    "text": html.escape(span.label),
                    "hovertext": html.escape(hover),
                    "font": {"size": 11, "color": colour},
                }
            )
    fig.update_layout(
        shapes=[*fig.layout.shapes, *shapes], annotations=[*fig.layout.annotations, *notes]
    )
    if labelled and len(spans):
        top = fig.layout.margin.t or 56
        fig.update_layout(margin={"t": max(top, 56) + 28})

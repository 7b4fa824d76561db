"""Power and utilisation over time of each group's largest run, from the profiler's samples."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from greenkd.analysis import Run, group_key, largest_runs, power_lines, utilisation_lines
from greenkd.report.figures import downsample
from greenkd.report.page import notice, section
from greenkd.report.sections.context import Context
from greenkd.report.style import DEVICE_COLOURS


def render(ctx: Context) -> str:
    """One figure per group's largest run: power (W) and utilisation (%) per device over time."""
    b, sweep, runs, label_of = ctx.figures, ctx.sweep, ctx.runs, ctx.label_of
    intro = (
        "Power and utilisation per device over each group's largest run, from the profiler's samples; "
        "the shaded band is the layer-task phase, time 0 the run's start (samples before it are the idle "
        "baseline)."
    )
    divs, notes = [], []
    for run in largest_runs(sweep, runs):
        if run.samples is None or run.window is None:
            notes.append(f"{run.name}: not profiled (no samples.csv)")
            continue
        fig = timeline_figure(run, label_of.get(group_key(run.config), ""))
        if fig is None:
            notes.append(f"{run.name}: samples hold no power or utilisation rows")
            continue
        divs.append(b.div(fig, 520 if len(fig.layout.annotations) > 1 else 340))
    body = f"<div class='grid2'>{''.join(divs)}</div>" if divs else ""
    if not divs:
        body += notice("No run has power or utilisation samples.")
    body += "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return section("timeline", "Power and utilisation over time", intro, body)


def timeline_figure(run: Run, label: str) -> go.Figure | None:
    """Power over time above utilisation over time, each panel only where the samples have it."""
    samples, (start, end) = run.samples, run.window
    power = power_lines(samples)
    util = utilisation_lines(run)
    panels = [p for p in (("power (W)", power), ("utilisation (%)", util)) if p[1]]
    if not panels:
        return None
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=[title.split(" (")[0] for title, _ in panels],
    )
    colour_of = {"CPU packages": "#5f6368", "CPU (all)": "#5f6368"}
    for row, (title, lines) in enumerate(panels, start=1):
        for name, (ts, values) in lines.items():
            colour = colour_of.setdefault(
                name, DEVICE_COLOURS[(len(colour_of) - 2) % len(DEVICE_COLOURS)]
            )
            x, y = downsample(ts - start, values)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in {t.name for t in fig.data},
                    line={"color": colour, "width": 1.8},
                    hovertemplate=f"{name}<br>%{{x:.0f}} s: %{{y:.1f}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(title_text=title, rangemode="tozero", row=row, col=1)
    if run.tasks is not None and not run.tasks.empty:
        fig.add_vrect(
            x0=run.tasks["start"].min() - start,
            x1=run.tasks["end"].max() - start,
            fillcolor="#4C78A8",
            opacity=0.07,
            line_width=0,
        )
    fig.update_xaxes(title_text="time since run start (s)", row=len(panels), col=1)
    fig.update_layout(title=f"{label} · run {run.name}", hovermode="x unified", margin={"t": 84})
    fig.add_vline(x=end - start, line={"color": "#9aa0a6", "dash": "dot", "width": 1})
    return fig

"""Speedup and efficiency against the ideal, per scheduler and thread setting (paper Fig. 5a/b, 6a/b)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from greenkd.analysis import shared_notes
from greenkd.report.page import (
    data_table,
    first_text,
    fmt_f1,
    fmt_f2,
    fmt_int,
    fmt_range1,
    notes_notice,
    notice,
    section,
)
from greenkd.report.sections.context import Context
from greenkd.report.sections.hosts import hosts_column
from greenkd.rundir.phases import PARTS

SHARE_COLUMNS = tuple(f"share_{part}" for part in PARTS)
PART_LABELS = {
    "setup": ("set-up", "#9aa0a6"),
    "tasks": ("tasks", "#1a73e8"),
    "selection": ("selection", "#f9ab00"),
    "finetune": ("fine-tuning", "#188038"),
    "other": ("other", "#d93025"),
}


def fmt_shares(*shares: Any) -> str:
    """The parts' shares as percentages, in PARTS order; '–' where a run has none."""
    if not all(isinstance(v, int | float) and v == v for v in shares):
        return "–"
    return " / ".join(f"{100 * v:.0f}" for v in shares)


def _shares_figure(table) -> go.Figure:
    """One stacked bar per group and device count: the whole run's parts as shares."""
    names = [f"{r.label} · n={int(r.devices)}" for r in table.itertuples()]
    fig = go.Figure()
    for part in PARTS:
        label, colour = PART_LABELS[part]
        fig.add_trace(
            go.Bar(
                y=names,
                x=100 * table[f"share_{part}"],
                orientation="h",
                name=label,
                marker_color=colour,
                hovertemplate=f"{label}: %{{x:.1f}}% of the run<extra></extra>",
            )
        )
    fig.update_layout(
        title="Where the whole run's time goes", barmode="stack", xaxis_title="% of the run"
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def render(ctx: Context) -> str:
    """Speedup and efficiency figures and the scaling table."""
    b, scaling, style, unit = ctx.figures, ctx.scaling, ctx.style, ctx.unit
    intro = (
        "Speedup T<sub>1</sub>/T<sub>n</sub> and efficiency speedup/n of whole runs, per scheduler "
        "(colour) and tf.data thread setting (dash), against the ideal (paper Fig. 5a/b, 6a/b). "
        "Whiskers span the best and worst repeat."
    )
    ok = scaling.dropna(subset=["speedup"])
    if ok.empty:
        reason = first_text(scaling["note"]) or "no usable run"
        return section("scaling", "Speedup and efficiency", intro, notice(f"No speedup: {reason}."))
    max_n = int(ok["devices"].max())
    figs = []
    for metric, title, ytitle, ideal in (
        ("speedup", "Speedup vs devices", "speedup T₁ / Tₙ", (lambda n: n)),
        ("efficiency", "Efficiency vs devices", "efficiency (speedup / n)", (lambda n: 1.0)),
    ):
        fig = go.Figure()
        xs = list(range(1, max_n + 1))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[ideal(n) for n in xs],
                mode="lines",
                name="ideal",
                line={"color": "#9aa0a6", "dash": "dash", "width": 1.5},
            )
        )
        for group, g in ok.groupby("group", sort=False):
            s = style[group]
            g = g.sort_values("devices")
            err = None
            if (g["repeats"] > 1).any():
                err = {
                    "type": "data",
                    "symmetric": False,
                    "array": g[f"{metric}_hi"] - g[metric],
                    "arrayminus": g[metric] - g[f"{metric}_lo"],
                    "thickness": 1.2,
                    "width": 4,
                }
            fig.add_trace(
                go.Scatter(
                    x=g["devices"],
                    y=g[metric],
                    mode="lines+markers",
                    name=s["label"],
                    error_y=err,
                    line={"color": s["colour"], "dash": s["dash"], "width": 2.5},
                    marker={"symbol": s["symbol"], "size": 9},
                    customdata=np.stack([g["time_s"], g["repeats"]], axis=-1),
                    hovertemplate=(
                        f"{s['label']}<br>%{{x}} {unit}: {metric} %{{y:.3f}}"
                        "<br>median time %{customdata[0]:.1f} s over %{customdata[1]} run(s)<extra></extra>"
                    ),
                )
            )
        fig.update_layout(title=title, xaxis_title=f"devices ({unit})", yaxis_title=ytitle)
        fig.update_xaxes(tickmode="array", tickvals=xs)
        if metric == "efficiency":
            fig.update_yaxes(rangemode="tozero")
        figs.append(b.div(fig, 440))
    shared, rest = shared_notes(scaling)
    table = notes_notice(shared) + data_table(
        scaling.assign(note=rest),
        [
            ("label", "group", str),
            ("devices", "n", fmt_int),
            *hosts_column(scaling),
            ("repeats", "runs", fmt_int),
            ("time_s", "time (s)", lambda v: f"{v:,.1f}"),
            (("time_min_s", "time_max_s"), "range (s)", fmt_range1),
            ("speedup", "speedup", fmt_f2),
            ("efficiency", "efficiency", fmt_f2),
            ("makespan_lb_s", "task makespan bound (s)", fmt_f1),
            ("tasks_makespan_s", "task makespan (s)", fmt_f1),
            (SHARE_COLUMNS, "set-up / tasks / selection / fine-tune / other (%)", fmt_shares),
            ("amdahl_efficiency", "Amdahl bound", fmt_f2),
            ("note", "note", str),
        ],
    )
    shares = ""
    if ok["amdahl_efficiency"].notna().any():
        shares = b.div(_shares_figure(ok), 160 + 36 * len(ok))
    expl = (
        "<p class='hint'>Where the time goes: each part's share of the whole run (median over "
        "repeats). Set-up, selection and other run once in the run's own process whatever the "
        "device count; the tasks, and the fine-tuning where it is data-parallel, are spread over "
        "the devices. The Amdahl bound is the most efficiency those serial parts leave a run: "
        "(S + n·P) / (n·(S + P)) for S serial and P spread seconds of the n-device run.</p>"
        "<p class='hint'>The task makespan bound is max(Σ task seconds / n, longest task) from tasks.csv: "
        "no schedule of those tasks ends sooner. A group without a complete 1-device run has no baseline, "
        "so no speedup (never a guess).</p>"
    )
    return section(
        "scaling",
        "Speedup and efficiency",
        intro,
        f"<div class='grid2'>{''.join(figs)}</div>" + shares + table + expl,
    )

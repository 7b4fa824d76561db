"""Speedup and efficiency against the ideal, per scheduler and thread setting (paper Fig. 5a/b, 6a/b)."""

from __future__ import annotations

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
            ("repeats", "runs", fmt_int),
            ("time_s", "time (s)", lambda v: f"{v:,.1f}"),
            (("time_min_s", "time_max_s"), "range (s)", fmt_range1),
            ("speedup", "speedup", fmt_f2),
            ("efficiency", "efficiency", fmt_f2),
            ("makespan_lb_s", "task makespan bound (s)", fmt_f1),
            ("tasks_makespan_s", "task makespan (s)", fmt_f1),
            ("note", "note", str),
        ],
    )
    expl = (
        "<p class='hint'>The task makespan bound is max(Σ task seconds / n, longest task) from tasks.csv: "
        "no schedule of those tasks ends sooner. A group without a complete 1-device run has no baseline, "
        "so no speedup (never a guess).</p>"
    )
    return section(
        "scaling",
        "Speedup and efficiency",
        intro,
        f"<div class='grid2'>{''.join(figs)}</div>" + table + expl,
    )

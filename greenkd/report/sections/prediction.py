"""The schedule greenkd predicted (plan.json) against the one tasks.csv measured."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from greenkd.analysis import SweepData, group_key, largest_runs, makespan_ratio_medians, plan_tables
from greenkd.report.figures import Figures
from greenkd.report.page import (
    count_text,
    data_table,
    first_text,
    fmt_f1,
    fmt_int,
    fmt_num,
    fmt_ratio,
    notice,
    section,
)
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """Predicted against measured makespan, their ratio per device count, per-device loads, a table."""
    b, sweep, runs, style, unit = ctx.figures, ctx.sweep, ctx.runs, ctx.style, ctx.unit
    intro = (
        "The schedule greenkd predicted before the tasks ran (plan.json: its cost model's seconds per task, "
        "summed per device by the scheduler) against what tasks.csv measured. Measured makespan: first task "
        "start to last task end; per device, span is its first start to its last end and busy its task "
        "seconds (a fused pass once). Ratios are measured / predicted: above 1, slower than predicted."
    )
    plans, devices = plan_tables(sweep)
    plans = plans.merge(runs[["run", "label", "threads"]], on="run", how="left")
    usable = plans[plans["usable"] & plans["group"].isin(list(style))]
    if usable.empty:
        return section("prediction", "Predicted vs measured", intro, notice("No usable run."))
    compared = usable.dropna(subset=["makespan_ratio"])
    if compared.empty:
        reason = first_text(usable["plan_reason"]) or "no run has a predicted makespan"
        return section(
            "prediction",
            "Predicted vs measured",
            intro,
            notice(f"No prediction to compare: {reason}."),
        )
    order = {g: i for i, g in enumerate(dict.fromkeys(runs["group"]))}
    usable = usable.sort_values(
        ["group", "devices", "repeat"], key=lambda c: c.map(order) if c.name == "group" else c
    )
    figs = [
        b.div(makespan_figure(compared, style, unit), 460),
        b.div(ratio_figure(compared, style, unit), 460),
    ]
    figs += load_figures(b, sweep, runs, devices, style, unit)
    table = data_table(
        usable.assign(
            note=[r or n for r, n in zip(usable["plan_reason"], usable["plan_note"], strict=True)],
            mode=usable["fused"].map({True: "fused", False: "independent"}),
        ),
        [
            ("label", "group", str),
            ("devices", "n", fmt_int),
            ("run", "run", str),
            ("cost_source", "costs from", str),
            ("mode", "mode", str),
            ("predicted_makespan_s", "predicted makespan (s)", fmt_f1),
            ("measured_makespan_s", "measured makespan (s)", fmt_f1),
            ("makespan_ratio", "measured / predicted", fmt_ratio),
            ("plan_bound_s", "predicted bound (s)", fmt_f1),
            ("moved_tasks", "tasks moved", fmt_int),
            ("note", "note", str),
        ],
    )
    body = f"<div class='grid2'>{''.join(figs)}</div>" + table
    body += (
        "<p class='hint'>costs from: store (times measured by earlier runs on this hardware), timings-file, "
        "calibration (a few timed steps) or analytic (FLOPs at a nominal rate: right in shape, not in "
        "seconds). The predicted bound is max(Σ/n, longest task) on the predicted costs.</p>"
    )
    return section("prediction", "Predicted vs measured", intro, body)


def makespan_figure(
    compared: pd.DataFrame, style: dict[str, dict[str, Any]], unit: str
) -> go.Figure:
    """One point per run, predicted makespan against measured, around the ideal y = x."""
    values = pd.concat([compared["predicted_makespan_s"], compared["measured_makespan_s"]])
    values = values[values > 0]
    # Analytic costs can sit orders of magnitude off the measured seconds: a log scale keeps both in view.
    log = bool(len(values)) and values.max() / values.min() > 20
    lo, hi = (values.min() / 1.5, values.max() * 1.5) if log else (0.0, values.max() * 1.08)
    several_sources = compared["cost_source"].nunique() > 1
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            name="ideal (measured = predicted)",
            line={"color": "#9aa0a6", "dash": "dash", "width": 1.5},
            hoverinfo="skip",
        )
    )
    for group, g in compared.groupby("group", sort=False):
        s = style[group]
        text = [
            f"n={int(n)}" + (f" · {src}" if several_sources else "")
            for n, src in zip(g["devices"], g["cost_source"], strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=g["predicted_makespan_s"],
                y=g["measured_makespan_s"],
                mode="markers+text",
                name=s["label"],
                text=text,
                textposition="middle right",
                textfont={"size": 11, "color": s["colour"]},
                marker={
                    "symbol": s["symbol"],
                    "size": 10,
                    "color": s["colour"],
                    "line": {"color": "white", "width": 1},
                },
                customdata=np.stack(
                    [
                        g["run"],
                        g["cost_source"],
                        g["makespan_ratio"],
                        g["fused"].map({True: "fused", False: "independent"}).fillna("—"),
                        g["devices"].astype(int),
                    ],
                    axis=-1,
                ),
                hovertemplate=(
                    f"{s['label']} · %{{customdata[4]}} {unit}<br>run %{{customdata[0]}}<br>predicted "
                    "%{x:.1f} s, measured %{y:.1f} s (×%{customdata[2]:.2f})<br>costs from "
                    "%{customdata[1]}, %{customdata[3]}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title="Predicted vs measured makespan",
        xaxis_title="predicted makespan (s)",
        yaxis_title="measured makespan (s)",
    )
    if log:  # one labelled tick per decade: plotly's default labels 0.2 and 2 alike as "2"
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], dtick=1)
        fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], dtick=1)
    else:
        fig.update_xaxes(range=[lo, hi])
        fig.update_yaxes(range=[lo, hi])
    return fig


def ratio_figure(compared: pd.DataFrame, style: dict[str, dict[str, Any]], unit: str) -> go.Figure:
    """Median measured / predicted makespan per group, cost source and device count, against 1."""
    # Runs planned on different cost sources (a sweep's first run finds no stored times) are not
    # medians of one another: each source gets its own line.
    several_sources = compared["cost_source"].nunique() > 1
    med = makespan_ratio_medians(compared)
    fig = go.Figure()
    fig.add_hline(y=1, line={"color": "#9aa0a6", "dash": "dash", "width": 1.5})
    for (group, source), g in med.groupby(["group", "cost_source"], sort=False):
        s = style[group]
        name = f"{s['label']} · {source} costs" if several_sources else s["label"]
        g = g.sort_values("devices")
        fig.add_trace(
            go.Scatter(
                x=g["devices"],
                y=g["ratio"],
                mode="lines+markers",
                name=name,
                line={"color": s["colour"], "dash": s["dash"], "width": 2.5},
                marker={"symbol": s["symbol"], "size": 9},
                customdata=g["runs"],
                hovertemplate=(
                    f"{name}<br>%{{x}} {unit}: measured / predicted %{{y:.2f}}"
                    "<br>median of %{customdata} run(s)<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title="Measured / predicted makespan vs devices",
        xaxis_title=f"devices ({unit})",
        yaxis_title="measured / predicted makespan",
    )
    fig.update_xaxes(tickmode="array", tickvals=sorted(med["devices"].unique()))
    ratios = med["ratio"][med["ratio"] > 0]
    if len(ratios) and max(ratios.max(), 1) / min(ratios.min(), 1) > 20:
        fig.update_yaxes(type="log", dtick=1)
    return fig


def load_figures(
    b: Figures,
    sweep: SweepData,
    runs: pd.DataFrame,
    devices: pd.DataFrame,
    style: dict[str, dict[str, Any]],
    unit: str,
) -> list[str]:
    """Per group's largest run: each device's predicted load next to its measured span."""
    picked = [r for r in largest_runs(sweep, runs) if (devices["run"] == r.name).any()]
    rows = devices[devices["run"].isin([r.name for r in picked])]
    if rows.empty or rows["measured_span_s"].isna().all():
        return []
    y_max = (
        float(np.nanmax(rows[["predicted_load_s", "measured_span_s"]].to_numpy(dtype=float))) * 1.08
    )
    divs = []
    for run in picked:
        d = rows[rows["run"] == run.name].sort_values("order")
        if d["measured_span_s"].isna().all():
            continue
        group = group_key(run.config)
        s = style[group]
        hover = [
            f"{r.device}: {r.planned_tasks} task(s) planned, {r.measured_tasks} run<br>predicted "
            f"{fmt_num(r.predicted_load_s)} s · span {fmt_num(r.measured_span_s)} s · busy {fmt_num(r.measured_busy_s)} s"
            for r in d.itertuples()
        ]
        fig = go.Figure()
        fig.add_trace(
            go.Bar(
                x=d["device"],
                y=d["predicted_load_s"],
                name="predicted load",
                marker={"color": s["colour"], "opacity": 0.45, "pattern": {"shape": "/"}},
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Bar(
                x=d["device"],
                y=d["measured_span_s"],
                name="measured span",
                marker={"color": s["colour"]},
                text=[fmt_ratio(v) for v in d["span_ratio"]],
                textposition="outside",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"Predicted vs measured load · {s['label']} · {count_text(run.devices or 0, unit)}",
            xaxis_title="device",
            yaxis_title="seconds (s)",
            barmode="group",
            bargap=0.3,
            yaxis={"range": [0, y_max]},
        )
        divs.append(b.div(fig, 400))
    return divs

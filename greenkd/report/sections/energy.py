"""Energy of whole runs, greenup and powerup (paper eq. 7, Table 9), energy by domain."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from greenkd.analysis import energy_table, shared_notes
from greenkd.report.page import (
    data_table,
    estimate_badge,
    first_text,
    fmt_f1,
    fmt_f2,
    fmt_int,
    fmt_range_kj,
    notes_notice,
    notice,
    section,
)
from greenkd.report.sections.context import Context
from greenkd.report.sections.hosts import hosts_column


def render(ctx: Context) -> str:
    """Greenup and powerup figure, the Table 9 energy table and energy by domain."""
    b, runs, scaling, style, unit = ctx.figures, ctx.runs, ctx.scaling, ctx.style, ctx.unit
    intro = (
        "Energy of whole runs, node total = CPU packages (where only powercap reads them: its psys zone, "
        "else packages + DRAM; the domains the profiler's total adds) + every GPU of the node (idle GPUs "
        "burn energy too); greenup E<sub>1</sub>/E<sub>n</sub> (paper eq. 7, Table 9), powerup P<sub>n</sub>/P<sub>1</sub>. "
        "CPU cores are a sub-domain of their package and are shown, not added."
    )
    usable = runs[runs["usable"]]
    if usable.empty:
        return section("energy", "Energy and greenup", intro, notice("No usable run."))
    table_df = energy_table(runs, scaling)
    body = ""
    green = scaling.dropna(subset=["greenup"])
    if not green.empty:
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("Greenup E₁ / Eₙ", "Powerup Pₙ / P₁"),
            horizontal_spacing=0.1,
        )
        for group, g in green.groupby("group", sort=False):
            s = style[group]
            g = g.sort_values("devices")
            for col, metric in ((1, "greenup"), (2, "powerup")):
                fig.add_trace(
                    go.Scatter(
                        x=g["devices"],
                        y=g[metric],
                        mode="lines+markers",
                        name=s["label"],
                        legendgroup=group,
                        showlegend=col == 1,
                        line={"color": s["colour"], "dash": s["dash"], "width": 2.5},
                        marker={"symbol": s["symbol"], "size": 9},
                        hovertemplate=f"{s['label']}<br>%{{x}} {unit}: {metric} %{{y:.3f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.add_hline(y=1, line={"color": "#9aa0a6", "dash": "dash", "width": 1})
        fig.update_xaxes(
            title_text=f"devices ({unit})",
            tickmode="array",
            tickvals=sorted(green["devices"].unique()),
        )
        fig.update_yaxes(title_text="greenup (×)", row=1, col=1)
        fig.update_yaxes(title_text="powerup (×)", row=1, col=2)
        fig.update_layout(title="Energy savings and power cost of parallelism", margin={"t": 90})
        body += b.div(fig, 420)
    else:
        reason = (
            first_text(usable["energy_note"]) or first_text(scaling["note"]) or "no energy samples"
        )
        body += notice(f"No greenup: {reason}.")
    body += _estimates(ctx)
    if usable["energy_node_j"].isna().all():
        return section(
            "energy",
            "Energy and greenup",
            intro,
            body
            + (
                "<p class='hint'>Time, and utilisation where /proc/stat was sampled, are in the other sections; "
                "the sensors missing and their fixes are under Machine and sensors.</p>"
            ),
        )
    kj = lambda v: f"{v / 1e3:,.2f}"  # noqa: E731
    shared, rest = shared_notes(table_df)
    body += (
        "<h3>Energy and greenup (Table 9)</h3>"
        + notes_notice(shared)
        + data_table(
            table_df.assign(note=rest),
            [
                ("label", "group", str),
                ("devices", "n", fmt_int),
                *hosts_column(scaling),
                ("repeats", "runs", fmt_int),
                ("time_s", "time (s)", fmt_f1),
                ("energy_j", "node energy (kJ)", kj),
                (("energy_min_j", "energy_max_j"), "range (kJ)", fmt_range_kj),
                ("power_w", "avg power (W)", fmt_f1),
                ("greenup", "greenup", fmt_f2),
                ("powerup", "powerup", fmt_f2),
                ("note", "note", str),
            ],
        )
    )
    body += "<h3>By domain (medians)</h3>" + data_table(
        table_df,
        [
            ("label", "group", str),
            ("devices", "n", fmt_int),
            ("cpu_package_j", "CPU packages (kJ)", kj),
            ("cpu_cores_j", "of which cores (kJ)", kj),
            ("gpu_used_j", "GPUs used (kJ)", kj),
            ("gpu_node_j", "all GPUs (kJ)", kj),
            ("cpu_util_pct", "CPU util (%)", fmt_f1),
            ("gpu_util_pct", "GPU util (%)", fmt_f1),
            ("energy_scope", "node total covers", str),
            ("energy_source", "energy from", str),
        ],
    )
    return section("energy", "Energy and greenup", intro, body)


def _estimates(ctx: Context) -> str:
    """The power model's estimates (`--power-model`), apart from every measured figure, badged."""
    scaling, style, unit = ctx.scaling, ctx.style, ctx.unit
    if "energy_estimate_j" not in scaling or scaling["energy_estimate_j"].isna().all():
        return ""
    body = (
        f"<h3>Estimated energy and greenup {estimate_badge()}</h3>"
        "<p class='hint'>From the opt-in power model (<code>--power-model</code>): CPU package power "
        "estimated from /proc/stat utilisation, <b>not measured</b>. These joules are never added to "
        "measured ones, and the greenup here compares estimates with estimates only.</p>"
    )
    green = scaling.dropna(subset=["greenup_estimate"])
    if not green.empty:
        fig = go.Figure()
        for group, g in green.groupby("group", sort=False):
            s = style[group]
            g = g.sort_values("devices")
            fig.add_trace(
                go.Scatter(
                    x=g["devices"],
                    y=g["greenup_estimate"],
                    mode="lines+markers",
                    name=s["label"],
                    line={"color": s["colour"], "dash": s["dash"], "width": 2.5},
                    marker={"symbol": s["symbol"], "size": 9},
                    hovertemplate=f"{s['label']}<br>%{{x}} {unit}: estimated greenup "
                    "%{y:.3f} (power model, not measured)<extra></extra>",
                )
            )
        fig.add_hline(y=1, line={"color": "#9aa0a6", "dash": "dash", "width": 1})
        fig.update_xaxes(
            title_text=f"devices ({unit})",
            tickmode="array",
            tickvals=sorted(green["devices"].unique()),
        )
        fig.update_yaxes(title_text="estimated greenup (×)")
        fig.update_layout(title="ESTIMATE: greenup E₁ / Eₙ from the power model (not measured)")
        body += ctx.figures.div(fig, 400)
    kj = lambda v: f"{v / 1e3:,.3f}"  # noqa: E731
    body += data_table(
        scaling,
        [
            ("label", "group", str),
            ("devices", "n", fmt_int),
            ("time_s", "time (s)", fmt_f1),
            ("energy_estimate_j", "estimated energy (kJ)", kj),
            ("greenup_estimate", "estimated greenup", fmt_f2),
            ("estimate_model", "power model", str),
        ],
    )
    return f"<div class='estimate' id='energy-estimate'>{body}</div>"

"""Per-layer runtime in model order, one line per device count (paper Fig. 5c/d)."""

from __future__ import annotations

import plotly.graph_objects as go

from greenkd.analysis import layer_medians, layer_runtimes
from greenkd.analysis.tables import TRUNK_INDEX
from greenkd.report.page import count_text, notice, section
from greenkd.report.sections.context import Context
from greenkd.report.style import DEVICE_COLOURS


def render(ctx: Context) -> str:
    """One figure per group: each layer's median runtime per device count."""
    b, sweep, label_of, unit = ctx.figures, ctx.sweep, ctx.label_of, ctx.unit
    intro = (
        "Runtime of every layer task in model order, one line per device count (paper Fig. 5c/d): "
        "if layers slow down as devices are added, the devices contend for the CPU (tf.data threads). "
        "In a fused pass each layer is its block's own measured step cost times the steps it trained, "
        "and the teacher prefix the pass shares (the trunk) is its own bar, left of layer 0."
    )
    layers = layer_runtimes(sweep)
    skipped = "".join(notice(n) for n in layers.attrs.get("notes", []))
    if layers.empty:
        return section(
            "layers",
            "Per-layer runtime",
            intro,
            skipped or notice("No usable run has tasks.csv."),
        )
    divs = []
    for group, med in layer_medians(layers).groupby("group", sort=False):
        fig = go.Figure()
        trunk = med[med["index"] == TRUNK_INDEX]
        med = med[med["index"] != TRUNK_INDEX]
        for i, (n, gn) in enumerate(trunk.groupby("devices")):
            fig.add_trace(
                go.Bar(
                    x=[TRUNK_INDEX],
                    y=gn["seconds"],
                    name=f"shared trunk, {count_text(int(n), unit)}",
                    marker={"color": DEVICE_COLOURS[i % len(DEVICE_COLOURS)], "opacity": 0.45},
                    hovertemplate=f"{count_text(int(n), unit)}<br>shared trunk (teacher prefix of "
                    "the fused pass): %{y:.1f} s<extra></extra>",
                )
            )
        if not trunk.empty:
            ticks = sorted(med["index"].unique())
            fig.update_xaxes(
                tickmode="array",
                tickvals=[TRUNK_INDEX, *ticks],
                ticktext=["trunk", *[str(int(t)) for t in ticks]],
            )
        for i, (n, gn) in enumerate(med.groupby("devices")):
            fig.add_trace(
                go.Scatter(
                    x=gn["index"],
                    y=gn["seconds"],
                    mode="lines+markers",
                    name=count_text(int(n), unit),
                    line={"color": DEVICE_COLOURS[i % len(DEVICE_COLOURS)], "width": 2},
                    marker={"size": 6},
                    customdata=gn["task"],
                    hovertemplate=f"{count_text(int(n), unit)}<br>#%{{x}} %{{customdata}}: %{{y:.1f}} s<extra></extra>",
                )
            )
        fig.update_layout(
            title=f"Layer runtimes · {label_of.get(group, '')}",
            xaxis_title="layer position in the model",
            yaxis_title="runtime (s)",
        )
        fig.update_yaxes(rangemode="tozero")
        divs.append(b.div(fig, 400))
    return section(
        "layers",
        "Per-layer runtime",
        intro,
        skipped + f"<div class='grid2'>{''.join(divs)}</div>",
    )

"""Per-layer runtime in model order, one line per device count (paper Fig. 5c/d)."""

from __future__ import annotations

import plotly.graph_objects as go

from greenkd.analysis import layer_medians, layer_runtimes
from greenkd.report.page import count_text, notice, section
from greenkd.report.sections.context import Context
from greenkd.report.style import DEVICE_COLOURS


def render(ctx: Context) -> str:
    """One figure per group: each layer's median runtime per device count."""
    b, sweep, label_of, unit = ctx.figures, ctx.sweep, ctx.label_of, ctx.unit
    intro = (
        "Runtime of every layer task in model order, one line per device count (paper Fig. 5c/d): "
        "if layers slow down as devices are added, the devices contend for the CPU (tf.data threads)."
    )
    layers = layer_runtimes(sweep)
    if layers.empty:
        return section("layers", "Per-layer runtime", intro, notice("No usable run has tasks.csv."))
    divs = []
    for group, med in layer_medians(layers).groupby("group", sort=False):
        fig = go.Figure()
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
        "layers", "Per-layer runtime", intro, f"<div class='grid2'>{''.join(divs)}</div>"
    )

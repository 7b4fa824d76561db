"""Figures into the page: each becomes a div, the first carrying plotly.js inlined (the page opens
offline); every figure drawn is kept, in drawing order, for tests and the report card."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from greenkd.report.style import TEMPLATE

MAX_POINTS = 1500  # per time series; longer ones are averaged into bins to keep the file small
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def place_legend(fig: go.Figure, height: int) -> None:
    """A horizontal legend a fixed distance below the x-axis title, with room kept for its rows.

    Plotly places legends in plot fractions, so a fixed fraction lands on the axis title of a short
    figure; this converts pixels to the fraction for this figure's height.
    """
    names = [t.name for t in fig.data if t.showlegend is not False and t.name]
    if len(names) < 2:
        return
    # Rows at the narrowest width a figure gets (half the page): ~7 px a character plus the symbol.
    rows = max(1, math.ceil(sum(7 * len(n) + 48 for n in names) / 540))
    bottom = 70 + 22 * rows
    top = fig.layout.margin.t if fig.layout.margin.t is not None else TEMPLATE.layout.margin.t
    plot_h = max(height - top - bottom, 80)
    fig.update_layout(margin={"b": bottom}, legend={"y": -64 / plot_h, "yanchor": "top"})


class Figures:
    """Turns figures into divs; the first carries plotly.js, inlined, so the page needs no network."""

    def __init__(self) -> None:
        self.figures: list[go.Figure] = []

    def div(self, fig: go.Figure, height: int = 420) -> str:
        """The figure in the greenkd template at `height` px, as a div; kept in `figures`."""
        fig.update_layout(template="greenkd", height=height)
        place_legend(fig, height)
        first = not self.figures
        self.figures.append(fig)
        return (
            "<div class='fig'>"
            + pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=first,
                config=PLOT_CONFIG,
                div_id=f"fig-{len(self.figures)}",
                default_height=f"{height}px",
                default_width="100%",
            )
            + "</div>"
        )


def downsample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: bin means, so a 3-hour run at 1 Hz stays light."""
    if len(x) <= MAX_POINTS:
        return x, y
    bins = np.array_split(np.arange(len(x)), MAX_POINTS)
    return np.array([x[b].mean() for b in bins]), np.array([y[b].mean() for b in bins])

"""How every figure looks: the plotly template, one colour per scheduler, one dash and marker per
thread setting, device colours; fixed across the page so a group reads the same in every figure."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

# One colour per scheduler in every figure; thread settings differ by dash and marker.
SCHED_COLOURS = {"rr": "#4C78A8", "binpack": "#F58518", "ws": "#54A24B", "opt": "#B279A2"}
SCHED_NAMES = {
    "rr": "round robin",
    "binpack": "bin packing",
    "ws": "work stealing",
    "opt": "optimal",
}
FALLBACK_COLOURS = ["#E45756", "#72B7B2", "#EECA3B", "#FF9DA6", "#9D755D"]
DASHES = ["solid", "dash", "dot", "dashdot"]
SYMBOLS = ["circle", "diamond", "square", "triangle-up"]
DEVICE_COLOURS = [
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#EECA3B",
    "#9D755D",
]


TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.font = {
    "family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "size": 13,
}
TEMPLATE.layout.title = {"x": 0.0, "xanchor": "left", "font": {"size": 16}}
TEMPLATE.layout.margin = {"l": 64, "r": 24, "t": 56, "b": 56}
TEMPLATE.layout.legend = {"orientation": "h", "y": -0.2, "x": 0.0}
pio.templates["greenkd"] = TEMPLATE  # by name: validated once, not once per figure


def group_styles(usable: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Colour by scheduler, dash and marker by thread setting, fixed across every figure."""
    threads = list(dict.fromkeys(usable["threads"]))
    extra = iter(FALLBACK_COLOURS * 4)
    colours = dict(SCHED_COLOURS)
    out = {}
    for group, g in usable.groupby("group", sort=False):
        first = g.iloc[0]
        sched = str(first["sched"])
        if sched not in colours:
            colours[sched] = next(extra)
        i = threads.index(first["threads"]) % len(DASHES)
        out[group] = {
            "colour": colours[sched],
            "dash": DASHES[i],
            "symbol": SYMBOLS[i],
            "label": str(first["label"]),
        }
    return out


def display_label(label: str, sched: str) -> str:
    """'rr · autotune' -> 'round robin · autotune'."""
    head, sep, rest = str(label).partition(" · ")
    return SCHED_NAMES.get(head, head) + sep + rest if head == sched else str(label)


def viridis(t: float) -> str:
    """A colour for a position in the model (0 first layer, 1 last), on the Viridis scale."""
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [min(max(t, 0.0), 1.0) * 0.9])[0]

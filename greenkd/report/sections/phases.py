"""Where each run's wall time went: summary.json seconds by phase."""

from __future__ import annotations

import plotly.graph_objects as go

from greenkd.report.page import notice, section
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """One stacked bar per usable run, by phase."""
    b, runs = ctx.figures, ctx.runs
    intro = "Where each run's wall time went (summary.json seconds by phase)."
    usable = runs[runs["usable"]].sort_values(["label", "devices", "repeat"])
    if usable.empty:
        return section("phases", "Time by phase", intro, notice("No usable run."))
    names = [
        f"{r.label} · n={r.devices}" + (f" · #{r.repeat}" if r.repeat else "")
        for r in usable.itertuples()
    ]
    fig = go.Figure()
    colours = {
        "setup": "#9aa0a6",
        "tasks": "#4C78A8",
        "select": "#EECA3B",  # target mode's search: the sets' evaluation and brief fine-tunes
        "assemble": "#B279A2",
        "finetune": "#54A24B",
    }
    for phase, colour in colours.items():
        if usable[f"{phase}_s"].isna().all():
            continue  # no run had this phase (select: threshold-mode runs)
        fig.add_trace(
            go.Bar(
                y=names,
                x=usable[f"{phase}_s"],
                name=phase,
                orientation="h",
                marker_color=colour,
                hovertemplate=f"%{{y}}<br>{phase}: %{{x:.1f}} s<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title="Time by phase per run",
        xaxis_title="seconds (s)",
        yaxis={"autorange": "reversed"},
    )
    return section("phases", "Time by phase", intro, b.div(fig, max(320, 110 + 26 * len(names))))

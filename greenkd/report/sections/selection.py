"""The blocks each group's student got: the sets target-mode selection tried, as compression
against top-1 (the trade-off curve), with the teacher and the target marked."""

from __future__ import annotations

import plotly.graph_objects as go

from greenkd.analysis.selection import selection_tables
from greenkd.report.page import data_table, fmt_int, notice, section
from greenkd.report.sections.context import Context
from greenkd.report.style import FALLBACK_COLOURS, SCHED_COLOURS

MAX_CURVES = 8  # distinct curves drawn; groups that differ only in scheduling draw the same one
CURVE_COLOURS = [*SCHED_COLOURS.values(), *FALLBACK_COLOURS]
LEGEND = (
    "Open circles: a set spliced in, before fine-tuning (the line starts at the teacher, 1×); "
    "filled: the same set after a brief fine-tune; star: the student the run wrote; "
    "diamond: the teacher; dashed: the target."
)


def render(ctx: Context) -> str:
    """One figure of every distinct curve (largest run per group) and one row per group."""
    intro = (
        "Which blocks went into each group's student. In target mode greenkd ranks the blocks by "
        "parameters saved per point of top-1 they cost alone, splices them in one after another "
        "and measures each set before fine-tuning; a few sets are also fine-tuned briefly to see "
        "whether they meet the target. The largest run of each group is shown; scheduling does "
        "not change the blocks."
    )
    groups, sets = selection_tables(ctx.sweep, ctx.runs)
    if groups.empty:
        return section("selection", "Block selection", intro, notice("No usable run."))
    groups["label"] = groups["group"].map(ctx.label_of).fillna("")
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    table = data_table(
        groups,
        [
            ("label", "group", str),
            ("mode", "acceptance", str),
            ("goal", "goal", str),
            ("sets", "sets tried", fmt_int),
            ("finetunes", "brief fine-tunes", fmt_int),
            (("blocks", "n_targets"), "blocks in", lambda a, b: f"{int(a)} of {int(b)}"),
            ("compression_params", "params ×", lambda v: f"{v:.2f}×"),
            ("teacher_accuracy", "teacher top-1", pct),
            ("student_accuracy", "student top-1", pct),
            ("why", "why this set", str),
        ],
    )
    if sets.empty:
        return section(
            "selection",
            "Block selection",
            intro,
            notice(
                "No run tried sets of blocks, so there is no trade-off curve: "
                + "; ".join(dict.fromkeys(groups["why"]))
            )
            + table,
        )
    return section("selection", "Block selection", intro, _figure(ctx, groups, sets) + table)


def _figure(ctx: Context, groups, sets) -> str:
    curves: dict[tuple, list[str]] = {}  # identical curves (same blocks, same top-1) drawn once
    for group, g in sets.groupby("group", sort=False):
        key = tuple(
            g[["blocks", "accuracy_spliced", "accuracy_finetuned"]].astype(str).itertuples(False)
        )
        curves.setdefault(key, []).append(group)
    fig = go.Figure()
    row_of = {r.group: r for r in groups.itertuples()}
    teachers: set[float] = set()
    for i, members in enumerate(list(curves.values())[:MAX_CURVES]):
        first = members[0]
        g = sets[sets["group"] == first].sort_values("n_blocks")
        row = row_of[first]
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]  # not the scheduler's: it changes nothing
        name = ctx.label_of.get(first, first) + (
            f" (+{len(members) - 1} more)" if len(members) > 1 else ""
        )
        x = [1.0, *g["compression_params"]]  # from the teacher: no block, 1x
        y = [row.teacher_accuracy * 100, *(g["accuracy_spliced"] * 100)]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": colour, "dash": "dot", "width": 1.5},
                marker={"symbol": "circle-open", "size": 8},
                customdata=[["teacher", 0], *g[["blocks", "n_blocks"]].values.tolist()],
                hovertemplate="%{customdata[1]} block(s): %{y:.2f}% at %{x:.2f}×"
                "<br>%{customdata[0]}<extra></extra>",
            )
        )
        tuned = g.dropna(subset=["accuracy_finetuned"])
        if len(tuned):
            fig.add_trace(
                go.Scatter(
                    x=tuned["compression_params"],
                    y=tuned["accuracy_finetuned"] * 100,
                    mode="markers",
                    name=f"{name}: after a brief fine-tune",
                    legendgroup=name,
                    showlegend=False,
                    marker={"color": colour, "size": 10, "symbol": "circle"},
                    customdata=tuned[["blocks", "n_blocks"]].values.tolist(),
                    hovertemplate="%{customdata[1]} block(s), brief fine-tune: %{y:.2f}%"
                    "<br>%{customdata[0]}<extra></extra>",
                )
            )
        if row.compression_params == row.compression_params:  # the final student, once
            fig.add_trace(
                go.Scatter(
                    x=[row.compression_params],
                    y=[row.student_accuracy * 100],
                    mode="markers",
                    name=f"{name}: student",
                    legendgroup=name,
                    showlegend=False,
                    marker={"color": colour, "size": 16, "symbol": "star"},
                    hovertemplate="student: %{y:.2f}% at %{x:.2f}×<extra></extra>",
                )
            )
        teachers.add(row.teacher_accuracy)
        if row.needed_accuracy == row.needed_accuracy:
            fig.add_hline(
                y=row.needed_accuracy * 100,
                line={"color": colour, "dash": "dash", "width": 1},
                annotation_text=f"target {row.needed_accuracy:.2%}",
                annotation_position="bottom right" if i % 2 == 0 else "top right",
            )
        if row.target_params == row.target_params:
            fig.add_vline(
                x=row.target_params,
                line={"color": colour, "dash": "dash", "width": 1},
                annotation_text=f"target {row.target_params:g}×",
            )
    for accuracy in sorted(teachers):
        fig.add_trace(
            go.Scatter(
                x=[1.0],
                y=[accuracy * 100],
                mode="markers",
                name="teacher" if len(teachers) == 1 else f"teacher ({accuracy:.2%})",
                marker={"color": "#1f2328", "size": 12, "symbol": "diamond"},
                hovertemplate="teacher: %{y:.2f}%<extra></extra>",
            )
        )
    title = "Block sets tried: compression vs top-1"
    if len(curves) > MAX_CURVES:
        title += f" (first {MAX_CURVES} of {len(curves)} distinct curves)"
    fig.update_layout(
        title=title,
        xaxis_title="params: teacher / student (×)",
        yaxis_title="top-1 (%)",
    )
    return ctx.figures.div(fig, 460) + f"<p class='intro'>{LEGEND}</p>"

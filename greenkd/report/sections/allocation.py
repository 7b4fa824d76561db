"""Task allocation: which device ran which layer task, and when (paper Fig. 6c/d)."""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from greenkd.analysis import (
    device_load,
    fused_pass_segments,
    group_key,
    has_fused_passes,
    largest_runs,
    makespan_lower_bound,
)
from greenkd.analysis.hosts import host_of_devices, task_energy_by_host
from greenkd.report.page import count_text, notice, section
from greenkd.report.sections.context import Context
from greenkd.report.style import viridis
from profilers.naming import device_sort_key


def render(ctx: Context) -> str:
    """A Gantt chart of each group's largest run, with the makespan bound and per-task energy."""
    b, sweep, runs, label_of, unit = ctx.figures, ctx.sweep, ctx.runs, ctx.label_of, ctx.unit
    intro = (
        "Which device ran which layer task, and when, at each group's largest device count (paper Fig. 6c/d); "
        "each bar is labelled with its runtime in seconds. The dashed line is the makespan lower bound "
        "max(Σ/n, longest task); the gap to the last bar is what scheduling could still win. "
        "A fused pass (a device's blocks trained together behind one teacher forward) is split into "
        "the shared trunk (grey) and one segment per block, each as long as its share of the pass's "
        "measured costs (tasks.csv seconds_trunk and seconds_block) and labelled with its own "
        "measured seconds: the lengths are true in proportion, the order is not an order in time."
    )
    divs, notes = [], []
    picked = largest_runs(sweep, runs)
    # One time axis for every chart, so that allocations compare at a glance (Fig. 6c against 6d).
    spans = [
        r.tasks["end"].max() - r.tasks["start"].min()
        for r in picked
        if r.tasks is not None and len(r.tasks)
    ]
    x_max = max(spans, default=0) * 1.04
    for run in picked:
        # across hosts a device is host/device (gpu0 on two hosts is two devices)
        tasks = host_of_devices(run.tasks) if run.tasks is not None else None
        if tasks is None or tasks.empty:
            notes.append(f"{run.name}: no tasks.csv")
            continue
        segments = fused_pass_segments(tasks)
        if segments is None:
            notes.append(
                f"{run.name}: fused passes without per-block costs in tasks.csv (run with "
                "--no-block-costs, or before greenkd measured them): no share of a pass is known "
                "for any block, not drawn"
            )
            continue
        t0 = tasks["start"].min()
        devices = sorted(tasks["device"].unique(), key=device_sort_key)
        fig = go.Figure()
        energy = task_energy_by_host(run).set_index("task")  # each task from its own host
        # a fused pass's energy (the equal parts of its tasks, summed) is split by the cost shares
        blocks = segments[~segments["trunk"]].set_index("task")["pass_key"]
        pass_j = energy["energy_j"].groupby(blocks).sum(min_count=1)
        rank = {name: k for k, name in enumerate(tasks.sort_values("index")["task"])}
        ordered = segments.sort_values(["index", "device"])  # the trunks first, then model order
        hover, colours, text_colours = [], [], []
        for r in ordered.itertuples():
            depth = rank.get(r.task, 0) / max(len(tasks) - 1, 1)  # colour by position in the model
            colours.append("#9e9e9e" if r.trunk else viridis(depth))
            text_colours.append("#222" if r.trunk or depth >= 0.6 else "white")
            if r.pass_key:
                what = "teacher forward shared by the pass" if r.trunk else f"#{r.index}"
                text = (
                    f"{r.task} ({what})<br>{r.device}: fused pass {r.start - t0:.1f}–"
                    f"{r.end - t0:.1f} s<br>{r.measured_s:.1f} s measured alone, "
                    f"{r.share:.0%} of the pass's measured cost"
                )
                joules = pass_j.get(r.pass_key, math.nan) * r.share
                if not math.isnan(joules):
                    text += f"<br>energy {joules / 1e3:.2f} kJ (the pass's, by cost share)"
            else:
                e = energy.loc[r.task]
                text = f"{r.task} (#{r.index})<br>{r.device}: {r.start - t0:.1f}–{r.end - t0:.1f} s<br>{r.seconds:.1f} s"
                if not math.isnan(e["energy_j"]):
                    text += f"<br>energy {e['energy_j'] / 1e3:.2f} kJ"
                    if not math.isnan(e["gpu_energy_j"]):
                        text += f" (GPU {e['gpu_energy_j'] / 1e3:.2f} + CPU share {e['cpu_energy_j'] / 1e3:.2f})"
            hover.append(text)
        fig.add_trace(
            go.Bar(
                y=ordered["device"],
                x=ordered["seg_seconds"],
                base=ordered["seg_start"] - t0,
                orientation="h",
                showlegend=False,
                name="tasks",
                marker={"color": colours, "line": {"color": "white", "width": 1}},
                text=[f"{v:.0f}" for v in ordered["measured_s"]],
                textposition="inside",
                insidetextanchor="middle",
                textfont={"color": text_colours},
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        if has_fused_passes(
            tasks
        ):  # one pass per device: its tasks have no separate times to bound
            notes.append(
                f"{run.name}: fused passes (each device's tasks ran together): no makespan bound"
            )
        else:
            bound = makespan_lower_bound(tasks["seconds"], run.devices or len(devices))
            fig.add_vline(
                x=bound,
                line={"color": "#444", "dash": "dash", "width": 1.5},
                annotation_text=f"bound {bound:.0f} s",
                annotation_position="top",
            )
        load = device_load(tasks)
        busy = ", ".join(
            f"{d}: {s:.0f} s" for d, s in zip(load["device"], load["busy_s"], strict=True)
        )
        fig.update_layout(
            title=f"Task allocation · {label_of.get(group_key(run.config), '')} · {count_text(run.devices or 0, unit)}",
            xaxis_title="time since first task (s)",
            yaxis_title="device",
            barmode="overlay",
            bargap=0.25,
            yaxis={"categoryorder": "array", "categoryarray": devices[::-1]},
            xaxis={"range": [0, x_max]},
        )
        divs.append(
            "<div>"
            + b.div(fig, max(260, 150 + 48 * len(devices)))
            + f"<p class='hint'>busy time per device: {html.escape(busy)}</p></div>"
        )
    body = (
        f"<div class='grid2'>{''.join(divs)}</div>"
        if divs
        else ("" if notes else notice("No usable run has tasks.csv."))
    )
    body += "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return section("allocation", "Task allocation", intro, body)

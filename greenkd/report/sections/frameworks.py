"""TensorFlow and JAX side by side: time, energy where measured and accuracy of the same setting
on each framework (greenkd.analysis.frameworks). Absent from a sweep of one framework."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from greenkd.analysis import framework_table
from greenkd.report.page import count_text, data_table, fmt_f1, fmt_int, notice, section
from greenkd.report.sections.context import Context

# One colour per framework, the same in every panel
FRAMEWORK_COLOURS = {"tensorflow": "#e8710a", "jax": "#1a73e8", "torch": "#c5221f"}
_OTHER = "#5f6368"


def render(ctx: Context) -> str:
    """The comparison figure and table, where the sweep ran more than one framework."""
    df = framework_table(ctx.runs, ctx.scaling)
    if df.empty:
        return ""  # one framework: the page is as it was
    frameworks = list(dict.fromkeys(df["framework"]))
    reference = str(df["reference"].iloc[0])
    intro = (
        f"The same distillation on {', '.join(frameworks)} under Keras 3 (<code>greenkd sweep "
        "--framework</code>): every setting and device count side by side. Each framework is a "
        "grid of its own with its own 1-device run, so speedup and greenup compare a framework "
        f"with itself; the ratios compare each framework with {reference} at the same setting "
        "and device count (below 1: faster, or less energy). Medians over repeats."
    )
    df = df.copy()
    df["x"] = [
        f"{label} · {count_text(int(n), ctx.unit)}"
        for label, n in zip(df["label"], df["devices"], strict=True)
    ]
    measured = df["energy_j"].notna().any()
    panels = [("time_s", "wall time (s)", 1.0, ".1f")]
    if measured:
        panels.append(("energy_j", "energy (kJ)", 1e-3, ".2f"))
    panels.append(("student_accuracy", "student top-1 (%)", 100.0, ".2f"))
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[title for _, title, _, _ in panels],
        horizontal_spacing=0.08,
    )
    for framework in frameworks:
        f = df[df["framework"] == framework]
        for col, (metric, title, scale, fmt) in enumerate(panels, start=1):
            fig.add_trace(
                go.Bar(
                    x=f["x"],
                    y=f[metric] * scale,
                    name=framework,
                    legendgroup=framework,
                    showlegend=col == 1,
                    marker={"color": FRAMEWORK_COLOURS.get(framework, _OTHER)},
                    hovertemplate=f"{framework}<br>%{{x}}<br>{title}: %{{y:{fmt}}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(barmode="group", title="Frameworks side by side", margin={"t": 90})
    body = ctx.figures.div(fig, 440)
    if not measured:
        body += notice(
            "Energy not measured on this machine: time and accuracy only "
            "(--power-model gives an estimate where nothing measures)."
        )
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    ratio = lambda v: f"{v:.2f}×"  # noqa: E731
    body += data_table(
        df,
        [
            ("label", "setting", str),
            ("devices", "n", fmt_int),
            ("framework", "framework", str),
            ("repeats", "runs", fmt_int),
            ("time_s", "time (s)", fmt_f1),
            ("speedup", "speedup", ratio),
            ("time_ratio", f"time ÷ {reference}", ratio),
            ("energy_j", "energy (kJ)", lambda v: f"{v / 1e3:,.2f}"),
            ("greenup", "greenup", ratio),
            ("energy_ratio", f"energy ÷ {reference}", ratio),
            ("teacher_accuracy", "teacher top-1", pct),
            ("student_accuracy", "student top-1", pct),
        ],
    )
    return section("frameworks", "Frameworks", intro, body)

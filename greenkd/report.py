"""One self-contained HTML report per sweep (plotly.js inlined, opens offline), and an index of reports.

Sections follow the paper: speedup and efficiency against the ideal (Fig. 5a/b, 6a/b), energy and
greenup (Table 9), per-layer runtimes (Fig. 5c/d), task allocation (Fig. 6c/d), the predicted schedule
against the measured one (issue 7), power and utilisation over time, accuracy (Table 7), and the
machine with the sensors used and missing.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from greenkd import __version__
from greenkd.analysis import (
    Run,
    SweepData,
    cpu_set,
    device_load,
    find_sweeps,
    group_key,
    has_fused_passes,
    layer_runtimes,
    load_sweep,
    makespan_lower_bound,
    plan_tables,
    run_table,
    scaling_table,
    task_energy,
)
from greenkd.errors import GreenkdError
from greenkd.fileio import write_text_atomic

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
MAX_POINTS = 1500  # per time series; longer ones are averaged into bins to keep the file small
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.font = {
    "family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "size": 13,
}
TEMPLATE.layout.title = {"x": 0.0, "xanchor": "left", "font": {"size": 16}}
TEMPLATE.layout.margin = {"l": 64, "r": 24, "t": 56, "b": 56}
TEMPLATE.layout.legend = {"orientation": "h", "y": -0.2, "x": 0.0}
pio.templates["greenkd"] = TEMPLATE  # by name: validated once, not once per figure


@dataclass
class Report:
    """A built report: the page and the figures drawn in it."""

    sweep: SweepData
    html: str
    figures: list[go.Figure] = field(default_factory=list)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_table, with display labels
    scaling: pd.DataFrame = field(default_factory=pd.DataFrame)


# ----------------------------------------------------------------------------- entry points


def write_reports(results: str | Path, out: str | Path = "reports") -> list[Path]:
    """Write `<out>/<sweep>/report.html` for each sweep under `results`, then `<out>/index.html`."""
    sweeps = find_sweeps(results)
    paths: list[Path] = []
    problems: list[str] = []
    for sweep_dir in sweeps:
        if len(sweeps) == 1:
            paths.append(write_report(sweep_dir, out, index=False))
            continue
        try:
            paths.append(write_report(sweep_dir, out, index=False))
        except GreenkdError as exc:  # one empty sweep among several: list it, report the rest
            problems.append(f"{sweep_dir.name}: {exc}")
    if not paths:
        raise GreenkdError("; ".join(problems))
    write_index(out, problems)
    return paths


def write_report(sweep_dir: str | Path, out: str | Path = "reports", *, index: bool = True) -> Path:
    """Write one sweep's report atomically and return its path (the sweep prints it)."""
    sweep = load_sweep(sweep_dir)
    report = build_report(sweep)
    folder = Path(out) / _safe_name(sweep.name)
    path = folder / "report.html"
    write_text_atomic(path, report.html)
    runs, scaling = report.runs, report.scaling
    card = {
        "sweep": sweep.name,
        "source": str(Path(sweep_dir).resolve()),
        "created_ts": sweep.created_ts,
        "generated_ts": time.time(),
        "runs": len(runs),
        "complete": int((runs["status"] == "complete").sum()),
        "usable": int(runs["usable"].sum()),
        "figures": len(report.figures),
        "devices": sorted({int(n) for n in runs["devices"].dropna()}),
        "groups": list(dict.fromkeys(str(x) for x in runs.loc[runs["usable"], "label"])),
        "best_speedup": _best(scaling, "speedup"),
        "best_greenup": _best(scaling, "greenup"),
    }
    write_text_atomic(folder / "report.json", json.dumps(card, indent=2) + "\n")
    if index:
        write_index(out)
    return path


def _best(scaling: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """The largest value of a metric over n > 1, with its group and device count."""
    rows = scaling[scaling["devices"] > 1].dropna(subset=[metric])
    if rows.empty:
        return None
    row = rows.loc[rows[metric].idxmax()]
    return {"value": float(row[metric]), "group": str(row["label"]), "devices": int(row["devices"])}


def _best_text(best: dict[str, Any] | None) -> str:
    return "—" if not best else f"{best['value']:.2f}× ({best['group']}, n={best['devices']})"


def write_index(out: str | Path, problems: list[str] | None = None) -> Path:
    """`<out>/index.html`: every report found under `out`, newest sweep first."""
    out = Path(out)
    cards = []
    for card_path in sorted(out.glob("*/report.json")):
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError:
            continue
        card["href"] = f"{card_path.parent.name}/report.html"
        cards.append(card)
    cards.sort(key=lambda c: -(c.get("created_ts") or 0))
    rows = "".join(
        f"<tr><td><a href='{html.escape(c['href'])}'>{html.escape(str(c['sweep']))}</a></td>"
        f"<td>{_when(c.get('created_ts'))}</td><td class='num'>{c.get('usable', 0)} / {c.get('runs', 0)}</td>"
        f"<td>{html.escape(', '.join(map(str, c.get('devices') or [])))}</td>"
        f"<td>{html.escape(_best_text(c.get('best_speedup')))}</td>"
        f"<td>{html.escape(_best_text(c.get('best_greenup')))}</td><td>{_when(c.get('generated_ts'))}</td></tr>"
        for c in cards
    )
    body = (
        "<header><h1>greenkd reports</h1><p class='sub'>One report per sweep; each file opens offline.</p></header>"
        "<section><table class='tbl'><thead><tr><th>sweep</th><th>started</th><th>usable / runs</th>"
        f"<th>devices</th><th>best speedup</th><th>best greenup</th><th>report written</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    if problems:
        body += (
            "<h3>Not reported</h3><ul>"
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul>"
        )
    body += "</section>"
    path = out / "index.html"
    write_text_atomic(path, _page("greenkd reports", body))
    return path


def build_report(sweep: SweepData) -> Report:
    """Analyse a sweep and lay out every section; figures are collected in drawing order."""
    runs = run_table(sweep)
    runs["label"] = [
        _display_label(label, sched)
        for label, sched in zip(runs["label"], runs["sched"], strict=True)
    ]
    scaling = scaling_table(runs)
    builder = _Builder()
    kind = _device_kind(runs)
    unit = "GPUs" if kind == "gpu" else "CPU workers" if kind == "cpu" else "devices"
    label_of = dict(zip(runs["group"], runs["label"], strict=True))
    sched_of = dict(zip(runs["group"], runs["sched"], strict=True))
    style = _styles(runs[runs["usable"]])

    sections = [
        _header(sweep, runs, scaling, unit),
        _scaling_section(builder, scaling, style, unit),
        _energy_section(builder, runs, scaling, style, unit),
        _phase_section(builder, runs, sched_of),
        _layer_section(builder, sweep, label_of, unit),
        _gantt_section(builder, sweep, runs, label_of, unit),
        _prediction_section(builder, sweep, runs, style, unit),
        _timeline_section(builder, sweep, runs, label_of),
        _accuracy_section(runs),
        _machine_section(sweep, runs),
        _runs_section(sweep, runs),
    ]
    nav = "".join(f"<a href='#{sid}'>{title}</a>" for sid, title in _NAV)
    page = _page(f"greenkd · {sweep.name}", f"<nav>{nav}</nav>" + "".join(sections))
    return Report(sweep=sweep, html=page, figures=builder.figures, runs=runs, scaling=scaling)


# ----------------------------------------------------------------------------- sections

_NAV = [
    ("scaling", "Scaling"),
    ("energy", "Energy"),
    ("phases", "Phases"),
    ("layers", "Layers"),
    ("allocation", "Allocation"),
    ("prediction", "Predicted vs measured"),
    ("timeline", "Power &amp; utilisation"),
    ("accuracy", "Accuracy"),
    ("machine", "Machine &amp; sensors"),
    ("runs", "Runs"),
]


def _place_legend(fig: go.Figure, height: int) -> None:
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


class _Builder:
    """Turns figures into divs; the first carries plotly.js, inlined, so the page needs no network."""

    def __init__(self) -> None:
        self.figures: list[go.Figure] = []

    def div(self, fig: go.Figure, height: int = 420) -> str:
        fig.update_layout(template="greenkd", height=height)
        _place_legend(fig, height)
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


def _header(sweep: SweepData, runs: pd.DataFrame, scaling: pd.DataFrame, unit: str) -> str:
    usable = runs[runs["usable"]]
    counts = runs["status"].value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in ("complete", "partial", "failed") if s in counts)
    hosts = sorted({str(r.meta.get("host")) for r in sweep.runs if r.meta.get("host")})
    models = sorted({str(m) for m in usable["model"] if m})
    cards = []
    best = scaling.dropna(subset=["speedup"])
    best = best[best["devices"] > 1]
    if not best.empty:
        b = best.loc[best["speedup"].idxmax()]
        cards.append(
            _card(
                "best speedup",
                f"{b['speedup']:.2f}×",
                f"{b['label']}, {int(b['devices'])} {unit}, efficiency {b['efficiency']:.2f}",
            )
        )
    green = scaling.dropna(subset=["greenup"])
    green = green[green["devices"] > 1]
    if not green.empty:
        g = green.loc[green["greenup"].idxmax()]
        saving = 1 - 1 / g["greenup"]
        cards.append(
            _card(
                "best greenup",
                f"{g['greenup']:.2f}×",
                f"{g['label']}, {int(g['devices'])} {unit}: {saving:.0%} less energy",
            )
        )
    elif not usable.empty:
        cards.append(
            _card(
                "energy", "not measured", _first_text(usable["energy_note"]) or "no energy samples"
            )
        )
    acc = usable.dropna(subset=["teacher_accuracy", "student_accuracy"])
    if not acc.empty:
        change = (acc["student_accuracy"] - acc["teacher_accuracy"]).median() * 100
        cards.append(
            _card(
                "top-1 accuracy",
                f"{acc['student_accuracy'].median():.2%}",
                f"student (median); teacher {acc['teacher_accuracy'].median():.2%}, {change:+.2f} points",
            )
        )
    cards.append(_card("runs", f"{len(usable)} / {len(runs)}", f"usable / total ({status})"))
    sub = " · ".join(
        x
        for x in (
            f"started {_when(sweep.created_ts)}" if sweep.created_ts else "",
            f"host {', '.join(hosts)}" if hosts else "",
            f"model {', '.join(models)}" if models else "",
            f"devices: {unit}",
        )
        if x
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in sweep.notes)
    return (
        f"<header><h1>Sweep <code>{html.escape(sweep.name)}</code></h1><p class='sub'>{html.escape(sub)}</p>"
        f"<div class='cards'>{''.join(cards)}</div>{notes}</header>"
    )


def _scaling_section(
    b: _Builder, scaling: pd.DataFrame, style: dict[str, dict[str, Any]], unit: str
) -> str:
    intro = (
        "Speedup T<sub>1</sub>/T<sub>n</sub> and efficiency speedup/n of whole runs, per scheduler "
        "(colour) and tf.data thread setting (dash), against the ideal (paper Fig. 5a/b, 6a/b). "
        "Whiskers span the best and worst repeat."
    )
    ok = scaling.dropna(subset=["speedup"])
    if ok.empty:
        reason = _first_text(scaling["note"]) or "no usable run"
        return _section(
            "scaling", "Speedup and efficiency", intro, _notice(f"No speedup: {reason}.")
        )
    max_n = int(ok["devices"].max())
    figs = []
    for metric, title, ytitle, ideal in (
        ("speedup", "Speedup vs devices", "speedup T₁ / Tₙ", (lambda n: n)),
        ("efficiency", "Efficiency vs devices", "efficiency (speedup / n)", (lambda n: 1.0)),
    ):
        fig = go.Figure()
        xs = list(range(1, max_n + 1))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[ideal(n) for n in xs],
                mode="lines",
                name="ideal",
                line={"color": "#9aa0a6", "dash": "dash", "width": 1.5},
            )
        )
        for group, g in ok.groupby("group", sort=False):
            s = style[group]
            g = g.sort_values("devices")
            err = None
            if (g["repeats"] > 1).any():
                err = {
                    "type": "data",
                    "symmetric": False,
                    "array": g[f"{metric}_hi"] - g[metric],
                    "arrayminus": g[metric] - g[f"{metric}_lo"],
                    "thickness": 1.2,
                    "width": 4,
                }
            fig.add_trace(
                go.Scatter(
                    x=g["devices"],
                    y=g[metric],
                    mode="lines+markers",
                    name=s["label"],
                    error_y=err,
                    line={"color": s["colour"], "dash": s["dash"], "width": 2.5},
                    marker={"symbol": s["symbol"], "size": 9},
                    customdata=np.stack([g["time_s"], g["repeats"]], axis=-1),
                    hovertemplate=(
                        f"{s['label']}<br>%{{x}} {unit}: {metric} %{{y:.3f}}"
                        "<br>median time %{customdata[0]:.1f} s over %{customdata[1]} run(s)<extra></extra>"
                    ),
                )
            )
        fig.update_layout(title=title, xaxis_title=f"devices ({unit})", yaxis_title=ytitle)
        fig.update_xaxes(tickmode="array", tickvals=xs)
        if metric == "efficiency":
            fig.update_yaxes(rangemode="tozero")
        figs.append(b.div(fig, 440))
    table = _table(
        scaling,
        [
            ("label", "group", str),
            ("devices", "n", _int),
            ("repeats", "runs", _int),
            ("time_s", "time (s)", lambda v: f"{v:,.1f}"),
            (("time_min_s", "time_max_s"), "range (s)", _range1),
            ("speedup", "speedup", _f2),
            ("efficiency", "efficiency", _f2),
            ("makespan_lb_s", "task makespan bound (s)", _f1),
            ("tasks_makespan_s", "task makespan (s)", _f1),
            ("note", "note", str),
        ],
    )
    expl = (
        "<p class='hint'>The task makespan bound is max(Σ task seconds / n, longest task) from tasks.csv: "
        "no schedule of those tasks ends sooner. A group without a complete 1-device run has no baseline, "
        "so no speedup (never a guess).</p>"
    )
    return _section(
        "scaling",
        "Speedup and efficiency",
        intro,
        f"<div class='grid2'>{''.join(figs)}</div>" + table + expl,
    )


def _energy_section(
    b: _Builder,
    runs: pd.DataFrame,
    scaling: pd.DataFrame,
    style: dict[str, dict[str, Any]],
    unit: str,
) -> str:
    intro = (
        "Energy of whole runs, node total = CPU packages + every GPU of the node (idle GPUs burn energy "
        "too); greenup E<sub>1</sub>/E<sub>n</sub> (paper eq. 7, Table 9), powerup P<sub>n</sub>/P<sub>1</sub>. "
        "CPU cores are a sub-domain of their package and are shown, not added."
    )
    usable = runs[runs["usable"]]
    if usable.empty:
        return _section("energy", "Energy and greenup", intro, _notice("No usable run."))
    per_run = (
        usable.groupby(["group", "devices"], sort=False)
        .agg(
            cpu_package_j=("cpu_package_j", "median"),
            cpu_cores_j=("cpu_cores_j", "median"),
            gpu_used_j=("gpu_used_j", "median"),
            gpu_node_j=("gpu_node_j", "median"),
            cpu_util_pct=("cpu_util_pct", "median"),
            gpu_util_pct=("gpu_util_pct", "median"),
            energy_source=("energy_source", "first"),
            energy_note=("energy_note", "first"),
        )
        .reset_index()
    )
    table_df = scaling.merge(per_run, on=["group", "devices"], how="left")
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
            _first_text(usable["energy_note"])
            or _first_text(scaling["note"])
            or "no energy samples"
        )
        body += _notice(f"No greenup: {reason}.")
    if usable["energy_node_j"].isna().all():
        return _section(
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
    body += "<h3>Energy and greenup (Table 9)</h3>" + _table(
        table_df,
        [
            ("label", "group", str),
            ("devices", "n", _int),
            ("repeats", "runs", _int),
            ("time_s", "time (s)", _f1),
            ("energy_j", "node energy (kJ)", kj),
            (("energy_min_j", "energy_max_j"), "range (kJ)", _range_kj),
            ("power_w", "avg power (W)", _f1),
            ("greenup", "greenup", _f2),
            ("powerup", "powerup", _f2),
            ("note", "note", str),
        ],
    )
    body += "<h3>By domain (medians)</h3>" + _table(
        table_df,
        [
            ("label", "group", str),
            ("devices", "n", _int),
            ("cpu_package_j", "CPU packages (kJ)", kj),
            ("cpu_cores_j", "of which cores (kJ)", kj),
            ("gpu_used_j", "GPUs used (kJ)", kj),
            ("gpu_node_j", "all GPUs (kJ)", kj),
            ("cpu_util_pct", "CPU util (%)", _f1),
            ("gpu_util_pct", "GPU util (%)", _f1),
            ("energy_scope", "node total covers", str),
            ("energy_source", "energy from", str),
        ],
    )
    return _section("energy", "Energy and greenup", intro, body)


def _phase_section(b: _Builder, runs: pd.DataFrame, sched_of: dict[str, str]) -> str:
    intro = "Where each run's wall time went (summary.json seconds by phase)."
    usable = runs[runs["usable"]].sort_values(["label", "devices", "repeat"])
    if usable.empty:
        return _section("phases", "Time by phase", intro, _notice("No usable run."))
    names = [
        f"{r.label} · n={r.devices}" + (f" · #{r.repeat}" if r.repeat else "")
        for r in usable.itertuples()
    ]
    fig = go.Figure()
    colours = {"setup": "#9aa0a6", "tasks": "#4C78A8", "assemble": "#B279A2", "finetune": "#54A24B"}
    for phase, colour in colours.items():
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
    return _section("phases", "Time by phase", intro, b.div(fig, max(320, 110 + 26 * len(names))))


def _layer_section(b: _Builder, sweep: SweepData, label_of: dict[str, str], unit: str) -> str:
    intro = (
        "Runtime of every layer task in model order, one line per device count (paper Fig. 5c/d): "
        "if layers slow down as devices are added, the devices contend for the CPU (tf.data threads)."
    )
    layers = layer_runtimes(sweep)
    if layers.empty:
        return _section(
            "layers", "Per-layer runtime", intro, _notice("No usable run has tasks.csv.")
        )
    divs = []
    for group, g in layers.groupby("group", sort=False):
        med = (
            g.groupby(["devices", "index"])
            .agg(seconds=("seconds", "median"), task=("task", "first"))
            .reset_index()
        )
        fig = go.Figure()
        for i, (n, gn) in enumerate(med.groupby("devices")):
            fig.add_trace(
                go.Scatter(
                    x=gn["index"],
                    y=gn["seconds"],
                    mode="lines+markers",
                    name=_count(int(n), unit),
                    line={"color": DEVICE_COLOURS[i % len(DEVICE_COLOURS)], "width": 2},
                    marker={"size": 6},
                    customdata=gn["task"],
                    hovertemplate=f"{_count(int(n), unit)}<br>#%{{x}} %{{customdata}}: %{{y:.1f}} s<extra></extra>",
                )
            )
        fig.update_layout(
            title=f"Layer runtimes · {label_of.get(group, '')}",
            xaxis_title="layer position in the model",
            yaxis_title="runtime (s)",
        )
        fig.update_yaxes(rangemode="tozero")
        divs.append(b.div(fig, 400))
    return _section(
        "layers", "Per-layer runtime", intro, f"<div class='grid2'>{''.join(divs)}</div>"
    )


def _gantt_section(
    b: _Builder, sweep: SweepData, runs: pd.DataFrame, label_of: dict[str, str], unit: str
) -> str:
    intro = (
        "Which device ran which layer task, and when, at each group's largest device count (paper Fig. 6c/d); "
        "each bar is labelled with its runtime in seconds. The dashed line is the makespan lower bound "
        "max(Σ/n, longest task); the gap to the last bar is what scheduling could still win."
    )
    divs, notes = [], []
    picked = _largest_runs(sweep, runs)
    # One time axis for every chart, so that allocations compare at a glance (Fig. 6c against 6d).
    spans = [
        r.tasks["end"].max() - r.tasks["start"].min()
        for r in picked
        if r.tasks is not None and len(r.tasks)
    ]
    x_max = max(spans, default=0) * 1.04
    for run in picked:
        tasks = run.tasks
        if tasks is None or tasks.empty:
            notes.append(f"{run.name}: no tasks.csv")
            continue
        t0 = tasks["start"].min()
        devices = sorted(tasks["device"].unique(), key=_device_order)
        fig = go.Figure()
        ordered = tasks.sort_values("index")
        energy = task_energy(ordered, run.samples)
        depth = (
            ordered["index"] / max(len(ordered) - 1, 1)
        ).to_numpy()  # colour by position in the model
        hover = []
        for r, (_, e) in zip(ordered.itertuples(), energy.iterrows(), strict=True):
            text = f"{r.task} (#{r.index})<br>{r.device}: {r.start - t0:.1f}–{r.end - t0:.1f} s<br>{r.seconds:.1f} s"
            if not math.isnan(e["energy_j"]):
                text += f"<br>energy {e['energy_j'] / 1e3:.2f} kJ"
                if not math.isnan(e["gpu_energy_j"]):
                    text += f" (GPU {e['gpu_energy_j'] / 1e3:.2f} + CPU share {e['cpu_energy_j'] / 1e3:.2f})"
            hover.append(text)
        fig.add_trace(
            go.Bar(
                y=ordered["device"],
                x=ordered["seconds"],
                base=ordered["start"] - t0,
                orientation="h",
                showlegend=False,
                name="tasks",
                marker={
                    "color": [_viridis(d) for d in depth],
                    "line": {"color": "white", "width": 1},
                },
                text=[f"{v:.0f}" for v in ordered["seconds"]],
                textposition="inside",
                insidetextanchor="middle",
                textfont={"color": ["white" if d < 0.6 else "#222" for d in depth]},
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
            title=f"Task allocation · {label_of.get(group_key(run.config), '')} · {_count(run.devices or 0, unit)}",
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
        else _notice("No usable run has tasks.csv.")
    )
    body += "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return _section("allocation", "Task allocation", intro, body)


def _prediction_section(
    b: _Builder, sweep: SweepData, runs: pd.DataFrame, style: dict[str, dict[str, Any]], unit: str
) -> str:
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
        return _section("prediction", "Predicted vs measured", intro, _notice("No usable run."))
    compared = usable.dropna(subset=["makespan_ratio"])
    if compared.empty:
        reason = _first_text(usable["plan_reason"]) or "no run has a predicted makespan"
        return _section(
            "prediction",
            "Predicted vs measured",
            intro,
            _notice(f"No prediction to compare: {reason}."),
        )
    order = {g: i for i, g in enumerate(dict.fromkeys(runs["group"]))}
    usable = usable.sort_values(
        ["group", "devices", "repeat"], key=lambda c: c.map(order) if c.name == "group" else c
    )
    figs = [
        b.div(_makespan_figure(compared, style, unit), 460),
        b.div(_ratio_figure(compared, style, unit), 460),
    ]
    figs += _load_figures(b, sweep, runs, devices, style, unit)
    table = _table(
        usable.assign(
            note=[r or n for r, n in zip(usable["plan_reason"], usable["plan_note"], strict=True)],
            mode=usable["fused"].map({True: "fused", False: "independent"}),
        ),
        [
            ("label", "group", str),
            ("devices", "n", _int),
            ("run", "run", str),
            ("cost_source", "costs from", str),
            ("mode", "mode", str),
            ("predicted_makespan_s", "predicted makespan (s)", _f1),
            ("measured_makespan_s", "measured makespan (s)", _f1),
            ("makespan_ratio", "measured / predicted", _ratio),
            ("plan_bound_s", "predicted bound (s)", _f1),
            ("moved_tasks", "tasks moved", _int),
            ("note", "note", str),
        ],
    )
    body = f"<div class='grid2'>{''.join(figs)}</div>" + table
    body += (
        "<p class='hint'>costs from: store (times measured by earlier runs on this hardware), timings-file, "
        "calibration (a few timed steps) or analytic (FLOPs at a nominal rate: right in shape, not in "
        "seconds). The predicted bound is max(Σ/n, longest task) on the predicted costs.</p>"
    )
    return _section("prediction", "Predicted vs measured", intro, body)


def _makespan_figure(
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


def _ratio_figure(compared: pd.DataFrame, style: dict[str, dict[str, Any]], unit: str) -> go.Figure:
    """Median measured / predicted makespan per group, cost source and device count, against 1."""
    # Runs planned on different cost sources (a sweep's first run finds no stored times) are not
    # medians of one another: each source gets its own line.
    several_sources = compared["cost_source"].nunique() > 1
    med = (
        compared.groupby(["group", "cost_source", "devices"], sort=False)
        .agg(ratio=("makespan_ratio", "median"), runs=("run", "size"))
        .reset_index()
    )
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


def _load_figures(
    b: _Builder,
    sweep: SweepData,
    runs: pd.DataFrame,
    devices: pd.DataFrame,
    style: dict[str, dict[str, Any]],
    unit: str,
) -> list[str]:
    """Per group's largest run: each device's predicted load next to its measured span."""
    picked = [r for r in _largest_runs(sweep, runs) if (devices["run"] == r.name).any()]
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
            f"{_num(r.predicted_load_s)} s · span {_num(r.measured_span_s)} s · busy {_num(r.measured_busy_s)} s"
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
                text=[_ratio(v) for v in d["span_ratio"]],
                textposition="outside",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"Predicted vs measured load · {s['label']} · {_count(run.devices or 0, unit)}",
            xaxis_title="device",
            yaxis_title="seconds (s)",
            barmode="group",
            bargap=0.3,
            yaxis={"range": [0, y_max]},
        )
        divs.append(b.div(fig, 400))
    return divs


def _ratio(v: Any) -> str:
    return "—" if _missing(v) else f"{float(v):.2f}×"


def _num(v: Any) -> str:
    return "—" if _missing(v) else f"{float(v):,.1f}"


def _timeline_section(
    b: _Builder, sweep: SweepData, runs: pd.DataFrame, label_of: dict[str, str]
) -> str:
    intro = (
        "Power and utilisation per device over each group's largest run, from the profiler's samples; "
        "the shaded band is the layer-task phase, time 0 the run's start (samples before it are the idle "
        "baseline)."
    )
    divs, notes = [], []
    for run in _largest_runs(sweep, runs):
        if run.samples is None or run.window is None:
            notes.append(f"{run.name}: not profiled (no samples.csv)")
            continue
        fig = _timeline_figure(run, label_of.get(group_key(run.config), ""))
        if fig is None:
            notes.append(f"{run.name}: samples hold no power or utilisation rows")
            continue
        divs.append(b.div(fig, 520 if len(fig.layout.annotations) > 1 else 340))
    body = f"<div class='grid2'>{''.join(divs)}</div>" if divs else ""
    if not divs:
        body += _notice("No run has power or utilisation samples.")
    body += "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return _section("timeline", "Power and utilisation over time", intro, body)


def _timeline_figure(run: Run, label: str) -> go.Figure | None:
    samples, (start, end) = run.samples, run.window
    power_lines = _power_lines(samples)
    util_lines = _util_lines(run)
    panels = [p for p in (("power (W)", power_lines), ("utilisation (%)", util_lines)) if p[1]]
    if not panels:
        return None
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=[title.split(" (")[0] for title, _ in panels],
    )
    colour_of = {"CPU packages": "#5f6368", "CPU (all)": "#5f6368"}
    for row, (title, lines) in enumerate(panels, start=1):
        for name, (ts, values) in lines.items():
            colour = colour_of.setdefault(
                name, DEVICE_COLOURS[(len(colour_of) - 2) % len(DEVICE_COLOURS)]
            )
            x, y = _downsample(ts - start, values)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in {t.name for t in fig.data},
                    line={"color": colour, "width": 1.8},
                    hovertemplate=f"{name}<br>%{{x:.0f}} s: %{{y:.1f}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(title_text=title, rangemode="tozero", row=row, col=1)
    if run.tasks is not None and not run.tasks.empty:
        fig.add_vrect(
            x0=run.tasks["start"].min() - start,
            x1=run.tasks["end"].max() - start,
            fillcolor="#4C78A8",
            opacity=0.07,
            line_width=0,
        )
    fig.update_xaxes(title_text="time since run start (s)", row=len(panels), col=1)
    fig.update_layout(title=f"{label} · run {run.name}", hovermode="x unified", margin={"t": 84})
    fig.add_vline(x=end - start, line={"color": "#9aa0a6", "dash": "dot", "width": 1})
    return fig


def _power_lines(samples: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CPU packages summed (one line), and each GPU."""
    power = samples[samples["metric"] == "power"]
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pkg = power[
        power["sensor"].isin(("msr", "powercap")) & power["device"].str.startswith("package")
    ]
    if not pkg.empty:
        best = "msr" if (pkg["sensor"] == "msr").any() else "powercap"
        summed = pkg[pkg["sensor"] == best].groupby("ts")["value"].sum()
        lines["CPU packages"] = (summed.index.to_numpy(), summed.to_numpy())
    for device, g in power[power["sensor"] == "nvml"].groupby("device"):
        lines[str(device)] = (g["ts"].to_numpy(), g["value"].to_numpy())
    return lines


def _util_lines(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The node's CPU, each CPU worker's core set, and each GPU."""
    samples = run.samples
    util = samples[samples["metric"] == "utilization"]
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cpu = util[(util["sensor"] == "procstat") & (util["device"] == "cpu")]
    if not cpu.empty:
        lines["CPU (all)"] = (cpu["ts"].to_numpy(), cpu["value"].to_numpy())
    workers = sorted(
        {str(d) for d in (run.tasks["device"] if run.tasks is not None else []) if cpu_set(str(d))},
        key=_device_order,
    )
    for worker in workers:
        rows = util[(util["sensor"] == "procstat") & util["device"].isin(cpu_set(worker))]
        if not rows.empty:
            mean = rows.groupby("ts")["value"].mean()
            lines[worker] = (mean.index.to_numpy(), mean.to_numpy())
    for device, g in util[util["sensor"] == "nvml"].groupby("device"):
        lines[str(device)] = (g["ts"].to_numpy(), g["value"].to_numpy())
    return lines


def _accuracy_section(runs: pd.DataFrame) -> str:
    intro = (
        "Top-1 accuracy of the teacher and of the assembled student, before and after fine-tuning "
        "(paper Table 7); parameters and FLOPs of both."
    )
    usable = runs[runs["usable"]].dropna(subset=["teacher_accuracy"], how="all")
    if usable.empty:
        return _section("accuracy", "Accuracy", intro, _notice("No usable run reports accuracy."))
    df = (
        usable.groupby(["label", "devices"], sort=False)
        .agg(
            repeats=("run", "size"),
            teacher_accuracy=("teacher_accuracy", "median"),
            before=("student_accuracy_before_finetune", "median"),
            student_accuracy=("student_accuracy", "median"),
            teacher_params=("teacher_params", "median"),
            student_params=("student_params", "median"),
            teacher_flops=("teacher_flops", "median"),
            student_flops=("student_flops", "median"),
        )
        .reset_index()
    )
    df["change"] = (df["student_accuracy"] - df["teacher_accuracy"]) * 100
    df["params_ratio"] = df["teacher_params"] / df["student_params"]
    df["flops_ratio"] = df["teacher_flops"] / df["student_flops"]
    pct = lambda v: f"{v:.2%}"  # noqa: E731
    table = _table(
        df,
        [
            ("label", "group", str),
            ("devices", "n", _int),
            ("repeats", "runs", _int),
            ("teacher_accuracy", "teacher top-1", pct),
            ("before", "student before fine-tune", pct),
            ("student_accuracy", "student top-1", pct),
            ("change", "change (points)", lambda v: f"{v:+.2f}"),
            ("teacher_params", "teacher params", _int),
            ("student_params", "student params", _int),
            ("params_ratio", "params ×", lambda v: f"{v:.1f}×"),
            ("flops_ratio", "FLOPs ×", lambda v: f"{v:.1f}×"),
        ],
    )
    return _section("accuracy", "Accuracy", intro, table)


def _machine_section(sweep: SweepData, runs: pd.DataFrame) -> str:
    intro = "The machine the runs measured, the sensors that produced samples, and those missing with the fix."
    profiled = [r for r in sweep.runs if r.profile is not None or r.samples is not None]
    if not profiled:
        return _section(
            "machine",
            "Machine and sensors",
            intro,
            _notice(
                "No run was profiled (no profile.json or samples.csv): energy, power and utilisation are unavailable."
            ),
        )
    machines: dict[str, dict[str, Any]] = {}
    for r in profiled:
        meta = dict((r.profile or {}).get("metadata") or {})
        host = str(meta.get("host") or r.meta.get("host") or "?")
        machines.setdefault(host, meta)
    rows = []
    for host, meta in machines.items():
        # The profiler writes gpu_models (names) and gpus (one dict per GPU); accept either.
        gpus = meta.get("gpu_models") or [
            g.get("name", "?") if isinstance(g, dict) else g for g in meta.get("gpus") or []
        ]
        gpu_text = (
            ", ".join(f"{n}× {m}" for m, n in pd.Series(gpus, dtype=object).value_counts().items())
            or "none"
        )
        driver = meta.get("gpu_driver") or meta.get("driver") or "—"
        rows.append(
            f"<tr><td>{html.escape(host)}</td><td>{html.escape(str(meta.get('cpu_model') or '?'))}</td>"
            f"<td>{html.escape(gpu_text)}</td><td>{html.escape(str(driver))}</td>"
            f"<td>{html.escape(str(meta.get('greenkd_version') or '—'))}</td></tr>"
        )
    body = (
        "<h3>Machine</h3><table class='tbl'><thead><tr><th>host</th><th>CPU</th><th>GPUs</th><th>driver</th>"
        f"<th>greenkd</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    sensors: dict[tuple[str, str], dict[str, Any]] = {}
    for r in profiled:
        if r.samples is not None:
            for (sensor, metric), g in r.samples.groupby(["sensor", "metric"]):
                entry = sensors.setdefault(
                    (str(sensor), str(metric)), {"devices": set(), "sources": set()}
                )
                entry["devices"].update(map(str, g["device"].unique()))
        for d in (r.profile or {}).get("domains") or []:
            entry = sensors.setdefault(
                (str(d.get("sensor")), "energy"), {"devices": set(), "sources": set()}
            )
            entry["sources"].add(str(d.get("source")))
    srows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{html.escape(m)}</td><td>{html.escape(_device_summary(v['devices']))}</td>"
        f"<td>{html.escape(', '.join(sorted(v['sources'])) or '—')}</td></tr>"
        for (s, m), v in sorted(sensors.items())
    )
    body += (
        "<h3>Sensors used</h3><table class='tbl'><thead><tr><th>sensor</th><th>metric</th><th>devices</th>"
        f"<th>energy from</th></tr></thead><tbody>{srows}</tbody></table>"
    )
    missing: dict[tuple[str, str], str] = {}
    for r in profiled:
        for m in (r.profile or {}).get("missing") or []:
            missing.setdefault(
                (str(m.get("sensor")), str(m.get("reason"))), str(m.get("fix") or "")
            )
    if missing:
        mrows = "".join(
            f"<tr><td>{html.escape(s)}</td><td>{html.escape(why)}</td><td>{html.escape(fix)}</td></tr>"
            for (s, why), fix in sorted(missing.items())
        )
        body += (
            "<h3>Sensors missing</h3><table class='tbl'><thead><tr><th>sensor</th><th>why</th><th>fix</th></tr>"
            f"</thead><tbody>{mrows}</tbody></table>"
        )
    else:
        body += "<p class='hint'>No sensor reported missing.</p>"
    unprofiled = [r.name for r in sweep.runs if r not in profiled and r.config]
    if unprofiled:
        body += f"<p class='note'>Not profiled: {html.escape(', '.join(unprofiled))}.</p>"
    return _section("machine", "Machine and sensors", intro, body)


def _runs_section(sweep: SweepData, runs: pd.DataFrame) -> str:
    intro = (
        "Every run in the sweep. Runs that are partial or failed are left out of every figure and table "
        "above, for the reason given."
    )
    df = runs.copy()
    df["why"] = [
        (r or "") + ("; " if r and n else "") + (n or "")
        for r, n in zip(df["reason"], df["notes"], strict=True)
    ]
    table = _table(
        df,
        [
            ("run", "run", str),
            ("status", "status", str),
            ("label", "group", str),
            ("devices", "n", _int),
            ("repeat", "repeat", _int),
            ("backend", "backend", str),
            ("wall_s", "wall (s)", _f1),
            ("energy_node_j", "energy (kJ)", lambda v: f"{v / 1e3:,.2f}"),
            ("avg_power_w", "power (W)", _f1),
            ("why", "left out because / notes", str),
        ],
        row_class=lambda row: "" if row["usable"] else "skipped",
    )
    return _section("runs", "Runs", intro, table)


# ----------------------------------------------------------------------------- helpers


def _styles(usable: pd.DataFrame) -> dict[str, dict[str, Any]]:
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


def _display_label(label: str, sched: str) -> str:
    """'rr · autotune' -> 'round robin · autotune'."""
    head, sep, rest = str(label).partition(" · ")
    return SCHED_NAMES.get(head, head) + sep + rest if head == sched else str(label)


def _count(n: int, unit: str) -> str:
    """'1 GPU', '4 GPUs', '2 CPU workers'."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def _largest_runs(sweep: SweepData, runs: pd.DataFrame) -> list[Run]:
    """Per group, the usable run with the most devices (its first repeat)."""
    by_name = {r.name: r for r in sweep.runs}
    usable = runs[runs["usable"]].sort_values(["devices", "repeat"], ascending=[False, True])
    # Groups in the sweep's own order (e.g. --sched rr,binpack puts round robin first, as in Fig. 6c/d).
    order = {g: i for i, g in enumerate(dict.fromkeys(runs["group"]))}
    picked = usable.drop_duplicates("group").sort_values("group", key=lambda col: col.map(order))
    return [by_name[name] for name in picked["run"]]


def _device_kind(runs: pd.DataFrame) -> str:
    kinds = {k for k in runs["device_kind"] if k}
    return kinds.pop() if len(kinds) == 1 else ""


def _device_order(device: str) -> tuple[str, int]:
    digits = "".join(ch for ch in device.split("-")[0] if ch.isdigit())
    return (device.rstrip("0123456789"), int(digits) if digits else 0)


def _device_summary(devices: set[str]) -> str:
    """'cpu, cpu0–cpu31' rather than 33 names."""
    groups: dict[str, list[int]] = {}
    plain = []
    for d in devices:
        stem = d.rstrip("0123456789")
        if stem != d:
            groups.setdefault(stem, []).append(int(d[len(stem) :]))
        else:
            plain.append(d)
    parts = sorted(plain)
    for stem, nums in sorted(groups.items()):
        nums.sort()
        parts.append(f"{stem}{nums[0]}" if len(nums) == 1 else f"{stem}{nums[0]}–{stem}{nums[-1]}")
    return ", ".join(parts)


def _downsample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: bin means, so a 3-hour run at 1 Hz stays light."""
    if len(x) <= MAX_POINTS:
        return x, y
    bins = np.array_split(np.arange(len(x)), MAX_POINTS)
    return np.array([x[b].mean() for b in bins]), np.array([y[b].mean() for b in bins])


def _viridis(t: float) -> str:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [min(max(t, 0.0), 1.0) * 0.9])[0]


_WRAPPED = {"note", "why", "reason", "notes"}  # long free text; every other cell stays on one line


def _table(df: pd.DataFrame, columns: list[tuple[Any, str, Any]], row_class: Any = None) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for key, _, fmt in columns:
            if isinstance(key, tuple):
                text, numeric = fmt(row[key[0]], row[key[1]]), True
            else:
                value = row.get(key)
                numeric = fmt is not str
                text = "—" if _missing(value) else fmt(value)
            cls = "num" if numeric else "wrap" if key in _WRAPPED else "text"
            cells.append(f"<td class='{cls}'>{html.escape(text)}</td>")
        cls = row_class(row) if row_class else ""
        body.append(
            f"<tr class='{cls}'>{''.join(cells)}</tr>" if cls else f"<tr>{''.join(cells)}</tr>"
        )
    return f"<div class='scroll'><table class='tbl'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value


def _int(v: Any) -> str:
    return f"{int(v):,}"


def _f1(v: Any) -> str:
    return f"{float(v):,.1f}"


def _f2(v: Any) -> str:
    return f"{float(v):.2f}"


def _range1(lo: Any, hi: Any) -> str:
    return "—" if _missing(lo) or lo == hi else f"{lo:,.1f}–{hi:,.1f}"


def _range_kj(lo: Any, hi: Any) -> str:
    return "—" if _missing(lo) or lo == hi else f"{lo / 1e3:,.2f}–{hi / 1e3:,.2f}"


def _first_text(values: Any) -> str:
    return next((str(v) for v in values if isinstance(v, str) and v), "")


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or not math.isfinite(ts):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _card(title: str, value: str, detail: str) -> str:
    return (
        f"<div class='card'><div class='k'>{html.escape(title)}</div><div class='v'>{html.escape(value)}</div>"
        f"<div class='d'>{html.escape(detail)}</div></div>"
    )


def _notice(text: str) -> str:
    return f"<p class='notice'>{html.escape(text)}</p>"


def _section(sid: str, title: str, intro: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{html.escape(title)}</h2><p class='intro'>{intro}</p>{body}</section>"


def _safe_name(name: str) -> str:
    """A sweep name as one path component."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return cleaned or "sweep"


_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#f6f8fa; --accent:#4C78A8; }
* { box-sizing: border-box; }
body { margin:0; font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color:var(--fg);
       background:var(--bg); line-height:1.45; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 24px; display:flex; gap:18px; flex-wrap:wrap; font-size:14px; }
nav a { color:var(--muted); text-decoration:none; } nav a:hover { color:var(--accent); }
header, section { max-width:1280px; margin:20px auto; padding:20px 28px; background:#fff;
      border:1px solid var(--line); border-radius:10px; }
h1 { margin:0 0 4px; font-size:26px; } h2 { margin:0 0 6px; font-size:20px; } h3 { font-size:15px; margin:18px 0 6px; }
code { background:var(--bg); padding:1px 6px; border-radius:4px; }
.sub, .intro, .hint { color:var(--muted); font-size:14px; margin:4px 0 12px; }
.note { color:#8a6d00; font-size:13px; margin:4px 0; }
.notice { background:#fff8e1; border:1px solid #f0d78c; border-radius:8px; padding:10px 14px; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap:12px; margin-top:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:26px; font-weight:600; margin:2px 0; } .card .d { color:var(--muted); font-size:13px; }
.grid2 { display:grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap:12px; }
@media (max-width: 1100px) { .grid2 { grid-template-columns: minmax(0, 1fr); } }
.fig { min-width:0; border:1px solid #eef1f4; border-radius:8px; padding:4px; }
.scroll { overflow-x:auto; }
.tbl { border-collapse:collapse; font-size:13px; margin:10px 0; width:100%; }
.tbl th { text-align:left; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line);
          padding:6px 8px; white-space:nowrap; }
.tbl td { border-bottom:1px solid #eef1f4; padding:5px 8px; vertical-align:top; }
.tbl td { white-space:nowrap; } .tbl td.wrap { white-space:normal; min-width:220px; }
.tbl td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
.tbl tbody tr:nth-child(even) { background:#fafbfc; }
.tbl tr.skipped td { color:#8c959f; }
footer { max-width:1280px; margin:0 auto 30px; color:var(--muted); font-size:12px; padding:0 28px; }
"""


# Each plot is drawn while the page is still parsing, before the grid has its final columns:
# resize every plot to its box once the page has loaded.
_RESIZE_JS = (
    "window.addEventListener('load', function () { if (window.Plotly) {"
    " document.querySelectorAll('.plotly-graph-div').forEach(function (d) { Plotly.Plots.resize(d); }); } });"
)


def _page(title: str, body: str) -> str:
    footer = f"<footer>greenkd {__version__} · written {_when(time.time())} · self-contained, opens offline</footer>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{body}{footer}"
        f"<script>{_RESIZE_JS}</script></body></html>"
    )

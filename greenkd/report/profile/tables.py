"""The profile page's tables: energy per domain, the marks, attribution, warnings, sensors, machine.

Everything shown comes from summary.json (or, for the marks' energy, from the samples through
`greenkd.analysis.profile`); a field the summary lacks is a dash, never a zero.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from greenkd.analysis.machine import gpu_models
from greenkd.analysis.profile import ProfileData, fields_text, span_energy
from greenkd.report.page import (
    data_table,
    estimate_badge,
    fmt_f1,
    is_missing,
    notice,
    section,
)

SOURCE_TEXT = {"counter": "counter", "integrated_power": "integrated power"}


def fmt_j(v: Any) -> str:
    """Joules with a thousands separator: '1,234.5'."""
    return f"{float(v):,.1f}"


def fmt_s(v: Any) -> str:
    return f"{float(v):,.2f}"


def yes_no(v: Any) -> str:
    return "yes" if v else "no"


def energy_text(joules: float | None) -> str:
    """'123.4 J' below 10 kJ, '12.35 kJ' below 10 MJ, else '12.35 MJ'."""
    if joules is None or not math.isfinite(joules):
        return "—"
    if abs(joules) >= 1e7:
        return f"{joules / 1e6:,.2f} MJ"
    if abs(joules) >= 1e4:
        return f"{joules / 1e3:,.2f} kJ"
    return f"{joules:,.1f} J"


def domain_name(d: dict[str, Any]) -> str:
    return f"{d.get('sensor')}:{d.get('device')}"


def energy_section(profile: ProfileData) -> str:
    """Energy per domain with its source and whether the node total adds it; the GPU view; carbon."""
    intro = (
        "Energy over the work (idle baseline excluded) per domain, from the cumulative rows: the "
        "sensor's own counter, or the integral of its power readings where it has none. The node "
        "total adds only domains that do not overlap: the CPU packages (powercap: psys, else "
        "packages + DRAM) and every GPU of the node, used or idle; cores and other sub-domains are "
        "inside their package and are shown, not added. Idle power is the baseline's; idle energy is "
        "that power over the work, dynamic energy the rest."
    )
    summary = profile.summary
    if summary is None:
        return section(
            "energy", "Energy by domain", intro, notice("No summary.json: no energy table.")
        )
    domains = [d for d in summary.get("domains") or [] if isinstance(d, dict)]
    if not domains:
        return section(
            "energy",
            "Energy by domain",
            intro,
            notice(
                "Energy not measured: no energy sensor could be read on this machine. The sensors "
                "missing and their fixes are under Sensors."
            )
            + estimate_table(summary),
        )
    rows = pd.DataFrame(
        [
            {
                "domain": domain_name(d),
                "source": SOURCE_TEXT.get(str(d.get("source")), str(d.get("source") or "")),
                "energy_j": d.get("energy_j"),
                "avg_power_w": d.get("avg_power_w"),
                "peak_power_w": d.get("peak_power_w"),
                "idle_power_w": d.get("idle_power_w"),
                "idle_energy_j": d.get("idle_energy_j"),
                "dynamic_energy_j": d.get("dynamic_energy_j"),
                "in_total": yes_no(d.get("in_total")),
                "used": (yes_no(d.get("used")) if d.get("sensor") == "nvml" else ""),
                "complete": yes_no(d.get("complete", True)),
                "resets": len(d.get("counter_resets") or []) or None,
            }
            for d in domains
        ]
    )
    columns = [
        ("domain", "domain", str),
        ("source", "energy from", str),
        ("energy_j", "energy (J)", fmt_j),
        ("avg_power_w", "avg power (W)", fmt_f1),
        ("peak_power_w", "peak power (W)", fmt_f1),
        ("idle_power_w", "idle power (W)", fmt_f1),
        ("idle_energy_j", "idle energy (J)", fmt_j),
        ("dynamic_energy_j", "dynamic energy (J)", fmt_j),
        ("in_total", "in node total", str),
        ("used", "GPU used", str),
        ("complete", "complete", str),
    ]
    if rows["resets"].notna().any():
        columns.append(("resets", "counter resets", lambda v: f"{int(v)}"))
    body = data_table(rows, columns)
    total = summary.get("total") or {}
    parts = total.get("domains") or []
    if total.get("energy_j") is not None:
        idle = total.get("idle_energy_j")
        split = (
            f"; idle {energy_text(idle)}, dynamic {energy_text(total.get('dynamic_energy_j'))}"
            if idle is not None
            else ""
        )
        body += (
            f"<p><b>Node total: {html.escape(energy_text(total['energy_j']))}</b>{html.escape(split)} "
            f"= {html.escape(' + '.join(parts))}.</p>"
        )
    else:
        body += "<p class='note'>No node total: no CPU package or GPU domain was measured.</p>"
    body += _gpu_view(summary) + _carbon(summary) + estimate_table(summary)
    return section("energy", "Energy by domain", intro, body)


def estimate_table(summary: dict[str, Any]) -> str:
    """The power model's estimate (`--power-model`), badged, apart from every measured figure."""
    estimate = summary.get("estimate")
    if not isinstance(estimate, dict):
        return ""
    rows = pd.DataFrame(
        [
            {
                "domain": domain_name(d),
                "energy_j": d.get("energy_j"),
                "avg_power_w": d.get("avg_power_w"),
                "peak_power_w": d.get("peak_power_w"),
            }
            for d in estimate.get("domains") or []
            if isinstance(d, dict)
        ],
        columns=["domain", "energy_j", "avg_power_w", "peak_power_w"],
    )
    return (
        f"<div id='estimate'><h3>Estimated energy {estimate_badge()}</h3>"
        f"<p class='hint'>{html.escape(str(estimate.get('method') or 'power model'))}. "
        f"<b>Not measured</b>: never added to the node total or to any measured energy.</p>"
        + data_table(
            rows,
            [
                ("domain", "domain", str),
                ("energy_j", "estimated energy (J)", fmt_j),
                ("avg_power_w", "avg power (W)", fmt_f1),
                ("peak_power_w", "peak power (W)", fmt_f1),
            ],
        )
        + f"<p>Estimated total: {html.escape(energy_text(estimate.get('energy_j')))} "
        f"{estimate_badge()}</p></div>"
    )


def _gpu_view(summary: dict[str, Any]) -> str:
    gpus = summary.get("gpus") or {}
    if gpus.get("node_energy_j") is None:
        return ""
    selected = gpus.get("selected")
    used = "every GPU" if selected is None else ", ".join(f"gpu{i}" for i in selected) or "no GPU"
    text = (
        f"GPUs the command uses ({used}): {energy_text(gpus.get('used_energy_j'))} of the "
        f"{energy_text(gpus.get('node_energy_j'))} all the node's GPUs drew."
    )
    if gpus.get("unmeasured"):
        text += f" Not measured: {', '.join(gpus['unmeasured'])} (see Sensors)."
    return f"<p>{html.escape(text)}</p>"


def _carbon(summary: dict[str, Any]) -> str:
    carbon = summary.get("carbon")
    if not carbon:
        return ""
    grams = carbon.get("g_co2e")
    value = "no estimate" if grams is None else f"{grams:.3g} gCO2e"
    return (
        f"<p>Carbon: <b>{html.escape(value)}</b> at {carbon.get('intensity_g_per_kwh')} gCO2e/kWh "
        f"({html.escape(str(carbon.get('note') or ''))}).</p>"
    )


def marks_section(profile: ProfileData, spans: pd.DataFrame) -> str:
    """Every mark: intervals with their duration and the node's energy over them, and points."""
    intro = (
        "From marks.csv (<code>Profiler.mark(label, **fields)</code>): a mark <code>X</code> followed "
        "by <code>X_end</code> (or <code>X_start</code>/<code>X_begin</code> followed by "
        "<code>X_end</code>/<code>X_stop</code>) is an interval; any other mark is a point in time. "
        "An interval's energy is the node total's between its two times, read from the cumulative "
        "rows."
    )
    if spans.empty:
        return section(
            "marks",
            "Marks",
            intro,
            "<p class='hint'>No marks. A command run by <code>greenkd profile</code> has none; in "
            'Python, <code>p.mark("epoch", n=1)</code> … <code>p.mark("epoch_end")</code> '
            "draws an interval.</p>",
        )
    origin = profile.origin_ts or 0.0
    table = span_energy(profile, spans)
    table = table.assign(
        start_s=table["start_ts"] - origin,
        end_s=table["end_ts"] - origin,
        fields_text=[fields_text(f) for f in table["fields"]],
    )
    body = data_table(
        table,
        [
            ("label", "mark", str),
            ("start_s", "start (s)", fmt_s),
            ("end_s", "end (s)", fmt_s),
            ("seconds", "duration (s)", fmt_s),
            ("energy_j", "node energy (J)", fmt_j),
            ("avg_power_w", "avg node power (W)", fmt_f1),
            ("fields_text", "fields", str),
        ],
    )
    return section("marks", "Marks", intro, body)


def attribution_section(profile: ProfileData) -> str:
    """The summary's `attribution` where the profiler wrote one (else nothing): the energy it
    attributes to the work against the node's, its rule, its tables and its notes, as written."""
    summary = profile.summary or {}
    attribution = summary.get("attribution")
    if attribution in (None, {}, []):
        return ""
    intro = (
        "How much of the node's energy the profiler attributes to the work itself, as summary.json's "
        "<code>attribution</code> has it: an estimate, not a measurement."
    )
    if not isinstance(attribution, dict):
        return section("attribution", "Attribution", intro, value_html(attribution))
    body = ""
    attributed = attribution.get("attributed_total_j")
    if isinstance(attributed, int | float) and not isinstance(attributed, bool):
        node = (summary.get("total") or {}).get("energy_j")
        of_node = f" of the node's {energy_text(node)}" if node is not None else ""
        body += f"<p><b>Attributed to the work: {html.escape(energy_text(attributed) + of_node)}</b>.</p>"
    text, kv, tables, lists = [], [], [], []  # shown in this order: rule, numbers, tables, notes
    for key, value in attribution.items():
        if key == "attributed_total_j":
            continue
        if isinstance(value, str) and len(value) > 80:
            text.append(f"<p class='hint'>{html.escape(value)}</p>")
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            items = "".join(f"<li>{html.escape(v)}</li>" for v in value)
            lists.append(f"<h3>{html.escape(key)}</h3><ul class='hint'>{items}</ul>")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append(f"<h3>{html.escape(key)}</h3>{value_html(value)}")
        else:
            shown = (
                f"{value:.1%}"
                if key.endswith("_share") and isinstance(value, float)
                else ", ".join(f"{k} {scalar_text(v)}" for k, v in value.items())
                if isinstance(value, dict)
                and not any(isinstance(v, dict | list) for v in value.values())
                else scalar_text(value)
                if not isinstance(value, dict | list)
                else None
            )
            cell = (
                f"<td class='wrap'>{html.escape(shown or '—')}</td>"
                if shown is not None or not value
                else _cell(value, 0)
            )
            kv.append((key, cell))
    body += "".join(text) + (key_value_table(kv) if kv else "") + "".join(tables + lists)
    return section("attribution", "Attribution", intro, body)


def value_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: a list of objects is a table, an object a key/value table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
        rows = "".join(
            "<tr>" + "".join(_cell(v.get(k), depth) for k in keys) + "</tr>" for v in value
        )
        return f"<div class='scroll'><table class='tbl'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    if isinstance(value, dict):
        return key_value_table([(str(k), _cell(v, depth)) for k, v in value.items()])
    if isinstance(value, list):
        return html.escape(", ".join(scalar_text(v) for v in value))
    return html.escape(scalar_text(value))


def key_value_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table: the key (muted) and a ready-made <td> for its value."""
    body = "".join(
        f"<tr><td class='text' style='color:var(--muted)'>{html.escape(k)}</td>{cell}</tr>"
        for k, cell in rows
    )
    return (
        "<div class='scroll'><table class='tbl'><colgroup><col style='width:14em'><col></colgroup>"
        f"<tbody>{body}</tbody></table></div>"
    )


def _cell(value: Any, depth: int) -> str:
    if isinstance(value, dict | list) and depth < 2:
        return f"<td class='wrap'>{value_html(value, depth + 1)}</td>"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    text = scalar_text(value) if not isinstance(value, dict | list) else str(value)
    return f"<td class='{'num' if numeric else 'text'}'>{html.escape(text)}</td>"


def scalar_text(value: Any) -> str:
    """Numbers to 4 significant digits (1 decimal from 1,000), null as a dash."""
    if is_missing(value):
        return "—"
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def warnings_section(profile: ProfileData) -> str:
    """The summary's warnings and the GPU processes that were not the work's."""
    intro = "What to know before trusting the figures: counter resets, GPUs shared with other processes, how the GPUs were chosen."
    summary = profile.summary or {}
    warnings = [str(w) for w in summary.get("warnings") or []]
    body = ""
    if warnings:
        body += "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>"
    foreign = [p for p in summary.get("gpu_foreign_processes") or [] if isinstance(p, dict)]
    if foreign:
        origin = profile.origin_ts or 0.0
        table = pd.DataFrame(foreign)
        table = table.assign(
            first_s=pd.to_numeric(table.get("first_ts"), errors="coerce") - origin,
            last_s=pd.to_numeric(table.get("last_ts"), errors="coerce") - origin,
            used_text=[yes_no(u) for u in table.get("used", [True] * len(table))],
        )
        body += "<h3>GPU processes not started by the work</h3>" + data_table(
            table,
            [
                ("gpu", "GPU", str),
                ("pid", "pid", lambda v: str(int(v))),
                ("first_s", "first seen (s)", fmt_s),
                ("last_s", "last seen (s)", fmt_s),
                ("samples", "samples", lambda v: str(int(v))),
                ("used_memory_mib", "peak memory (MiB)", fmt_f1),
                ("used_text", "on a GPU the work uses", str),
            ],
        )
    if not body:
        body = "<p class='hint'>No warnings.</p>"
    return section("warnings", "Warnings", intro, body)


def sensors_section(profile: ProfileData) -> str:
    """Each sensor's state, and the sensors missing with the fix."""
    intro = "The sensors greenkd tried (as <code>greenkd sensors</code> lists them), and for each one or part that could not be read, why and the fix."
    summary = profile.summary or {}
    sensors = [s for s in summary.get("sensors") or [] if isinstance(s, dict)]
    body = ""
    if sensors:
        rows = "".join(
            f"<tr><td>{html.escape(str(s.get('sensor')))}</td>"
            f"<td>{'available' if s.get('available') else ('not used' if s.get('reason') is None else 'unavailable')}</td>"
            f"<td class='wrap'>{html.escape(str(s.get('detail') or s.get('reason') or ''))}</td></tr>"
            for s in sensors
        )
        body += (
            "<table class='tbl'><thead><tr><th>sensor</th><th>state</th><th>detail</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    missing = [m for m in summary.get("missing") or [] if isinstance(m, dict)]
    if missing:
        rows = "".join(
            f"<tr><td>{html.escape(str(m.get('sensor')))}</td><td class='wrap'>{html.escape(str(m.get('reason')))}</td>"
            f"<td class='wrap'>{html.escape(str(m.get('fix') or ''))}</td></tr>"
            for m in missing
        )
        body += (
            "<h3>Missing, with the fix</h3><table class='tbl'><thead><tr><th>sensor</th><th>why</th>"
            f"<th>fix</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    elif sensors:
        body += "<p class='hint'>No sensor reported missing.</p>"
    if not body:
        body = notice("No summary.json: the sensors are unknown.")
    return section("sensors", "Sensors", intro, body)


def machine_section(profile: ProfileData) -> str:
    """Where it ran, and how well the sampler kept its schedule."""
    intro = "The machine from summary.json's metadata, and the sampler's lateness against its schedule (t0 + k/hz)."
    summary = profile.summary or {}
    meta = summary.get("metadata") or {}
    gpus = ", ".join(f"{n}× {model}" for model, n in gpu_models(meta))
    facts = [
        ("host", meta.get("host")),
        ("CPU", f"{meta.get('cpu_model') or '?'} ({meta.get('cpu_count') or '?'} CPUs)"),
        ("GPUs", gpus or "none"),
        ("GPU driver", meta.get("gpu_driver")),
        ("kernel", meta.get("kernel")),
        ("Python", meta.get("python")),
        ("greenkd", meta.get("greenkd_version")),
    ]
    slurm = meta.get("slurm") or {}
    if slurm.get("SLURM_JOB_ID"):
        facts.append(("Slurm job", slurm["SLURM_JOB_ID"]))
    sampling = summary.get("sampling") or {}
    if sampling:
        facts += [
            ("sampling", f"{summary.get('hz', '?')} Hz, {summary.get('samples', '?')} samples"),
            (
                "lateness p50 / p99 / max",
                " / ".join(
                    "—" if sampling.get(k) is None else f"{sampling[k]:.1f} ms"
                    for k in ("jitter_p50_ms", "jitter_p99_ms", "jitter_max_ms")
                ),
            ),
            ("missed ticks", sampling.get("missed_ticks")),
            (
                "sampler CPU time",
                None
                if sampling.get("sampler_cpu_s") is None
                else f"{sampling['sampler_cpu_s']:.2f} s",
            ),
        ]
    body = key_value_table(
        [(k, f"<td class='wrap'>{html.escape(scalar_text(v))}</td>") for k, v in facts]
    )
    body += f"<p class='hint'>Files: {html.escape(str(profile.path.resolve()))}</p>"
    return section("machine", "Machine and sampling", intro, body)

"""The profile page's header: the command, its exit code and status, and the headline numbers."""

from __future__ import annotations

import html
import shlex

from greenkd.analysis.profile import ProfileData
from greenkd.report.page import card, notice, when
from greenkd.report.profile.tables import energy_text
from greenkd.rundir.read import finite


def render(profile: ProfileData) -> str:
    """Title, command and status, cards (node energy, power, duration, utilisation, carbon), notes."""
    s = profile.summary or {}
    duration = s.get("duration_s") if finite(s.get("duration_s")) else None
    sub = " · ".join(
        x
        for x in (
            f"started {when(s.get('start_ts'))}" if finite(s.get("start_ts")) else "",
            f"{duration:,.2f} s of work" if duration is not None else "",
            f"at {s['hz']:g} Hz, {s.get('samples', '?')} samples" if finite(s.get("hz")) else "",
            f"idle baseline {s['idle']['seconds']:.1f} s"
            if finite((s.get("idle") or {}).get("seconds")) and s["idle"]["seconds"] > 0
            else "",
            f"host {(s.get('metadata') or {}).get('host')}"
            if (s.get("metadata") or {}).get("host")
            else "",
        )
        if x
    )
    status = profile.status
    command = s.get("command")
    lines = []
    if isinstance(command, list):
        code = s.get("exit_code")
        text = html.escape(shlex.join(map(str, command)))
        shown = (
            f"<pre style='background:var(--bg);padding:8px 12px;border-radius:6px;"
            f"white-space:pre-wrap;margin:4px 0'>{text}</pre>"
            if "\n" in text
            else f"<code>{text}</code> · "
        )
        lines.append(
            f"<div style='margin:8px 0'>Command {shown}exit code <b>{html.escape(str(code))}</b> · "
            f"status <b>{html.escape(status)}</b></div>"
        )
    else:
        lines.append(f"<p>A profiled Python block · status <b>{html.escape(status)}</b></p>")
    if status != "complete":
        reason = s.get("reason") or "the profiler did not write its summary (killed?)"
        lines.append(notice(f"{status.capitalize()}: {reason}. Every sample taken is drawn."))
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in profile.notes)
    return (
        f"<header><h1>Profile <code>{html.escape(profile.name)}</code></h1>"
        f"<p class='sub'>{html.escape(sub)}</p>{''.join(lines)}"
        f"<div class='cards'>{''.join(cards(profile, duration))}</div>{notes}</header>"
    )


def cards(profile: ProfileData, duration: float | None) -> list[str]:
    """The headline numbers: node energy and power (or why not measured), duration, utilisation."""
    s = profile.summary or {}
    total = s.get("total") or {}
    energy = total.get("energy_j")
    out = []
    if finite(energy):
        out.append(
            card(
                "node energy",
                energy_text(energy),
                f"over the work: {' + '.join(total.get('domains') or [])}",
            )
        )
        parts = [d for d in s.get("domains") or [] if isinstance(d, dict) and d.get("in_total")]
        idle = [d.get("idle_power_w") for d in parts]
        if duration:
            detail = (
                f"idle {sum(idle):,.1f} W from the baseline"
                if idle and all(finite(w) for w in idle)
                else "no idle baseline (--idle-seconds)"
            )
            out.append(card("average node power", f"{energy / duration:,.1f} W", detail))
    else:
        out.append(
            card(
                "node energy",
                "not measured",
                "no energy sensor could be read here; the fix is under Sensors",
            )
        )
    if duration is not None:
        exit_code = s.get("exit_code")
        detail = f"status {profile.status}" + (
            f", exit code {exit_code}" if exit_code is not None else ""
        )
        out.append(card("duration", f"{duration:,.2f} s", detail))
    util = {
        (u.get("sensor"), u.get("device")): u.get("avg_pct")
        for u in s.get("utilization") or []
        if isinstance(u, dict)
    }
    gpus = ", ".join(
        f"{device} {pct:.0f}%"
        for (sensor, device), pct in util.items()
        if sensor == "nvml" and finite(pct)
    )
    cpu = util.get(("procstat", "cpu"))
    if finite(cpu):
        out.append(
            card(
                "CPU utilisation",
                f"{cpu:.1f} %",
                "every CPU of the node, time-weighted" + (f"; GPUs: {gpus}" if gpus else ""),
            )
        )
    elif gpus:
        out.append(card("GPU utilisation", gpus, "time-weighted over the work"))
    estimate = s.get("estimate") or {}
    if finite(estimate.get("energy_j")):
        out.append(
            card(
                "energy (estimate)",
                f"{energy_text(estimate['energy_j'])} estimate",
                f"power model {estimate.get('model')}, not measured",
            )
        )
    carbon = s.get("carbon") or {}
    if finite(carbon.get("g_co2e")):
        out.append(
            card(
                "carbon (estimate)",
                f"{carbon['g_co2e']:.3g} gCO2e",
                f"node energy × {carbon.get('intensity_g_per_kwh')} gCO2e/kWh",
            )
        )
    return out

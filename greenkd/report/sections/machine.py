"""The machines the runs measured, the sensors used and those missing with their fix."""

from __future__ import annotations

import html

from greenkd.analysis import gpu_models, machines, profiled_runs, sensors_missing, sensors_used
from greenkd.report.page import device_summary, notice, section
from greenkd.report.sections.context import Context


def render(ctx: Context) -> str:
    """Machine, sensors used and sensors missing tables."""
    sweep = ctx.sweep
    intro = "The machine the runs measured, the sensors that produced samples, and those missing with the fix."
    profiled = profiled_runs(sweep)
    if not profiled:
        return section(
            "machine",
            "Machine and sensors",
            intro,
            notice(
                "No run was profiled (no profile.json or samples.csv): energy, power and utilisation are unavailable."
            ),
        )
    rows = []
    for host, meta in machines(profiled).items():
        gpu_text = ", ".join(f"{n}× {m}" for m, n in gpu_models(meta)) or "none"
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
    srows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{html.escape(m)}</td><td>{html.escape(device_summary(v['devices']))}</td>"
        f"<td>{html.escape(', '.join(sorted(v['sources'])) or '—')}</td></tr>"
        for (s, m), v in sorted(sensors_used(profiled).items())
    )
    body += (
        "<h3>Sensors used</h3><table class='tbl'><thead><tr><th>sensor</th><th>metric</th><th>devices</th>"
        f"<th>energy from</th></tr></thead><tbody>{srows}</tbody></table>"
    )
    missing = sensors_missing(profiled)
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
    measured = {r.name for r in profiled}
    unprofiled = [r.name for r in sweep.runs if r.name not in measured and r.config]
    if unprofiled:
        body += f"<p class='note'>Not profiled: {html.escape(', '.join(unprofiled))}.</p>"
    return section("machine", "Machine and sensors", intro, body)

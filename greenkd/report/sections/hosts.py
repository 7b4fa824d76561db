"""Runs across several hosts: each host's power and utilisation over time, its energy, and the
hosts that went silent (greenkd.analysis.hosts). Absent from a sweep whose runs each ran on one host."""

from __future__ import annotations

import dataclasses
import html
import math

import pandas as pd

from greenkd.analysis import group_key
from greenkd.analysis.hosts import host_origin, run_energy_across_hosts, run_hosts, silent_text
from greenkd.report.page import data_table, fmt_f1, fmt_int, notice, section
from greenkd.report.sections.context import Context
from greenkd.report.sections.timeline import timeline_figure


def hosts_column(scaling: pd.DataFrame) -> list:
    """The scaling and energy tables' host count column, where a run spread over several hosts."""
    if "hosts" in scaling.columns and (scaling["hosts"] > 1).any():
        return [("hosts", "hosts", fmt_int)]
    return []


def render(ctx: Context) -> str:
    """Per run across hosts: a table of its hosts and one power/utilisation figure per host."""
    multi = [(run, run_hosts(run)) for run in ctx.sweep.runs]
    multi = [(run, hosts) for run, hosts in multi if hosts is not None]
    if not multi:
        return ""  # every run on one host: the page is as it was
    intro = (
        "Runs across several hosts: each host's power and utilisation over time from its own 1 Hz "
        "sampler (RUN/hosts/&lt;host&gt;/samples.csv, on the first host's clock), time 0 the run's "
        "start, the shaded band the host's tasks. A run's node energy adds each host once: the "
        "host the run's own profiler sampled over the whole run, every other host over the task "
        "phase its sampler covered. A host that went silent is named with the time its samples "
        "stop; its energy counts up to then and the run's energy is partial (left out of greenup)."
    )
    body = ""
    for run, hosts in multi:
        origin = host_origin(run, hosts)
        energy = run_energy_across_hosts(run)
        label = ctx.label_of.get(group_key(run.config), "") if run.config else ""
        status = energy["energy_status"] or "not measured"
        body += f"<h3>Run {html.escape(run.name)} · {html.escape(label)}</h3>"
        if hosts.silent:
            body += notice(
                f"Energy partial: {silent_text(hosts, origin)}. "
                + " ".join(f"{h.host}: {h.reason}." for h in hosts.silent if h.reason)
            )
        rows = pd.DataFrame(
            [
                {
                    "host": h.host + (" (run's own host)" if h.first else ""),
                    "status": h.status,
                    "stopped": h.stopped_ts - origin if h.stopped_ts is not None else math.nan,
                    "energy_kj": energy["energy_by_host"].get(h.host, math.nan) / 1e3,
                    "counted": "whole run (samples.csv)"
                    if h.first
                    else "task phase (its sampler)"
                    if h.host in energy["energy_by_host"]
                    else "not counted",
                }
                for h in hosts.hosts
            ]
        )
        body += data_table(
            rows,
            [
                ("host", "host", str),
                ("status", "samples", str),
                ("stopped", "silent from (s)", fmt_f1),
                ("energy_kj", "node energy counted (kJ)", lambda v: f"{v:,.2f}"),
                ("counted", "over", str),
            ],
        )
        body += f"<p class='hint'>Run energy: {html.escape(status)}. {html.escape(energy['energy_note'])}</p>"
        divs = []
        for view in hosts.hosts:
            if view.samples is None:
                body += f"<p class='note'>{html.escape(view.host)}: no samples.csv</p>"
                continue
            tasks = run.tasks
            if tasks is not None and "host" in tasks.columns:
                tasks = tasks[tasks["host"].astype(str) == view.host]
            one = dataclasses.replace(run, samples=view.samples, tasks=tasks)
            fig = timeline_figure(one, "")
            if fig is None:
                body += (
                    f"<p class='note'>{html.escape(view.host)}: no power or utilisation rows</p>"
                )
                continue
            title = f"host {view.host} · run {run.name}"
            if view.stopped_ts is not None:
                x = view.stopped_ts - origin
                title += f" · silent from {x:.0f} s"
                fig.add_vline(x=x, line={"color": "#d93025", "dash": "dash", "width": 1.5})
            fig.update_layout(title=title)
            divs.append(ctx.figures.div(fig, 520 if len(fig.layout.annotations) > 1 else 340))
        body += f"<div class='grid2'>{''.join(divs)}</div>"
    return section("hosts", "Hosts", intro, body)

"""A run across several hosts: its node energy summed over them, its tasks' energy by host and
device, each host's power and utilisation, and the hosts that went silent.

A multi-host run (summary.json `hosts`, written by `profilers.hosts.host_energy`) has two kinds of
samples: the run's own `samples.csv`, from the profiler wrapping the run on the host where the
run's process (MPI rank 0, the Dask client) ran, over the whole run; and `hosts/<host>/samples.csv`
from the one sampler of each host that ran tasks, over the task phase (the host-sampler window,
`window_start_ts` to `window_end_ts`, on the first host's clock).

**Node energy of a multi-host run** (the one definition; `energy_node_j` of the run table, the
greenup of the scaling table and the report all read it):

    E = E(first host, whole run, from samples.csv)
        + sum over every other host h of E(h, host-sampler window, from hosts/<h>/samples.csv)

- the first host is the one the run's own profiler sampled (profile.json `metadata.host`); it is
  counted once, by `run_energy`, exactly as a single-host run is. Its own `hosts/<first>/` folder
  (its host sampler, where it ran tasks too) covers part of the same time on the same node: it is
  drawn in the per-host figures, never added;
- each other host's energy is its node domains (`profilers.energy.node_domains`: its CPU packages
  once, its GPUs once) over the window its sampler covered; a host that went silent counts up to
  its last sample, and the run's energy is then `partial` (left out of greenup);
- a run without its own samples.csv (not profiled) has no E, as on one host: the hosts'
  task-phase sum (summary.json `hosts.node_energy_j`) is named in the note, never used as E;
- the other hosts are not sampled outside the task phase (set-up, assembly, fine-tuning run on the
  first host): their energy there is not in E, and the run's note says so.

Tasks' energy by host: each task's share (`task_energy`'s rule) of its own host's domains, from
that host's samples (the first host's from samples.csv, the others' from hosts/<h>/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from greenkd.analysis.energy import (
    GPU_SENSOR,
    cpu_sums,
    node_energy_domains,
    node_scope,
    physical_gpu,
    run_energy,
    task_energy,
    window_energy,
)
from greenkd.rundir.read import Run, finite, read_samples
from profilers.sensors.model import MODEL_SENSOR

ENERGY_PARTS = ("cpu_package_j", "cpu_cores_j", "cpu_node_j", "gpu_used_j", "gpu_node_j")


@dataclass
class HostView:
    """One host of a multi-host run as its own sampler recorded it."""

    host: str
    samples: pd.DataFrame | None  # hosts/<host>/samples.csv
    status: str  # complete | partial (it went silent)
    stopped_ts: float | None  # its last sample, where it went silent
    reason: str
    first: bool  # the host the run's own profiler sampled (counted from samples.csv)


@dataclass
class RunHosts:
    """The hosts of a multi-host run, read from summary.json `hosts` and RUN/hosts/."""

    window: tuple[float, float]  # the host samplers' window, on the first host's clock
    first: str | None  # the host the run's own profiler sampled; None: not profiled
    hosts: list[HostView]

    @property
    def silent(self) -> list[HostView]:
        return [h for h in self.hosts if h.status != "complete"]


def run_hosts(run: Run) -> RunHosts | None:
    """A multi-host run's hosts; None for a run on one host (no `hosts` in summary.json)."""
    block = (run.summary or {}).get("hosts")
    if not isinstance(block, dict):
        return None
    start, end = block.get("window_start_ts"), block.get("window_end_ts")
    if not (finite(start) and finite(end)):
        return None
    first = (
        ((run.profile or {}).get("metadata") or {}).get("host") if run.samples is not None else None
    )
    hosts = []
    for entry in block.get("hosts") or []:
        if not isinstance(entry, dict) or not entry.get("host"):
            continue
        notes: list[str] = []
        folder = run.path / str(entry.get("samples_dir") or f"hosts/{entry['host']}")
        samples = read_samples(folder / "samples.csv", notes)
        stopped = entry.get("stopped_ts")
        hosts.append(
            HostView(
                host=str(entry["host"]),
                samples=samples,
                status=str(entry.get("status") or "complete"),
                stopped_ts=float(stopped) if finite(stopped) else None,
                reason=str(entry.get("reason") or ""),
                first=str(entry["host"]) == first,
            )
        )
    return RunHosts((float(start), float(end)), str(first) if first else None, hosts)


def silent_text(hosts: RunHosts, origin_ts: float) -> str:
    """'node2 silent from 37.5 s', one per silent host (seconds since `origin_ts`)."""
    return "; ".join(
        f"{h.host} silent from "
        + (f"{h.stopped_ts - origin_ts:.1f} s" if h.stopped_ts is not None else "the start")
        for h in hosts.silent
    )


def _host_energy(view: HostView, window: tuple[float, float], tasks: pd.DataFrame | None) -> dict:
    """One host's energy by part over `window` (to its last sample if it went silent)."""
    out: dict[str, Any] = dict.fromkeys((*ENERGY_PARTS, "energy_node_j"), math.nan)
    out["scope"] = ""
    samples = view.samples
    if samples is None:
        return out
    start, end = window
    if view.stopped_ts is not None:
        end = min(end, view.stopped_ts)
    domains = window_energy(samples, start, end)
    domains = domains[(domains["sensor"] != MODEL_SENSOR) & domains["energy_j"].notna()]
    node = node_energy_domains(domains)
    if node.empty:
        return out
    gpus = node[node["sensor"] == GPU_SENSOR]
    out["energy_node_j"] = float(node["energy_j"].sum())
    out["scope"] = node_scope(node)
    out.update(cpu_sums(domains, node))
    if not gpus.empty:
        out["gpu_node_j"] = float(gpus["energy_j"].sum())
        used = _used_gpus(tasks, view.host)
        gpu_j = dict(zip(gpus["device"], gpus["energy_j"], strict=True))
        if used and all(d in gpu_j for d in used):
            out["gpu_used_j"] = float(sum(gpu_j[d] for d in used))
    return out


def _used_gpus(tasks: pd.DataFrame | None, host: str) -> list[str]:
    if tasks is None or "host" not in tasks.columns:
        return []
    on = tasks.loc[tasks["host"].astype(str) == host, "device"].astype(str)
    return sorted({physical_gpu(d) for d in on if d.startswith("gpu")})


def run_energy_across_hosts(run: Run) -> dict[str, Any]:
    """`run_energy`, with every host of a multi-host run added by the definition above.

    Adds `n_hosts`, `energy_status` (complete | partial | "" where nothing was measured),
    `silent_hosts` (text) and `energy_by_host` ({host: joules counted}).
    """
    out = run_energy(run)
    hosts = run_hosts(run)
    out["n_hosts"] = len(hosts.hosts) if hosts else 1
    out["energy_status"] = "complete" if finite(out["energy_node_j"]) else ""
    out["silent_hosts"] = ""
    out["energy_by_host"] = {}
    if hosts is None:
        return out
    origin = run.window[0] if run.window else hosts.window[0]
    if hosts.silent:
        out["silent_hosts"] = silent_text(hosts, origin)
    if hosts.first is None or run.window is None or not finite(out["energy_node_j"]):
        measured = (run.summary or {}).get("hosts", {}).get("node_energy_j")
        task_phase = (
            f"; the hosts' task-phase energy is {measured / 1e3:,.2f} kJ (summary.json hosts), "
            "not the run's"
            if finite(measured)
            else ""
        )
        out["energy_node_j"] = math.nan
        out["energy_status"] = ""
        out["energy_note"] = (
            out["energy_note"] or "the run's own host was not profiled over the whole run"
        ) + task_phase
        return out
    # the first host's GPUs used: those its own tasks ran on (device labels repeat across hosts)
    used, gpu_j = _used_gpus(run.tasks, hosts.first), out["gpu_j"]
    out["gpu_used_j"] = (
        float(sum(gpu_j[d] for d in used)) if used and all(d in gpu_j for d in used) else math.nan
    )
    out["energy_by_host"] = {hosts.first: out["energy_node_j"]}
    scopes = {out["energy_scope"]}
    for view in hosts.hosts:
        if view.first:
            continue
        part = _host_energy(view, hosts.window, run.tasks)
        out["energy_by_host"][view.host] = part["energy_node_j"]
        if not finite(part["energy_node_j"]):
            out["energy_status"] = "partial"
            continue
        scopes.add(part["scope"])
        for key in (*ENERGY_PARTS, "energy_node_j"):
            if finite(part[key]):
                out[key] = part[key] + (out[key] if finite(out[key]) else 0.0)
    # each host's own node scope; hosts unlike each other are listed (greenup then needs alike)
    out["energy_scope"] = " / ".join(sorted(s for s in scopes if s))
    if hosts.silent:
        out["energy_status"] = "partial"
    others = [h.host for h in hosts.hosts if not h.first]
    seconds = hosts.window[1] - hosts.window[0]
    coverage = (
        f"{len(out['energy_by_host'])} hosts: {hosts.first} over the whole run, "
        f"{', '.join(others)} over the task phase their samplers covered ({seconds:.0f} s of "
        f"{run.wall_s:.0f} s)"
    )
    if out["energy_status"] == "partial":
        coverage += "; energy partial: " + (
            out["silent_hosts"] or "a host's samples hold no energy"
        )
    out["energy_note"] = "; ".join(n for n in (out["energy_note"], coverage) if n)
    return out


def task_energy_by_host(run: Run) -> pd.DataFrame:
    """`task_energy` with a `host` column, each task charged from its own host's samples.

    On one host it is `task_energy(run.tasks, run.samples)`. On several, the tasks of the first
    host are charged from samples.csv and those of every other host from hosts/<host>/, so a
    task on node2's gpu0 gets node2's gpu0 and a share of node2's packages, never node1's.
    """
    tasks = run.tasks
    if tasks is None:
        raise ValueError("the run has no tasks")
    hosts = run_hosts(run)
    host_of = (
        tasks["host"].astype(str)
        if "host" in tasks.columns
        else pd.Series("", index=tasks.index, dtype=str)
    )
    if hosts is None:
        return task_energy(tasks, run.samples).assign(host=host_of)
    streams = {h.host: h.samples for h in hosts.hosts}
    if hosts.first is not None:
        streams[hosts.first] = run.samples
    frames = [
        task_energy(tasks.loc[idx], streams.get(str(host))).assign(host=str(host))
        for host, idx in tasks.groupby(host_of, sort=False).groups.items()
    ]
    return pd.concat(frames).loc[tasks.index]


def host_of_devices(tasks: pd.DataFrame) -> pd.DataFrame:
    """tasks with `device` as host/device where they ran on several hosts (gpu0 on two hosts is
    two devices); unchanged on one host."""
    if "host" not in tasks.columns or tasks["host"].nunique() < 2:
        return tasks
    return tasks.assign(device=tasks["host"].astype(str) + "/" + tasks["device"].astype(str))


def host_origin(run: Run, hosts: RunHosts) -> float:
    """Time 0 of the per-host figures: the run's start, else the host window's."""
    return run.window[0] if run.window else hosts.window[0]


__all__ = [
    "HostView",
    "RunHosts",
    "host_of_devices",
    "host_origin",
    "run_energy_across_hosts",
    "run_hosts",
    "silent_text",
    "task_energy_by_host",
]

"""The machines a sweep measured and the sensors that produced samples, from profile.json and samples.csv."""

from __future__ import annotations

from typing import Any

import pandas as pd

from greenkd.rundir.read import Run, SweepData


def profiled_runs(sweep: SweepData) -> list[Run]:
    """The runs with a profile.json or a samples.csv."""
    return [r for r in sweep.runs if r.profile is not None or r.samples is not None]


def machines(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per host, the profiler's metadata of its first run (CPU and GPU models, driver, version)."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        meta = dict((r.profile or {}).get("metadata") or {})
        host = str(meta.get("host") or r.meta.get("host") or "?")
        out.setdefault(host, meta)
    return out


def gpu_models(meta: dict[str, Any]) -> list[tuple[str, int]]:
    """(model, count) of a machine's GPUs, most common first."""
    # The profiler writes gpu_models (names) and gpus (one dict per GPU); accept either.
    names = meta.get("gpu_models") or [
        g.get("name", "?") if isinstance(g, dict) else g for g in meta.get("gpus") or []
    ]
    return [(str(m), int(n)) for m, n in pd.Series(names, dtype=object).value_counts().items()]


def sensors_used(runs: list[Run]) -> dict[tuple[str, str], dict[str, set[str]]]:
    """Per (sensor, metric) in the samples: the devices seen, and for energy the profiler's sources."""
    sensors: dict[tuple[str, str], dict[str, set[str]]] = {}
    for r in runs:
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
    return sensors


def sensors_missing(runs: list[Run]) -> dict[tuple[str, str], str]:
    """(sensor, why) -> fix, for each sensor a run's profiler reported missing."""
    missing: dict[tuple[str, str], str] = {}
    for r in runs:
        for m in (r.profile or {}).get("missing") or []:
            missing.setdefault(
                (str(m.get("sensor")), str(m.get("reason"))), str(m.get("fix") or "")
            )
    return missing

"""One profile directory (`greenkd profile`'s or `profilers.Profiler`'s output) read for its page.

A profile directory holds samples.csv and summary.json (marks.csv beside them); a sweep's run
directory holds those files too, as samples.csv and profile.json beside its config.json, and is
not one. Everything here works from the files as they are: a summary missing (the profiler was
killed before writing it) or unreadable is a note, and the series come from the samples alone.

- Time is seconds since the work started (summary `start_ts`), so the idle baseline lies before 0.
- Cumulative energy is drawn from 0 at the work's start: a domain's value at the end is its
  `energy_j` in the summary (both read the same cumulative rows).
- Marks become spans: `X` followed by `X_end` (or `X_start`/`X_begin` followed by `X_end`/`X_stop`)
  is an interval; any other mark is a point in time.
- A span's energy is that of the node-total domains (`profilers.energy.node_domains`) between its
  two times, read from the cumulative rows like every other interval's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenkd.analysis.energy import EDGE_TOLERANCE_S, energy_series
from greenkd.analysis.timeline import Line
from greenkd.errors import GreenkdError
from greenkd.fileio import read_json
from greenkd.rundir.read import finite, read_samples
from profilers.energy import interpolate_energy_j, node_domains
from profilers.naming import device_sort_key
from profilers.sensors.model import MODEL_SENSOR

SUMMARY_FILE = "summary.json"
SAMPLES_FILE = "samples.csv"
MARKS_FILE = "marks.csv"
RUN_CONFIG_FILE = "config.json"  # what makes a directory a sweep's run rather than a profile
# Per-core and per-CPU rows (msr `core12`, procstat `cpu5`): one line each would bury the rest.
PER_CORE = re.compile(r"(core|cpu)\d+$")
START_SUFFIXES = ("_start", "_begin", "")
END_SUFFIXES = ("_end", "_stop")


@dataclass
class ProfileData:
    """A profile directory as it is on disk."""

    name: str
    path: Path
    summary: dict[str, Any] | None  # None: no readable summary.json (the profiler did not finish)
    samples: pd.DataFrame | None
    marks: pd.DataFrame  # ts, label, fields (a dict per mark)
    notes: list[str] = field(default_factory=list)

    @property
    def origin_ts(self) -> float | None:
        """Time 0 of the page: the work's start, else the first sample."""
        start = (self.summary or {}).get("start_ts")
        if finite(start):
            return float(start)
        if self.samples is not None and not self.samples.empty:
            return float(self.samples["ts"].min())
        return None

    @property
    def status(self) -> str:
        """The summary's status, or 'unfinished' without one."""
        return str((self.summary or {}).get("status") or "unfinished")


def is_profile_dir(path: Path) -> bool:
    """samples.csv with summary.json or marks.csv, and no config.json (a sweep's run has one)."""
    return (
        path.is_dir()
        and (path / SAMPLES_FILE).is_file()
        and ((path / SUMMARY_FILE).is_file() or (path / MARKS_FILE).is_file())
        and not (path / RUN_CONFIG_FILE).is_file()
    )


def find_profiles(path: str | Path) -> list[Path]:
    """The profile directories at `path`: itself if it is one, else its subdirectories that are."""
    root = Path(path)
    if not root.is_dir():
        return []
    if is_profile_dir(root):
        return [root]
    return sorted(p for p in root.iterdir() if is_profile_dir(p))


def load_profile(path: str | Path, summary_name: str = SUMMARY_FILE) -> ProfileData:
    """Read a profile directory; files missing or unreadable become notes."""
    root = Path(path)
    if not (root / SAMPLES_FILE).is_file() and not (root / summary_name).is_file():
        raise GreenkdError(
            f"{root} is not a profile directory: it has no {SAMPLES_FILE} or {summary_name} "
            "(give the --out directory of `greenkd profile`)"
        )
    notes: list[str] = []
    summary = read_json(root / summary_name)
    if summary is None:
        notes.append(
            f"no readable {summary_name}: the profiler did not finish (killed?); "
            "the page is drawn from the samples alone"
        )
    files = (summary or {}).get("files") or {}
    samples_name = str(files.get("samples") or SAMPLES_FILE)
    marks_name = str(files.get("marks") or MARKS_FILE)
    samples = read_samples(root / samples_name, notes)
    marks = read_marks(root / marks_name, notes)
    name = root.resolve().name or "profile"
    return ProfileData(name, root, summary, samples, marks, notes)


def read_marks(path: Path, notes: list[str]) -> pd.DataFrame:
    """marks.csv as ts, label, fields (parsed JSON); empty, with a note, where unreadable."""
    empty = pd.DataFrame({"ts": [], "label": [], "fields": []})
    if not path.is_file():
        return empty
    try:
        marks = pd.read_csv(path, dtype={"label": str, "fields": str}, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        notes.append(f"{path.name} unreadable ({exc}): no marks drawn")
        return empty
    if not {"ts", "label"} <= set(marks.columns):
        notes.append(f"{path.name} lacks a ts or label column: no marks drawn")
        return empty
    marks["ts"] = pd.to_numeric(marks["ts"], errors="coerce")
    marks = marks.dropna(subset=["ts"])
    raw = marks["fields"] if "fields" in marks.columns else [""] * len(marks)
    marks = marks.assign(fields=[_fields(text) for text in raw])
    return marks[["ts", "label", "fields"]].sort_values("ts", kind="stable").reset_index(drop=True)


def _fields(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {"fields": text}
    return value if isinstance(value, dict) else {"fields": value}


def fields_text(fields: dict[str, Any]) -> str:
    """'layer=block1, n=2'."""
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def mark_spans(marks: pd.DataFrame) -> pd.DataFrame:
    """Marks as spans: label, start_ts, end_ts (NaN for a point in time), fields.

    An end mark (`X_end`, `X_stop`) closes the latest open `X`, `X_start` or `X_begin`;
    marks left unpaired are points, and so is an end mark with nothing open.
    """
    open_marks: dict[str, list[int]] = {}
    spans: list[dict[str, Any]] = []
    for row in marks.itertuples(index=False):
        label = str(row.label)
        base = _strip(label, END_SUFFIXES)
        if base is not None:
            opener = next(
                (
                    open_marks[k].pop()
                    for k in (base + s for s in START_SUFFIXES)
                    if open_marks.get(k)
                ),
                None,
            )
            if opener is not None:
                span = spans[opener]
                span["label"] = base
                span["end_ts"] = float(row.ts)
                span["fields"] = {**span["fields"], **row.fields}
                continue
        spans.append(
            {
                "label": label,
                "start_ts": float(row.ts),
                "end_ts": np.nan,
                "fields": dict(row.fields),
            }
        )
        open_marks.setdefault(label, []).append(len(spans) - 1)
    return pd.DataFrame(spans, columns=["label", "start_ts", "end_ts", "fields"])


def _strip(label: str, suffixes: tuple[str, ...]) -> str | None:
    """`label` without the first of `suffixes` it ends with (and is longer than), else None."""
    for suffix in suffixes:
        if suffix and label.endswith(suffix) and len(label) > len(suffix):
            return label[: -len(suffix)]
    return None


def total_domains(profile: ProfileData) -> list[tuple[str, str]]:
    """The (sensor, device) domains the node total adds: the summary's, else `node_domains`."""
    summary = profile.summary or {}
    listed = [d for d in summary.get("domains") or [] if isinstance(d, dict)]
    if listed:
        return [(str(d["sensor"]), str(d["device"])) for d in listed if d.get("in_total")]
    samples = profile.samples
    if samples is None:
        return []
    energy = samples[samples["metric"] == "energy"]
    return node_domains(zip(energy["sensor"], energy["device"], strict=True))


def span_energy(profile: ProfileData, spans: pd.DataFrame) -> pd.DataFrame:
    """`spans` with seconds, the node's energy_j over each interval and its avg_power_w.

    NaN for a point in time, without node domains, or where a domain's samples do not reach
    an end (as `cumulative_at` reads them); one pass per domain, so a long profile with
    thousands of marks stays quick.
    """
    out = spans.assign(seconds=spans["end_ts"] - spans["start_ts"])
    starts = out["start_ts"].to_numpy(dtype=float)
    ends = out["end_ts"].to_numpy(dtype=float)
    series = energy_series(profile.samples)
    parts = total_domains(profile)
    joules = np.full(len(out), np.nan)
    if parts and all(key in series for key in parts):
        joules = np.zeros(len(out))
        for key in parts:
            ts = series[key]["ts"].to_numpy(dtype=float)
            values = series[key]["value"].to_numpy(dtype=float)
            lo, hi = ts[0] - EDGE_TOLERANCE_S, ts[-1] + EDGE_TOLERANCE_S
            covered = (starts >= lo) & (ends <= hi) & (len(ts) >= 2)
            # np.interp holds the end values outside the samples, as interpolate_energy_j does
            delta = np.interp(ends, ts, values) - np.interp(starts, ts, values)
            joules += np.where(covered, delta, np.nan)
    seconds = out["seconds"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(seconds > 0, joules / seconds, np.nan)
    return out.assign(energy_j=joules, avg_power_w=power)


def display_names(keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A legend name per (sensor, device): the device, with its sensor where two sensors share it."""
    devices = [d for _, d in keys]
    return {
        (s, d): (
            f"{d} ESTIMATE (power model)"  # `--power-model`: never to be read as measured
            if s == MODEL_SENSOR
            else f"{d} ({s})"
            if devices.count(d) > 1
            else "CPU (all)"
            if d == "cpu"
            else d
        )
        for s, d in keys
    }


def _lines(rows: pd.DataFrame) -> dict[tuple[str, str], Line]:
    """Each (sensor, device)'s series: CPU domains first, then GPUs, devices in natural order."""
    groups = {
        (str(sensor), str(device)): g for (sensor, device), g in rows.groupby(["sensor", "device"])
    }
    keys = sorted(groups, key=lambda k: (k[0] == "nvml", device_sort_key(k[1]), k[0]))
    return {
        key: (groups[key]["ts"].to_numpy(dtype=float), groups[key]["value"].to_numpy(dtype=float))
        for key in keys
    }


def metric_lines(
    profile: ProfileData, metric: str, per_core_max: int = 0
) -> dict[tuple[str, str], Line]:
    """Each domain's (ts, value) series of a metric; per-core and per-CPU rows only where there
    are at most `per_core_max` of them (else they are left out: the sums and the node remain)."""
    samples = profile.samples
    if samples is None:
        return {}
    rows = samples[samples["metric"] == metric]
    per_core = rows["device"].str.match(PER_CORE.pattern)
    if rows.loc[per_core, "device"].nunique() > per_core_max:
        rows = rows[~per_core]
    return _lines(rows)


def cumulative_energy_lines(profile: ProfileData) -> dict[tuple[str, str], Line]:
    """Each energy domain's cumulative joules, 0 at the work's start (its boundary sample)."""
    lines = metric_lines(profile, "energy")
    starts = {
        (str(d["sensor"]), str(d["device"])): d.get("start_ts")
        for d in (profile.summary or {}).get("domains") or []
        if isinstance(d, dict)
    }
    origin = profile.origin_ts
    out = {}
    for key, (ts, values) in lines.items():
        at = starts.get(key)
        at = float(at) if finite(at) else origin
        zero = interpolate_energy_j(list(zip(ts.tolist(), values.tolist(), strict=True)), at)
        out[key] = (ts, values - zero)
    return out


def node_total_line(
    lines: dict[tuple[str, str], Line], parts: list[tuple[str, str]]
) -> Line | None:
    """The node total over time: the parts' cumulative series summed on the union of their times."""
    series = [lines[k] for k in parts if k in lines and len(lines[k][0]) >= 2]
    if not series or len(series) < len(parts):
        return None
    ts = np.unique(np.concatenate([s[0] for s in series]))
    return ts, sum(np.interp(ts, t, v) for t, v in series)

"""One sampler per host of a multi-host run, its clock aligned to the run's first host, and the
energy of every host added up (DESIGN.md, "One sampler per host").

A run that spans several hosts (MPI ranks or Dask workers whose `host_name()` differ) starts one
`HostSampler` on each host — in the lowest MPI rank of the host, or in one Dask worker of it —
before the first task and stops it after the last. Each writes, in the run directory (which a
multi-host run keeps on a shared file system, as it does the teacher cache):

    hosts/<host>/samples.csv   the profiler's tidy rows, flushed as each sample is taken
    hosts/<host>/marks.csv     its marks
    hosts/<host>/clock.json    its clock offset to the run's first host, at start and at end
    hosts/<host>/profile.json  the profiler's summary, written when the sampler stops

so a host that dies keeps every sample it took, and a missing profile.json says it never stopped.
Its rows are stamped with its own clock plus the offset measured at start (Cristian's algorithm:
the exchange with the shortest round trip of a few), so every host's samples are on the first
host's clock; the offset measured at the end is recorded beside it, and their difference is the
drift over the run. Task times from a host are corrected by the same start offset by the executor.

`host_energy` reads the hosts' files back: each host's node energy over the run's window by
`profilers.energy.node_domains` (its packages once, its GPUs once), summed over hosts; a host
whose samples stop before the window's end is named with the time it went silent, and the total
is marked partial.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from greenkd.fileio import read_json, write_json_atomic
from profilers.energy import interval_energy_j, node_domains
from profilers.hostid import clock_shift_s, host_name, host_time
from profilers.sampler import Profiler

HOSTS_DIR = "hosts"
CLOCK_FILE = "clock.json"
PROFILE_FILE = "profile.json"
OFFSET_EXCHANGES = 5  # round trips per offset measurement; the shortest wins


def host_dir(run_dir: str | os.PathLike[str], host: str) -> Path:
    """Where one host's samples go: `RUN/hosts/<host>` (a path separator in a name becomes _)."""
    safe = host.replace(os.sep, "_").replace("..", "_") or "_"
    return Path(run_dir) / HOSTS_DIR / safe


def offset_from_exchanges(exchanges: Iterable[tuple[float, float, float]]) -> tuple[float, float]:
    """(offset_s, round_trip_s) from (sent, remote, received) exchanges, the shortest trip winning.

    `sent` and `received` are read on the local clock around one request, `remote` on the other
    clock in between; the other clock is ahead of the local one by `remote - (sent+received)/2`,
    within half the round trip.
    """
    best = min(exchanges, key=lambda e: e[2] - e[0])
    sent, remote, received = best
    return remote - (sent + received) / 2, received - sent


def measure_offset(ask_remote: Callable[[], float], exchanges: int = OFFSET_EXCHANGES) -> float:
    """How far the clock `ask_remote` reads is ahead of this host's (a few round trips)."""
    samples = []
    for _ in range(exchanges):
        sent = host_time()
        remote = ask_remote()
        samples.append((sent, remote, host_time()))
    return offset_from_exchanges(samples)[0]


class HostSampler:
    """The one 1 Hz sampler of a host, stamping on the run's first host's clock."""

    def __init__(
        self, run_dir: str | os.PathLike[str], offset_s: float, *, hz: float = 1.0
    ) -> None:
        self.host = host_name()
        self.dir = host_dir(run_dir, self.host)
        self.offset_start_s = float(offset_s)
        self.profiler = Profiler(
            out=self.dir,
            hz=hz,
            summary_name=PROFILE_FILE,
            clock=lambda: host_time() + self.offset_start_s,
        )

    def _write_clock(self, offset_end_s: float | None) -> None:
        write_json_atomic(
            self.dir / CLOCK_FILE,
            {
                "host": self.host,
                "pid": os.getpid(),
                "offset_start_s": self.offset_start_s,
                "offset_end_s": offset_end_s,
                "clock_shift_s": clock_shift_s() or None,  # the test seam, when set
            },
        )

    def start(self) -> HostSampler:
        """Record the start offset and take the first sample (returns once it is on disk)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_clock(None)
        self.profiler.start()
        return self

    def now(self) -> float:
        """This host's time on the first host's clock."""
        return host_time() + self.offset_start_s

    def stop(self, offset_end_s: float | None = None) -> dict[str, Any]:
        """Take the last sample, write profile.json, record the end offset; the summary."""
        summary = self.profiler.stop()
        self._write_clock(offset_end_s)
        return summary


# --------------------------------------------------------------------------- reading back


def _read_samples(path: Path) -> tuple[dict[tuple[str, str], list[tuple[float, float]]], list]:
    """Cumulative energy points per (sensor, device), and (ts, %) of the node's CPU utilisation.

    A row cut short by a killed writer (the last line of a lost host) is skipped.
    """
    energy: dict[tuple[str, str], list[tuple[float, float]]] = {}
    util: list[tuple[float, float]] = []
    try:
        fh = path.open(newline="")
    except OSError:
        return energy, util
    with fh:
        for row in csv.DictReader(fh):
            try:
                ts, value = float(row["ts"]), float(row["value"])
            except (KeyError, TypeError, ValueError):
                continue
            if not (math.isfinite(ts) and math.isfinite(value)):
                continue
            if row.get("metric") == "energy":
                energy.setdefault((row["sensor"], row["device"]), []).append((ts, value))
            elif (row.get("sensor"), row.get("device"), row.get("metric")) == (
                "procstat",
                "cpu",
                "utilization",
            ):
                util.append((ts, value))
    for points in energy.values():
        points.sort()
    return energy, util


def _one_host(folder: Path, start_ts: float, end_ts: float, hz: float) -> dict[str, Any]:
    clock = read_json(folder / CLOCK_FILE) or {}
    profile = read_json(folder / PROFILE_FILE)
    energy, util = _read_samples(folder / "samples.csv")
    times = [ts for points in energy.values() for ts, _ in points] + [ts for ts, _ in util]
    first_ts = min(times) if times else None
    last_ts = max(times) if times else None
    domains = [
        {
            "sensor": sensor,
            "device": device,
            "energy_j": interval_energy_j(energy[(sensor, device)], start_ts, end_ts),
        }
        for sensor, device in node_domains(energy)
    ]
    node_j = sum(d["energy_j"] for d in domains) if domains else None
    covered_s = (
        max(0.0, min(last_ts, end_ts) - max(first_ts, start_ts)) if times else 0.0  # type: ignore[type-var]
    )
    in_window = [v for ts, v in util if start_ts <= ts <= end_ts]
    offset_start = clock.get("offset_start_s")
    offset_end = clock.get("offset_end_s")
    # A host is silent when its sampler never stopped (no profile.json) or its samples end more
    # than a period and a half before the window does: it kept what it sent, nothing after.
    silent = profile is None or last_ts is None or last_ts < end_ts - 1.5 / hz
    out: dict[str, Any] = {
        "host": str(clock.get("host") or folder.name),
        "status": "partial" if silent else "complete",
        "samples_dir": f"{HOSTS_DIR}/{folder.name}",
        "first_ts": first_ts,
        "last_ts": last_ts,
        "seconds_sampled": covered_s,
        "node_energy_j": node_j,
        "avg_power_w": node_j / covered_s if node_j is not None and covered_s > 0 else None,
        "utilization_pct": sum(in_window) / len(in_window) if in_window else None,
        "domains": domains,
        "clock_offset_start_s": offset_start,
        "clock_offset_end_s": offset_end,
        "clock_drift_s": (
            offset_end - offset_start
            if isinstance(offset_start, int | float) and isinstance(offset_end, int | float)
            else None
        ),
        "missing": [m.get("sensor") for m in (profile or {}).get("missing") or []],
    }
    if silent:
        out["stopped_ts"] = last_ts
        out["reason"] = (
            "no samples at all"
            if last_ts is None
            else "its sampler stopped answering (no profile.json): the host or its worker died"
            if profile is None
            else "its samples end before the run's window does"
        )
    return out


def host_energy(
    run_dir: str | os.PathLike[str], start_ts: float, end_ts: float, *, hz: float = 1.0
) -> dict[str, Any] | None:
    """Every host's energy between `start_ts` and `end_ts` (first host's clock), and their sum.

    None when the run has no `hosts/` folder (a single-host run: its profiler's samples.csv is
    the node's). `energy_status` is `partial` when a host went silent; `silent_hosts` names each
    with the time of its last sample.
    """
    root = Path(run_dir) / HOSTS_DIR
    if not root.is_dir():
        return None
    hosts = [
        _one_host(folder, start_ts, end_ts, hz)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
    ]
    measured = [h["node_energy_j"] for h in hosts if h["node_energy_j"] is not None]
    silent = [
        {"host": h["host"], "stopped_ts": h["stopped_ts"], "reason": h["reason"]}
        for h in hosts
        if h["status"] == "partial"
    ]
    no_energy = [h["host"] for h in hosts if h["node_energy_j"] is None]
    return {
        "window_start_ts": start_ts,
        "window_end_ts": end_ts,
        "seconds": end_ts - start_ts,
        "n_hosts": len(hosts),
        "node_energy_j": sum(measured) if measured else None,
        "energy_status": "partial" if silent or no_energy else "complete",
        "silent_hosts": silent,
        "hosts_without_energy": no_energy,
        "method": (
            "each host's node domains (its CPU packages once, its GPUs once) from its own 1 Hz "
            "sampler, over the task phase, on the first host's clock; summed over hosts"
        ),
        "hosts": hosts,
    }


def sampled_hosts(run_dir: str | os.PathLike[str], *, hz: float = 1.0) -> dict[str, Any] | None:
    """`host_energy` of a run that ended before it could stop its host samplers (ranks died).

    No window was recorded, so it is taken from the samples: from the latest first sample (every
    sampler was running) to the latest last sample (the last any host was heard). Each host is
    named with the time of its last sample; one that never stopped its sampler (no profile.json)
    is partial, as is the sum. None without a `hosts/` folder or without any sample in it.
    """
    root = Path(run_dir) / HOSTS_DIR
    if not root.is_dir():
        return None
    spans = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        energy, util = _read_samples(folder / "samples.csv")
        times = [ts for points in energy.values() for ts, _ in points] + [ts for ts, _ in util]
        if times:
            spans.append((min(times), max(times)))
    if not spans:
        return None  # no sampler took its first sample
    start, end = max(first for first, _ in spans), max(last for _, last in spans)
    block = host_energy(run_dir, start, max(end, start), hz=hz)
    if block is not None:
        block["window"] = "from the samples: the ranks died before rank 0 recorded a window"
    return block

"""What a GPU machine said about greenkd's profiler: read one profile of `gpu_load.py`, check it.

    python benchmarks/device_check_report.py OUT/profile [--load-log OUT/gpu_load.log]
        [--startup startup.json] [--cuda-visible-devices 0] [--report OUT/device_check.md]

Reads the profile (summary.json, samples.csv), the load's log (its `gpu_load result:` line) and
the start-up timings of `profiler_startup.py --json`, prints a Markdown report and writes it
(default: device_check.md beside the profile folder). Checks, each PASS or FAIL:

- energy: on each GPU the run used, the energy counter's joules over the work agree within 2% with
  the trapezoidal integral of the power rows in samples.csv (two independent NVML readings);
- utilisation over the load: at least 90% on the GPU the load ran on, at most 5% on the others;
- `gpus.selected` in the summary is exactly the GPU the load ran on (found by its CUDA UUID,
  else by the CUDA_VISIBLE_DEVICES index in PCI bus order), and only its domains are `used`;
- the load's own process is not reported as a foreign GPU process, and the summary is complete.

Idle power, the idle/dynamic split, warnings (foreign processes, MIG), the load's TFLOP/s and the
start-up figures are reported beside them. Without a GPU (the load's dry run) it says so and
checks what it can: the summary, and /proc/stat's utilisation over the load. Exit code 1 if any
check fails. Only the standard library: it runs wherever the profile was taken.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "gpu_load result: "  # gpu_load.py's last line
ENERGY_TOLERANCE = 0.02
BUSY_PCT, IDLE_PCT = 90.0, 5.0

Series = dict[tuple[str, str, str], list[tuple[float, float]]]


@dataclass
class Report:
    """Markdown lines and the checks, in order."""

    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)

    def check(self, name: str, ok: bool, detail: str) -> None:
        """One PASS/FAIL line."""
        self.lines.append(f"- **{'PASS' if ok else 'FAIL'}** {name}: {detail}")
        if not ok:
            self.failed.append(name)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def read_series(samples: Path) -> Series:
    """samples.csv as (sensor, device, metric) -> sorted (ts, value) pairs."""
    series: Series = defaultdict(list)
    with samples.open(newline="") as f:
        for row in csv.DictReader(f):
            key = (row["sensor"], row["device"], row["metric"])
            series[key].append((float(row["ts"]), float(row["value"])))
    for points in series.values():
        points.sort()
    return series


def read_load(log: Path) -> dict[str, Any] | None:
    """The load's result line, or None if the log or the line is missing."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(found[-1][len(RESULT_PREFIX) :]) if found else None


def trapezoid_j(points: list[tuple[float, float]], start: float, end: float) -> float:
    """Integral of the power rows with start <= ts <= end, trapezoidal rule."""
    inside = [(t, w) for t, w in points if start <= t <= end]
    return sum(0.5 * (w0 + w1) * (t1 - t0) for (t0, w0), (t1, w1) in itertools.pairwise(inside))


def interpolate(points: list[tuple[float, float]], ts: float) -> float:
    """Linear interpolation of sorted (ts, value) pairs; the nearest end outside them."""
    if ts <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= ts <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (ts - t0) / (t1 - t0)
    return points[-1][1]


def window_j(
    energy: list[tuple[float, float]], power: list[tuple[float, float]], start: float, end: float
) -> tuple[float, float]:
    """Counter joules and power-integral joules over [start, end], both interpolated at its ends."""
    counter = interpolate(energy, end) - interpolate(energy, start)
    inside = [(start, interpolate(power, start))]
    inside += [(t, w) for t, w in power if start < t < end]
    inside.append((end, interpolate(power, end)))
    return counter, trapezoid_j(inside, start, end)


def mean_in(points: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Mean of the rows with start < ts <= end (each row covers the time before it)."""
    values = [v for t, v in points if start < t <= end]
    return statistics.fmean(values) if values else None


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def bare_uuid(uuid: str | None) -> str | None:
    """A GPU UUID without NVML's `GPU-` prefix (PyTorch gives it bare), lower case."""
    return None if uuid is None else uuid.lower().removeprefix("gpu-")


def expected_gpus(
    load: dict[str, Any] | None, known: list[dict[str, Any]], visible: str | None
) -> tuple[list[int] | None, str]:
    """The NVML indices the load ran on, and how that was found."""
    uuid = bare_uuid(load.get("uuid")) if load else None
    if uuid:
        match = [g["index"] for g in known if bare_uuid(g.get("uuid")) == uuid]
        if match:
            return match, f"the load's CUDA device UUID {uuid}"
        return [], f"the load's CUDA device UUID {uuid}, which NVML does not list"
    if visible is not None and all(e.strip().isdigit() for e in visible.split(",") if e.strip()):
        indices = [int(e) for e in visible.split(",") if e.strip()]
        return (
            indices,
            f"CUDA_VISIBLE_DEVICES={visible} read in PCI bus order (no UUID from the load)",
        )
    return None, "unknown (no UUID from the load and no CUDA_VISIBLE_DEVICES index)"


def gpu_section(
    report: Report,
    summary: dict[str, Any],
    series: Series,
    load: dict[str, Any] | None,
    visible: str | None,
) -> None:
    """Energy, idle, utilisation and identity checks for every NVML GPU."""
    domains = [d for d in summary["domains"] if d["sensor"] == "nvml"]
    known = summary["metadata"].get("gpus", [])
    expected, how = expected_gpus(load, known, visible)
    window = (load["start_ts"], load["end_ts"]) if load else None

    report.add("## GPUs")
    report.add()
    report.add(
        "| GPU | used | source | counter J (work) | power integral J | diff | idle W (counter) "
        "| idle W (rows) | idle J | dynamic J | avg W | peak W | util % (work) | util % (load) |"
    )
    report.add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for d in domains:
        device = d["device"]
        power = series.get(("nvml", device, "power"), [])
        integral = trapezoid_j(power, d["start_ts"], d["end_ts"])
        diff = (integral - d["energy_j"]) / d["energy_j"] if d["energy_j"] else None
        idle_rows = [w for t, w in power if t <= d["start_ts"]]
        util = series.get(("nvml", device, "utilization"), [])
        util_work = next(
            (
                u["avg_pct"]
                for u in summary["utilization"]
                if u["sensor"] == "nvml" and u["device"] == device
            ),
            None,
        )
        util_load = mean_in(util, *window) if window else None
        rows.append((d, integral, diff, util_load))
        report.add(
            f"| {device} | {d['used']} | {d['source']} | {fmt(d['energy_j'])} | {fmt(integral)} "
            f"| {fmt(None if diff is None else 100 * diff, ' %', 2)} "
            f"| {fmt(d['idle_power_w'])} "
            f"| {fmt(statistics.fmean(idle_rows) if idle_rows else None)} "
            f"| {fmt(d['idle_energy_j'])} | {fmt(d['dynamic_energy_j'])} "
            f"| {fmt(d['avg_power_w'])} | {fmt(d['peak_power_w'])} "
            f"| {fmt(util_work)} | {fmt(util_load)} |"
        )
    total = summary["total"]
    report.add()
    report.add(
        f"Node total {fmt(total['energy_j'], ' J')} ({', '.join(total['domains'])}): idle "
        f"{fmt(total['idle_energy_j'], ' J')}, dynamic {fmt(total['dynamic_energy_j'], ' J')}; "
        f"the run's GPUs {fmt(summary['gpus']['used_energy_j'], ' J')} of "
        f"{fmt(summary['gpus']['node_energy_j'], ' J')} all GPUs drew. Work "
        f"{fmt(summary['duration_s'], ' s', 2)} after {fmt(summary['idle']['seconds'], ' s', 2)} "
        "of idle baseline."
    )
    if window:
        report.add(
            f"Load window {load['end_ts'] - load['start_ts']:.1f} s (from gpu_load.py's own "
            "start and end times), inside the work."
        )
    report.add()
    report.add("### Checks")
    report.add()
    for d, integral, diff, util_load in rows:
        device = d["device"]
        index = int(device.removeprefix("gpu"))
        ran_here = expected is not None and index in expected
        if ran_here or (expected is None and d["used"]):
            if d["source"] != "counter":
                report.add(
                    f"- n/a {device} energy: no energy counter on this GPU, so its energy is the "
                    "power integral itself and there is nothing independent to compare"
                )
            else:
                report.check(
                    f"{device} counter vs power integral",
                    diff is not None and abs(diff) <= ENERGY_TOLERANCE,
                    f"{fmt(d['energy_j'], ' J')} from the counter, {fmt(integral, ' J')} from "
                    f"the power rows ({fmt(None if diff is None else 100 * diff, ' %', 2)}; "
                    f"tolerance {100 * ENERGY_TOLERANCE:g} %)",
                )
        energy = series.get(("nvml", device, "energy"), [])
        power = series.get(("nvml", device, "power"), [])
        if window and ran_here and energy and power:
            counter, integral_load = window_j(energy, power, *window)
            report.add(
                f"- info {device} over the load window alone: {counter:.1f} J from the counter, "
                f"{integral_load:.1f} J from the power rows "
                f"({100 * (integral_load - counter) / counter if counter else 0:+.2f} %), "
                f"{counter / (window[1] - window[0]):.1f} W on average"
            )
        if util_load is not None and expected is not None:
            if ran_here:
                report.check(
                    f"{device} utilisation over the load",
                    util_load >= BUSY_PCT,
                    f"{util_load:.1f} % (expected >= {BUSY_PCT:g} %: the load ran here)",
                )
            else:
                report.check(
                    f"{device} utilisation over the load",
                    util_load <= IDLE_PCT,
                    f"{util_load:.1f} % (expected <= {IDLE_PCT:g} %: the load ran elsewhere)",
                )
    selected = summary["gpus"]["selected"]
    used_flags = sorted(int(d["device"].removeprefix("gpu")) for d in domains if d["used"])
    report.check(
        "gpus.selected is the GPU the load ran on",
        expected is not None and selected == expected and used_flags == sorted(expected),
        f"summary gpus.selected {selected}, domains marked used {used_flags}; "
        f"the load ran on {expected} ({how})",
    )
    foreign = summary.get("gpu_foreign_processes", [])
    if load:
        own = [p for p in foreign if p["pid"] == load["pid"]]
        report.check(
            "the load's own process is not foreign",
            not own,
            f"pid {load['pid']} "
            + ("reported foreign on " + ", ".join(p["gpu"] for p in own) if own else "not in")
            + f" gpu_foreign_processes ({len(foreign)} entries)",
        )
    mig = [g["index"] for g in known if g.get("mig")]
    report.add()
    report.add(
        f"MIG: {'on gpu' + ', gpu'.join(map(str, mig)) if mig else 'no GPU in MIG mode'}. "
        f"Foreign GPU processes: {len(foreign)}"
        + (
            " (" + "; ".join(f"pid {p['pid']} on {p['gpu']}" for p in foreign) + ")"
            if foreign
            else ""
        )
        + "."
    )


def cpu_section(report: Report, summary: dict[str, Any], series: Series, load: dict[str, Any]):
    """The dry run's check: /proc/stat saw the CPU loop."""
    cpus = summary["metadata"].get("cpu_count") or os.cpu_count() or 1
    util = mean_in(
        series.get(("procstat", "cpu", "utilization"), []), load["start_ts"], load["end_ts"]
    )
    one_core = 100.0 / cpus
    report.check(
        "procstat utilisation over the CPU loop",
        util is not None and util >= 0.8 * one_core,
        f"{fmt(util, ' %')} of {cpus} CPUs (expected at least 80% of one core's share, "
        f"{0.8 * one_core:.0f} %)",
    )


def startup_section(report: Report, path: Path) -> None:
    """`profiler_startup.py --json`'s figures."""
    try:
        startup = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        report.add(f"## Start-up\n\nno start-up figures ({exc})")
        return
    report.add("## Start-up: wall time added to `sleep`")
    report.add()
    report.add(
        f"{startup['rounds']} rounds alternating, `sleep {startup['seconds']}`; CPU "
        f"{startup['cpu_model']} ({startup['cpu_count']} CPUs), load average "
        f"{startup.get('load_average')}."
    )
    report.add()
    report.add("| command | median wall s | added s (median) | added s (min) | every wall s |")
    report.add("|---|---|---|---|---|")
    bare = startup["median_s"]["bare `sleep`"]
    for name, times in startup["wall_s"].items():
        report.add(
            f"| {name} | {statistics.median(times):.3f} "
            f"| {statistics.median(times) - bare:+.3f} | {min(times) - bare:+.3f} "
            f"| {', '.join(f'{t:.3f}' for t in times)} |"
        )
    report.add()
    for name, command in startup["commands"].items():
        report.add(f"- {name}: `{command}`")
    report.add()


def build(args: argparse.Namespace) -> Report:
    """The whole report."""
    report = Report()
    summary = json.loads((args.profile / "summary.json").read_text())
    series = read_series(args.profile / summary["files"]["samples"])
    load = read_load(args.load_log)
    meta = summary["metadata"]
    report.add("# Device check: greenkd's profiler on a GPU")
    report.add()
    report.add(
        f"Host {meta.get('host')}: CPU {meta.get('cpu_model')} ({meta.get('cpu_count')} CPUs), "
        f"GPUs {meta.get('gpu_models') or 'none'}, driver {meta.get('gpu_driver')}, Python "
        f"{meta.get('python')}, kernel {meta.get('kernel')}. Profile `{summary.get('command')}`, "
        f"{summary['hz']:g} Hz, {summary['samples']} samples; status {summary['status']}"
        + (f" ({summary['reason']})" if summary["reason"] else "")
        + "."
    )
    report.add()
    if load is None:
        report.add(f"The load's result line is missing from {args.load_log}.")
    else:
        report.add(
            f"Load: {load['backend']} on {load['device']}, {load['dtype']} "
            f"{load['size']}x{load['size']} products, {load['products']} in "
            f"{load['seconds']:.1f} s: **{load['tflops']:.1f} TFLOP/s**."
        )
    report.add()
    nvml = [d for d in summary["domains"] if d["sensor"] == "nvml"]
    dry = load is None or load.get("dry_run") or not nvml
    if dry:
        why = next((m["reason"] for m in summary["missing"] if m["sensor"] == "nvml"), None)
        report.add(
            "**No GPU: dry run.** "
            + ("NVML measured no GPU" + (f" ({why})" if why else "") + ". " if not nvml else "")
            + ("The load ran on the CPU. " if load and load.get("dry_run") else "")
            + "Only what needs no GPU is checked."
        )
        report.add()
    report.add("## Checks")
    report.add()
    report.check(
        "the profile is complete",
        summary["status"] == "complete" and summary.get("exit_code") == 0,
        f"status {summary['status']}, the command's exit code {summary.get('exit_code')}",
    )
    if nvml and load is not None and load.get("dry_run"):
        report.check("the load ran on a GPU", False, "NVML sees GPUs but the load found none")
    if load is not None and (dry or not nvml):
        cpu_section(report, summary, series, load)
    report.add()
    if nvml:
        gpu_section(report, summary, series, load, args.cuda_visible_devices)
        report.add()
    report.add("## Warnings and missing sensors")
    report.add()
    for line in summary.get("warnings", []):
        report.add(f"- warning: {line}")
    if not summary.get("warnings"):
        report.add("- no warnings")
    for m in summary["missing"]:
        report.add(f"- missing {m['sensor']}: {m['reason']}")
    sampling = summary["sampling"]
    report.add(
        f"- sampling: jitter p50/p99/max {fmt(sampling['jitter_p50_ms'], '', 2)} / "
        f"{fmt(sampling['jitter_p99_ms'], '', 2)} / {fmt(sampling['jitter_max_ms'], '', 2)} ms, "
        f"missed ticks {sampling['missed_ticks']}, sampler CPU {fmt(sampling['sampler_cpu_s'], ' s', 3)}"
    )
    report.add()
    if args.startup is not None:
        startup_section(report, args.startup)
    report.add(
        f"**Overall: {'FAIL (' + ', '.join(report.failed) + ')' if report.failed else 'PASS'}**"
    )
    return report


def main() -> None:
    """Parse the arguments, build the report, print and write it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path, help="the profile folder (summary.json, samples.csv)")
    parser.add_argument("--load-log", type=Path, default=None, help="default: ../gpu_load.log")
    parser.add_argument("--startup", type=Path, default=None, help="profiler_startup.py --json")
    parser.add_argument(
        "--cuda-visible-devices",
        default=None,
        help="what the load was given, where it cannot name its GPU's UUID",
    )
    parser.add_argument("--report", type=Path, default=None, help="default: ../device_check.md")
    args = parser.parse_args()
    args.load_log = args.load_log or args.profile.parent / "gpu_load.log"
    report = build(args)
    path = args.report or args.profile.parent / "device_check.md"
    path.write_text(report.text())
    print(report.text(), end="")
    print(f"(written to {path})")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()

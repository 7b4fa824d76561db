"""`greenkd profile` and `greenkd sensors`: parse, call the profiler, print. No heavy imports here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from greenkd.errors import GreenkdError
from profilers.command import CommandError, CommandInterrupted, run_command
from profilers.gpus import default_used_gpus
from profilers.sensors import SensorRoots, open_sensors
from profilers.sensors.msr import fix_permission
from profilers.sensors.topology import parse_cpu_list

# Everything after the first word of the command belongs to the command: its
# own options (`python -c ...`) must not be parsed as greenkd's.
PROFILE_CONTEXT = {"allow_interspersed_args": False}


def parse_gpu_indices(text: str | None) -> list[int] | None:
    """`0,1` or `0-3` into NVML indices; None keeps every GPU as used."""
    if text is None:
        return None
    try:
        indices = parse_cpu_list(text)
    except ValueError:
        indices = []
    if not indices:
        raise GreenkdError(f"--gpus takes NVML indices like 0,1 or 0-3, got {text!r}")
    return indices


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}"


def format_table(summary: dict[str, Any], summary_path: Path) -> str:
    """A short human summary of a profile."""
    lines = [
        f"greenkd profile: {summary['status']}"
        + (f" ({summary['reason']})" if summary["reason"] else "")
        + f", {_fmt(summary['duration_s'], 's', 2)} at {summary['hz']:g} Hz, "
        f"{summary['samples']} samples -> {summary_path}"
    ]
    domains = summary["domains"]
    if domains:
        for d in domains:
            idle = (
                ""
                if d["idle_power_w"] is None
                else (
                    f"  idle {_fmt(d['idle_power_w'], 'W')}  dynamic {_fmt(d['dynamic_energy_j'], 'J')}"
                )
            )
            lines.append(
                f"  energy  {d['sensor']:<8} {d['device']:<10} {_fmt(d['energy_j'], 'J'):>12}  "
                f"({d['source']})  avg {_fmt(d['avg_power_w'], 'W')}  peak {_fmt(d['peak_power_w'], 'W')}{idle}"
            )
        total = summary["total"]
        if total["energy_j"] is not None:
            lines.append(
                f"  total   {_fmt(total['energy_j'], 'J')} ({', '.join(total['domains'])})"
            )
        gpus = summary.get("gpus") or {}
        if gpus.get("selected") is not None and gpus.get("node_energy_j") is not None:
            used = ", ".join(f"gpu{i}" for i in gpus["selected"]) or "none"
            lines.append(
                f"  gpus    used {used}: {_fmt(gpus['used_energy_j'], 'J')} of the "
                f"{_fmt(gpus['node_energy_j'], 'J')} all the node's GPUs drew"
            )
    else:
        lines.append(
            "  energy  unavailable: no energy sensor could be read on this machine (see below)"
        )
    carbon = summary["carbon"]
    if carbon is not None:
        grams = "-" if carbon["g_co2e"] is None else f"{carbon['g_co2e']:.3g} gCO2e"
        lines.append(f"  carbon  {grams}: {carbon['note']}")
    for u in summary["utilization"]:
        if u["device"] in ("cpu",) or u["sensor"] == "nvml":
            lines.append(f"  util    {u['sensor']:<8} {u['device']:<10} {u['avg_pct']:.1f} %")
    for m in summary["missing"]:
        lines.append(f"  missing {m['sensor']}: {m['reason']}; fix: {m['fix']}")
    for w in summary.get("warnings", []):
        lines.append(f"  warning {w}")
    return "\n".join(lines)


def profile(
    command: list[str] | None = typer.Argument(
        None, metavar="-- CMD [ARGS]...", help="The command to profile and its arguments."
    ),
    hz: float = typer.Option(1.0, "--hz", help="Samples per second."),
    out: Path = typer.Option(
        Path("greenkd-profile"), "--out", "-o", help="Directory for the samples, marks and summary."
    ),
    idle_seconds: float = typer.Option(
        0.0,
        "--idle-seconds",
        help="Idle baseline sampled before the command starts (splits idle from dynamic energy).",
    ),
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        help="NVML indices the command uses, e.g. 0,1 or 0-3 (default: the GPUs "
        "CUDA_VISIBLE_DEVICES names, every GPU if unset); every GPU is still measured.",
    ),
    carbon_intensity: float | None = typer.Option(
        None,
        "--carbon-intensity",
        help="Grid gCO2e/kWh for an offline estimate (else $GREENKD_CARBON_INTENSITY).",
    ),
    samples_name: str = typer.Option(
        "samples.csv", "--samples-name", help="File name of the samples."
    ),
    summary_name: str = typer.Option(
        "summary.json", "--summary-name", help="File name of the summary."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the table at the end."),
) -> None:
    """Run a command under the profiler: samples.csv, marks.csv and summary.json in --out; exits with its code."""
    if gpus is not None:
        used_gpus, warnings = parse_gpu_indices(gpus), []
    else:
        default = default_used_gpus()
        used_gpus, warnings = default.indices, default.warnings
    try:
        code = run_command(
            command or [],
            out=out,
            hz=hz,
            idle_seconds=idle_seconds,
            gpus=used_gpus,
            warnings=warnings,
            samples_name=samples_name,
            summary_name=summary_name,
            carbon_intensity_g_per_kwh=carbon_intensity,
        )
    except CommandError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except CommandInterrupted as exc:
        code = exc.exit_code
    if not quiet:
        summary = json.loads((out / summary_name).read_text())
        print(format_table(summary, out / summary_name), file=sys.stderr)
    raise typer.Exit(code)


def sensors(
    as_json: bool = typer.Option(False, "--json", help="Print the statuses as JSON."),
) -> None:
    """Say which sensors can be read here, and for each one that cannot, why and the fix."""
    opened, statuses = open_sensors(SensorRoots())
    for sensor in opened:
        sensor.close()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "sensor": s.sensor,
                        "available": s.available,
                        "detail": s.detail,
                        "reason": s.reason,
                        "fix": s.fix,
                        "problems": [p.as_dict() for p in s.problems],
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
        return
    for s in statuses:
        state = "available" if s.available else ("not used" if s.reason is None else "unavailable")
        print(f"{s.sensor:<9} {state:<12} {s.detail or s.reason}")
        if not s.available and s.reason is not None and s.fix:
            print(f"{'':<22} fix: {s.fix}")
        for p in s.problems:
            print(f"{'':<22} {p.reason}; fix: {p.fix}")
    print(
        "\nReading the AMD MSRs without running everything as root: load the module (`modprobe msr`), then "
        + fix_permission()
        + ". Roots: GREENKD_MSR_ROOT (default /dev/cpu), GREENKD_PROC_STAT (/proc/stat), GREENKD_SYSFS_ROOT (/sys)."
    )


def register(app: typer.Typer) -> None:
    """Add `profile` and `sensors` to a typer app."""
    app.command("profile", context_settings=PROFILE_CONTEXT)(profile)
    app.command("sensors")(sensors)

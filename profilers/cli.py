"""`greenkd profile` and `greenkd sensors`: parse, call the profiler, print. No heavy imports here.

Whatever a profiler's start-up costs is added to every command it wraps, so a plain invocation of
either command (`run_fast`) is parsed here without typer: typer, its click and the pydantic it
coerces parameters through take about 0.1 s to import (BENCHMARKS.md, start-up). Anything that
parser does not take as it is (`--help`, an unknown or malformed option, a value that is not a
plain number) goes to greenkd's typer app (`register`), so help, usage errors and their exit codes
are typer's. `PROFILE_OPTIONS` and `SENSORS_OPTIONS` are the one list of the options for both.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenkd.errors import GreenkdError
from profilers.command import CommandError, CommandInterrupted, run_command
from profilers.gpus import default_used_gpus
from profilers.sensors import SensorRoots, open_sensors
from profilers.sensors.model import parse_power_model
from profilers.sensors.msr import fix_permission
from profilers.sensors.topology import parse_cpu_list

# Everything after the first word of the command belongs to the command: its
# own options (`python -c ...`) must not be parsed as greenkd's.
PROFILE_CONTEXT = {"allow_interspersed_args": False}


@dataclass(frozen=True)
class Option:
    """One command-line option: its flags, its type (`bool` for a flag without value), default, help."""

    flags: tuple[str, ...]
    kind: type
    default: Any
    help: str


PROFILE_OPTIONS = {
    "hz": Option(("--hz",), float, 1.0, "Samples per second."),
    "out": Option(
        ("--out", "-o"),
        Path,
        Path("greenkd-profile"),
        "Directory for the samples, marks and summary.",
    ),
    "idle_seconds": Option(
        ("--idle-seconds",),
        float,
        0.0,
        "Idle baseline sampled before the command starts (splits idle from dynamic energy).",
    ),
    "gpus": Option(
        ("--gpus",),
        str,
        None,
        "NVML indices the command uses, e.g. 0,1 or 0-3 (default: the GPUs "
        "CUDA_VISIBLE_DEVICES names, every GPU if unset); every GPU is still measured.",
    ),
    "carbon_intensity": Option(
        ("--carbon-intensity",),
        float,
        None,
        "Grid gCO2e/kWh for an offline estimate (else $GREENKD_CARBON_INTENSITY).",
    ),
    "power_model": Option(
        ("--power-model",),
        str,
        None,
        "Opt-in estimate where nothing measures energy: cpu:IDLE_W:MAX_W, watts per CPU package "
        "at 0 and 100 % /proc/stat utilisation, linear. Labelled an estimate, never added to "
        "measured energy.",
    ),
    "samples_name": Option(("--samples-name",), str, "samples.csv", "File name of the samples."),
    "summary_name": Option(("--summary-name",), str, "summary.json", "File name of the summary."),
    "quiet": Option(("--quiet", "-q"), bool, False, "Do not print the table at the end."),
    "report": Option(
        ("--report",),
        bool,
        False,
        "At the end, write report.html to --out: a self-contained page of the profile's plots.",
    ),
}
# Writes a profile directory's page, given the directory and the summary's file name, and returns
# its path. The page is greenkd.report's, a layer above this one: the `greenkd` command passes its
# writer in (greenkd.cli), which imports pandas and plotly only when it is called.
PageWriter = Callable[[Path, str], Path]
SENSORS_OPTIONS = {"as_json": Option(("--json",), bool, False, "Print the statuses as JSON.")}

# The numbers the fast path converts itself; anything else ("1_000", "inf", " 2") goes to typer.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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


def attributed_line(attribution: dict[str, Any] | None, total_j: float | None) -> str | None:
    """The table's `attributed` line: the command's estimated CPU share and energy, or None."""
    if not attribution:
        return None
    parts = []
    if attribution["cpu_share"] is not None:
        parts.append(
            f"cpu share {100 * attribution['cpu_share']:.1f} % ({attribution['command_cpu_s']:.2f} "
            f"of {attribution['machine_busy_cpu_s']:.2f} busy CPU s)"
        )
    if attribution["attributed_total_j"] is not None and total_j is not None:
        parts.append(
            f"energy {_fmt(attribution['attributed_total_j'], 'J')} of {_fmt(total_j, 'J')}"
        )
    if not parts:
        return None
    return (
        f"  attributed  {'  '.join(parts)} "
        "(estimated by CPU time, not measured: summary attribution.method)"
    )


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
    estimate = summary.get("estimate")
    if estimate:
        for d in estimate["domains"]:
            lines.append(
                f"  estimate model    {d['device']:<10} {_fmt(d['energy_j'], 'J'):>12}  "
                f"avg {_fmt(d['avg_power_w'], 'W')}  (ESTIMATE, not measured)"
            )
        lines.append(
            f"  estimate {_fmt(estimate['energy_j'], 'J')}: {estimate['method']}; never added to "
            "measured energy"
        )
    carbon = summary["carbon"]
    if carbon is not None:
        grams = "-" if carbon["g_co2e"] is None else f"{carbon['g_co2e']:.3g} gCO2e"
        lines.append(f"  carbon  {grams}: {carbon['note']}")
    for u in summary["utilization"]:
        if u["device"] in ("cpu",) or u["sensor"] == "nvml":
            lines.append(f"  util    {u['sensor']:<8} {u['device']:<10} {u['avg_pct']:.1f} %")
    attributed = attributed_line(summary.get("attribution"), summary["total"]["energy_j"])
    if attributed:
        lines.append(attributed)
    for m in summary["missing"]:
        lines.append(f"  missing {m['sensor']}: {m['reason']}; fix: {m['fix']}")
    for w in summary.get("warnings", []):
        lines.append(f"  warning {w}")
    return "\n".join(lines)


def run_profile(
    command: Sequence[str],
    *,
    hz: float,
    out: Path,
    idle_seconds: float,
    gpus: str | None,
    carbon_intensity: float | None,
    samples_name: str,
    summary_name: str,
    quiet: bool,
    report: bool = False,
    write_page: PageWriter | None = None,
    power_model: str | None = None,
) -> int:
    """`greenkd profile`: run the command under the profiler, print the table; its exit code.

    With `report`, the page is written once the command has ended (`write_page`); a page that
    cannot be written is one line on stderr, and the exit code stays the command's.
    """
    if report and write_page is None:
        raise GreenkdError(
            "--report needs the greenkd command's page writer (run `greenkd profile`)"
        )
    model = parse_power_model(power_model)  # a malformed model stops before the command runs
    if gpus is not None:
        used_gpus, warnings = parse_gpu_indices(gpus), []
    else:
        default = default_used_gpus()
        used_gpus, warnings = default.indices, default.warnings
    try:
        code = run_command(
            command,
            out=out,
            hz=hz,
            idle_seconds=idle_seconds,
            gpus=used_gpus,
            warnings=warnings,
            samples_name=samples_name,
            summary_name=summary_name,
            carbon_intensity_g_per_kwh=carbon_intensity,
            power_model=model,
        )
    except CommandError as exc:
        print(f"greenkd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except CommandInterrupted as exc:
        code = exc.exit_code
    if not quiet:
        summary = json.loads((out / summary_name).read_text())
        print(format_table(summary, out / summary_name), file=sys.stderr)
    if report and write_page is not None:
        try:
            page = write_page(out, summary_name)
        except GreenkdError as exc:
            print(f"greenkd: error: no page written: {exc}", file=sys.stderr)
        else:
            if not quiet:
                print(f"greenkd profile: page -> {page}", file=sys.stderr)
    return code


def print_sensors(*, as_json: bool) -> None:
    """`greenkd sensors`: which sensors can be read here, and for each one that cannot, why and the fix."""
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


def _plain_value(kind: type, text: str) -> Any:
    """`text` as the option's type, or None where typer should judge it (empty, not a plain number)."""
    if not text:
        return None
    if kind is float:
        return float(text) if _PLAIN_NUMBER.fullmatch(text) else None
    return kind(text)


def parse_plain(
    args: Sequence[str], options: dict[str, Option], *, command: bool
) -> tuple[dict[str, Any], list[str]] | None:
    """The options' values and the command, parsed as click parses them, for plain forms only.

    Taken: `--flag VALUE`, `--flag=VALUE`, `-o VALUE`, `-q`, then `--` or the first word that is
    not an option, after which everything is the command's (`command` True) or an error (False).
    None for anything else (help, an unknown flag, `-qo DIR`, a missing or odd value), which
    typer then parses and, where it is wrong, reports.
    """
    names = {flag: name for name, option in options.items() for flag in option.flags}
    values = {name: option.default for name, option in options.items()}
    rest = list(args)
    while rest and rest[0] != "--":
        if not rest[0].startswith("-") or rest[0] == "-":
            break  # the command's first word (click: allow_interspersed_args False)
        word = rest.pop(0)
        flag, equals, text = word.partition("=") if word.startswith("--") else (word, "", "")
        name = names.get(flag)
        if name is None:
            return None
        option = options[name]
        if option.kind is bool:
            if equals:
                return None
            values[name] = True
            continue
        if not equals:
            if not rest:
                return None
            text = rest.pop(0)  # click takes the next word whatever it is, `-x` too
        value = _plain_value(option.kind, text)
        if value is None:
            return None
        values[name] = value
    if rest and rest[0] == "--":
        rest.pop(0)
    if rest and not command:
        return None
    return values, rest


def run_fast(argv: Sequence[str], write_page: PageWriter | None = None) -> int | None:
    """Run `profile ...` or `sensors ...` (argv without the program) and return the exit code.

    None, having done nothing, where typer must take the arguments (see `parse_plain`).
    `write_page` writes the page of `profile --report`.
    """
    if argv and argv[0] == "profile":
        parsed = parse_plain(argv[1:], PROFILE_OPTIONS, command=True)
        if parsed is None:
            return None
        values, command = parsed
        return run_profile(command, **values, write_page=write_page)
    if argv and argv[0] == "sensors":
        parsed = parse_plain(argv[1:], SENSORS_OPTIONS, command=False)
        if parsed is None:
            return None
        print_sensors(**parsed[0])
        return 0
    return None


def register(app: Any, write_page: PageWriter | None = None) -> None:
    """Add `profile` and `sensors` to a typer app (typer is imported only here).

    `write_page` writes the page of `profile --report`.
    """
    import typer

    def option(spec: Option) -> Any:
        return typer.Option(spec.default, *spec.flags, help=spec.help)

    p = PROFILE_OPTIONS

    def profile(
        command: list[str] | None = typer.Argument(
            None, metavar="-- CMD [ARGS]...", help="The command to profile and its arguments."
        ),
        hz: float = option(p["hz"]),
        out: Path = option(p["out"]),
        idle_seconds: float = option(p["idle_seconds"]),
        gpus: str | None = option(p["gpus"]),
        carbon_intensity: float | None = option(p["carbon_intensity"]),
        power_model: str | None = option(p["power_model"]),
        samples_name: str = option(p["samples_name"]),
        summary_name: str = option(p["summary_name"]),
        quiet: bool = option(p["quiet"]),
        report: bool = option(p["report"]),
    ) -> None:
        """Run a command under the profiler: samples.csv, marks.csv and summary.json in --out; exits with its code."""
        raise typer.Exit(
            run_profile(
                command or [],
                hz=hz,
                out=out,
                idle_seconds=idle_seconds,
                gpus=gpus,
                carbon_intensity=carbon_intensity,
                power_model=power_model,
                samples_name=samples_name,
                summary_name=summary_name,
                quiet=quiet,
                report=report,
                write_page=write_page,
            )
        )

    def sensors(as_json: bool = option(SENSORS_OPTIONS["as_json"])) -> None:
        """Say which sensors can be read here, and for each one that cannot, why and the fix."""
        print_sensors(as_json=as_json)

    app.command("profile", context_settings=PROFILE_CONTEXT)(profile)
    app.command("sensors")(sensors)

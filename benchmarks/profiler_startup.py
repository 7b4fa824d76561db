"""Start-up cost of profiling `sleep 2`: greenkd vs perun `monitor -b` vs CodeCarbon's tracker, side by side.

Each round runs the bare command and every tool once, in turn, so machine load
hits them alike; the figure is the wall time added to the bare `sleep 2`.
perun and CodeCarbon are not greenkd dependencies: install them in a throwaway
venv and point `--peers-python` at it:

    python3.11 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install perun==1.0.0 codecarbon==3.3.2
    python benchmarks/profiler_startup.py --rounds 5 --peers-python /tmp/peers-venv/bin/python

`--typer-path` adds `greenkd profile` run through the whole typer app, as every
invocation was before the fast path (`profilers.cli.run_fast`): the same tree,
so the difference is what the fast path saves. greenkd is the installed
`greenkd` command, else this tree's `python -m greenkd` (`--greenkd` names
another); `--json` keeps every time.

Bytecode: an installed greenkd runs from cached bytecode (pip compiles it at install; an
editable install's `__pycache__` is written on first import), so the measured commands run
without PYTHONDONTWRITEBYTECODE, which some sandboxes set, and the warm-up run writes the cache.
Where no cache exists and that variable is set, every run compiles greenkd's and the profiler's
modules from source: +0.30 and +0.34 s for the fast path on a 2-core AMD EPYC, against +0.26
with the cache, in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from profilers.sensors.topology import read_cpu_model

CODECARBON = """
import subprocess, sys
from codecarbon import OfflineEmissionsTracker
tracker = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1, log_level="error",
                                  save_to_file=False)
tracker.start()
subprocess.run(sys.argv[1:], check=True)
tracker.stop()
"""


ROOT = Path(__file__).resolve().parents[1]
# `greenkd` through the typer app with every command group, as before the fast path.
TYPER_PATH = "import sys; from greenkd.cli import app; sys.argv[0] = 'greenkd'; app()"


def wall_s(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall time of one run, output discarded."""
    start = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - start


def greenkd_command(given: str | None) -> list[str]:
    """`--greenkd` split as a shell would, else the installed `greenkd`, else `python -m greenkd`."""
    if given:
        return shlex.split(given)
    installed = shutil.which("greenkd") or Path(sys.executable).with_name("greenkd")
    if Path(installed).exists():
        return [str(installed)]
    return [sys.executable, "-m", "greenkd"]


def main() -> None:
    """Run the rounds and print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", default="2", help="argument of sleep")
    parser.add_argument(
        "--peers-python", type=Path, default=None, help="python of a venv with perun and codecarbon"
    )
    parser.add_argument(
        "--greenkd", default=None, help="command that runs greenkd, e.g. 'python3 -m greenkd'"
    )
    parser.add_argument(
        "--typer-path", action="store_true", help="also greenkd through the whole typer app"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every time here")
    args = parser.parse_args()

    # This tree first, so `python -m greenkd` runs it where greenkd is not installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # run as installed: from cached bytecode
    sleep = ["sleep", args.seconds]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profile = ["profile", "-q", "--out", str(work / "greenkd"), "--", *sleep]
        tools: dict[str, list[str]] = {
            "bare `sleep`": sleep,
            "greenkd profile": [*greenkd_command(args.greenkd), *profile],
        }
        if args.typer_path:
            tools["greenkd profile, through typer"] = [sys.executable, "-c", TYPER_PATH, *profile]
        if args.peers_python is not None:
            perun = args.peers_python.with_name("perun")
            tools["perun 1.0.0 monitor -b"] = [
                str(perun),
                "monitor",
                "-b",
                "--data-out",
                str(work / "perun"),
                *sleep,
            ]
            tools["CodeCarbon 3.3.2 tracker"] = [str(args.peers_python), "-c", CODECARBON, *sleep]
        times: dict[str, list[float]] = {name: [] for name in tools}
        for argv in tools.values():  # warm the page cache once
            wall_s(argv, work, env)
        for _ in range(args.rounds):
            for name, argv in tools.items():
                times[name].append(wall_s(argv, work, env))
    bare = statistics.median(times["bare `sleep`"])
    load = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    print(f"CPU: {read_cpu_model()}, {os.cpu_count()} CPUs; load average {load}")
    print(
        f"| tool (`sleep {args.seconds}`, {args.rounds} rounds) | median wall s | added s (median) | added s (min) |"
    )
    print("|---|---|---|---|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) - bare:+.2f} "
            f"| {min(values) - bare:+.2f} |"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "cpu_model": read_cpu_model(),
                    "cpu_count": os.cpu_count(),
                    "load_average": load,
                    "seconds": args.seconds,
                    "rounds": args.rounds,
                    "commands": {name: shlex.join(argv) for name, argv in tools.items()},
                    "wall_s": times,
                    "median_s": {name: statistics.median(v) for name, v in times.items()},
                    "added_median_s": {
                        name: statistics.median(v) - bare for name, v in times.items()
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

"""Start-up cost of profiling `sleep 2`: greenkd vs perun `monitor -b` vs CodeCarbon's tracker, side by side.

Each round runs the bare command and every tool once, in turn, so machine load
hits them alike; the figure is the wall time added to the bare `sleep 2`.
perun and CodeCarbon are not greenkd dependencies: install them in a throwaway
venv and point `--peers-python` at it:

    python3.11 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install perun==1.0.0 codecarbon==3.3.2
    python benchmarks/profiler_startup.py --rounds 5 --peers-python /tmp/peers-venv/bin/python
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODECARBON = """
import subprocess, sys
from codecarbon import OfflineEmissionsTracker
tracker = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1, log_level="error",
                                  save_to_file=False)
tracker.start()
subprocess.run(sys.argv[1:], check=True)
tracker.stop()
"""


def wall_s(argv: list[str], cwd: Path) -> float:
    """Wall time of one run, output discarded."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


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
    args = parser.parse_args()

    greenkd = shutil.which("greenkd") or str(Path(sys.executable).with_name("greenkd"))
    sleep = ["sleep", args.seconds]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tools: dict[str, list[str]] = {
            "bare `sleep`": sleep,
            "greenkd profile": [
                greenkd,
                "profile",
                "-q",
                "--out",
                str(work / "greenkd"),
                "--",
                *sleep,
            ],
        }
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
            wall_s(argv, work)
        for _ in range(args.rounds):
            for name, argv in tools.items():
                times[name].append(wall_s(argv, work))
    bare = statistics.median(times["bare `sleep`"])
    print(
        f"| tool (`sleep {args.seconds}`, {args.rounds} rounds) | median wall s | added s (median) | added s (min) |"
    )
    print("|---|---|---|---|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) - bare:+.2f} "
            f"| {min(values) - bare:+.2f} |"
        )


if __name__ == "__main__":
    main()

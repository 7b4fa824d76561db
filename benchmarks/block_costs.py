"""What timing each block after a fused pass costs: `greenkd distill` with and without it, in one run.

Runs the default `greenkd distill --gpus 1` (fused) with `--block-costs` and `--no-block-costs` on
the same settings, the teacher trained and cached first, in alternating order over the rounds, and
prints the task phase, the fused pass itself (tasks.csv end - start), the time after the pass
inside the task phase (where the measurement runs), the whole run and its CPU seconds, with the
ratio of the two modes.

    python benchmarks/block_costs.py                 # the default run: VGG16 width 1/8, 6 epochs
    python benchmarks/block_costs.py --rounds 2 --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def distill(out: Path, args: argparse.Namespace, measure: bool) -> dict[str, float]:
    cmd = [
        *(sys.executable, "-m", "greenkd", "distill", "--quiet", "--gpus", "1"),
        *("--width", str(args.width), "--epochs", str(args.epochs)),
        *("--finetune-epochs", str(args.finetune_epochs), "--out", str(out)),
        "--block-costs" if measure else "--no-block-costs",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    assert len({r["fused_group"] for r in rows}) == 1, "expected one fused pass"
    pass_s = float(rows[0]["end"]) - float(rows[0]["start"])
    measured = [float(r["seconds_block"]) for r in rows if r["seconds_block"]]
    return {
        "tasks": summary["seconds"]["tasks"],
        "pass": pass_s,
        "after pass": summary["seconds"]["tasks"] - pass_s,
        "total": summary["seconds"]["total"],
        "CPU": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "blocks measured": len(measured),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="only the table")
    args = parser.parse_args()
    os.environ.setdefault("GREENKD_CACHE", str(Path(tempfile.gettempdir()) / "greenkd-bench"))
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say("teacher (cached after the first time) ...")
    teacher = [sys.executable, "-m", "greenkd", "teacher", "train", "--quiet"]
    subprocess.run([*teacher, "--width", str(args.width)], check=True)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for measure in (True, False) if r % 2 == 0 else (False, True):
                loads.append(os.getloadavg()[0])
                say(f"round {r + 1}/{args.rounds}: {'with' if measure else 'without'} ...")
                runs[measure].append(distill(Path(tmp) / f"{measure}-{r}", args, measure))

    def med(measure: bool, key: str) -> float:
        return statistics.median(run[key] for run in runs[measure])

    print(
        f"VGG16 width {args.width}, {args.epochs} epochs per layer, one fused pass on 1 device, "
        f"{args.rounds} round(s); load average before each run: "
        + ", ".join(f"{x:.2f}" for x in loads)
    )
    print(f"blocks measured per run: {int(med(True, 'blocks measured'))} (without: 0)")
    print(f"{'seconds':14}{'without':>9}{'with':>9}{'with/without':>14}")
    for key in ("tasks", "pass", "after pass", "total", "CPU"):
        without, with_ = med(False, key), med(True, key)
        ratio = f"{with_ / without:14.3f}" if without > 0.05 else f"{'—':>14}"
        print(f"{key:14}{without:9.1f}{with_:9.1f}{ratio}")


if __name__ == "__main__":
    main()

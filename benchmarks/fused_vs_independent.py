"""Fused teacher passes against independent layer tasks, side by side in one run.

Runs `greenkd distill --gpus 1 --fuse` and `--no-fuse` on the same settings
(the teacher is trained and cached first, so neither run pays for it), in
alternating order, and prints the time of the layer-task phase and of the
whole run for each mode, with their ratios and the per-layer accuracy gap.

    python benchmarks/fused_vs_independent.py --width 0.5 --n-train 2000 --epochs 2
    python benchmarks/fused_vs_independent.py            # the default tiny run (width 1/8)
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


def distill(out: Path, args: argparse.Namespace, fuse: bool) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "greenkd",
        "distill",
        "--quiet",
        "--gpus",
        "1",
        "--width",
        str(args.width),
        "--epochs",
        str(args.epochs),
        "--finetune-epochs",
        str(args.finetune_epochs),
        "--out",
        str(out),
        "--fuse" if fuse else "--no-fuse",
        "--no-block-costs",  # the pass alone: timing its blocks after it is no part of fusing
    ]
    if args.n_train:
        cmd += ["--n-train", str(args.n_train)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((out / "summary.json").read_text())
    # CPU seconds of the whole run (all its threads): less sensitive than wall time
    # to other work on a shared machine
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    summary["per_layer"] = {r["task"]: float(r["accuracy"]) for r in rows}
    # inside the task phase: block set-up and tracing, training steps, validation
    # (each row of a fused pass holds its even share, so the sums are the pass's)
    for phase in ("setup", "train", "eval"):
        summary["seconds"][f"task {phase}"] = sum(float(r[f"seconds_{phase}"]) for r in rows)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("GREENKD_CACHE", str(Path(tempfile.gettempdir()) / "greenkd-bench"))
    teacher = [
        sys.executable,
        "-m",
        "greenkd",
        "teacher",
        "train",
        "--quiet",
        "--width",
        str(args.width),
    ]
    if args.n_train:
        teacher += ["--n-train", str(args.n_train)]
    subprocess.run(teacher, check=True)
    times: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for fuse in (False, True) if r % 2 == 0 else (True, False):
                times[fuse].append(distill(Path(tmp) / f"{fuse}-{r}", args, fuse))

    def med(fuse: bool, key: str) -> float:
        return statistics.median(s["seconds"][key] for s in times[fuse])

    gap = max(
        abs(times[True][0]["per_layer"][k] - times[False][0]["per_layer"][k])
        for k in times[True][0]["per_layer"]
    )
    print(
        f"VGG16 width {args.width}, n_train {args.n_train or 'default'}, {args.epochs} epochs "
        f"per layer, {args.rounds} round(s), load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'seconds':16}{'independent':>11}{'fused':>10}{'fused/indep':>13}")
    for key in ("tasks", "task setup", "task train", "task eval", "total"):
        ind, fus = med(False, key), med(True, key)
        print(f"{key + ' wall':16}{ind:11.1f}{fus:10.1f}{fus / ind:13.3f}")
    ind = statistics.median(s["cpu_s"] for s in times[False])
    fus = statistics.median(s["cpu_s"] for s in times[True])
    print(f"{'total CPU':16}{ind:11.1f}{fus:10.1f}{fus / ind:13.3f}")
    print(f"largest per-layer top-1 gap between modes: {gap:.4f}")
    print(
        f"student top-1: independent {times[False][0]['student_accuracy']:.4f}, "
        f"fused {times[True][0]['student_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()

"""Compression on real and synthetic data: the paper's per-block threshold against target mode.

For each dataset, `greenkd distill` with greenkd's defaults (target mode: the set of blocks
that keeps the fine-tuned student within 1 point of the teacher) and with the paper's
acceptance (`--acceptance threshold --finetune-layers all`, every block that alone stays within
2 points, the whole student fine-tuned). The teacher is trained and cached first, so no run pays
for it. Prints params ratio, FLOPs ratio, top-1 of teacher and student, blocks kept and wall
time, one row per run.

    python benchmarks/compression.py                      # digits and the synthetic default
    python benchmarks/compression.py --datasets digits
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "target (default)": [],
    "paper threshold": ["--acceptance", "threshold", "--finetune-layers", "all"],
}


def distill(out: Path, dataset: str, extra: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "greenkd", "distill", "--quiet", "--dataset", dataset]
    started = time.perf_counter()
    subprocess.run([*cmd, "--out", str(out), *extra], check=True)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,synthetic")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="greenkd-compression-") as tmp:
        for dataset in args.datasets.split(","):
            subprocess.run(
                [sys.executable, "-m", "greenkd", "teacher", "train", "--dataset", dataset, "-q"],
                check=True,
            )
            for mode, extra in MODES.items():
                summary, wall = distill(Path(tmp) / f"{dataset}-{len(rows)}", dataset, extra)
                rows.append((dataset, mode, summary, wall))
    print(
        "| dataset | acceptance | blocks | params ratio | FLOPs ratio | teacher top-1 "
        "| student top-1 | change (points) | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset, mode, s, wall in rows:
        change = (s["student_accuracy"] - s["teacher_accuracy"]) * 100
        print(
            f"| {dataset} | {mode} | {len(s['accepted'])} of {s['n_targets']} "
            f"| {s['compression_params']:.2f}x | {s['compression_flops']:.2f}x "
            f"| {s['teacher_accuracy']:.2%} | {s['student_accuracy']:.2%} | {change:+.2f} "
            f"| {wall:.0f} |"
        )


if __name__ == "__main__":
    main()

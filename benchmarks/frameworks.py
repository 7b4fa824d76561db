"""TensorFlow against JAX under Keras 3: the same distillation, fused and independent, side by side.

For each framework the teacher is trained and cached first (`greenkd teacher train
--framework F`, so no run pays for it), then `greenkd distill --gpus 1` runs with `--fuse` and
`--no-fuse`, in alternating order over the rounds. Printed: the layer-task phase and the whole
run per framework and mode, JAX's time over TensorFlow's, fused over independent in each
framework, the CPU seconds, and the teacher's and student's top-1.

    python benchmarks/frameworks.py                      # the default run (VGG16 width 1/8)
    python benchmarks/frameworks.py --epochs 2 --n-train 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FRAMEWORKS = ("tensorflow", "jax")


def greenkd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "greenkd", *args], check=True)


def distill(out: Path, args: argparse.Namespace, framework: str, fuse: bool) -> dict:
    cmd = ["distill", "--quiet", "--gpus", "1", "--framework", framework,
           "--width", str(args.width), "--epochs", str(args.epochs),
           "--finetune-epochs", str(args.finetune_epochs), "--out", str(out),
           "--fuse" if fuse else "--no-fuse"]  # fmt: skip
    if args.n_train:
        cmd += ["--n-train", str(args.n_train)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    greenkd(*cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads((out / "summary.json").read_text())
    # CPU seconds of the whole run (all its threads): less sensitive than wall time to other
    # work on a shared machine
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("GREENKD_CACHE", str(Path(tempfile.gettempdir()) / "greenkd-bench"))
    for framework in FRAMEWORKS:
        teacher = [
            "teacher",
            "train",
            "--quiet",
            "--framework",
            framework,
            "--width",
            str(args.width),
        ]
        if args.n_train:
            teacher += ["--n-train", str(args.n_train)]
        greenkd(*teacher)
    runs: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = [(f, fuse) for f in FRAMEWORKS for fuse in (False, True)]
            for framework, fuse in order if r % 2 == 0 else reversed(order):
                out = Path(tmp) / f"{framework}-{fuse}-{r}"
                runs.setdefault((framework, fuse), []).append(distill(out, args, framework, fuse))

    def med(framework: str, fuse: bool, key: str) -> float:
        values = [s["cpu_s"] if key == "cpu" else s["seconds"][key] for s in runs[framework, fuse]]
        return statistics.median(values)

    print(
        f"VGG16 width {args.width}, n_train {args.n_train or 'default'}, {args.epochs} epochs "
        f"per layer, {args.finetune_epochs} fine-tune, {args.rounds} round(s), load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"{'seconds':14}{'TF indep':>10}{'TF fused':>10}{'JAX indep':>11}{'JAX fused':>11}"
          f"{'JAX/TF ind':>12}{'JAX/TF fus':>12}{'fus/ind TF':>12}{'fus/ind JAX':>13}")  # fmt: skip
    for key in ("tasks", "total", "cpu"):
        tf_i, tf_f = med("tensorflow", False, key), med("tensorflow", True, key)
        jx_i, jx_f = med("jax", False, key), med("jax", True, key)
        label = "total CPU" if key == "cpu" else f"{key} wall"
        print(f"{label:14}{tf_i:10.1f}{tf_f:10.1f}{jx_i:11.1f}{jx_f:11.1f}{jx_i / tf_i:12.2f}"
              f"{jx_f / tf_f:12.2f}{tf_f / tf_i:12.3f}{jx_f / jx_i:13.3f}")  # fmt: skip
    for framework in FRAMEWORKS:
        for fuse in (False, True):
            s = runs[framework, fuse][0]
            print(
                f"{framework:10} {'fused' if fuse else 'indep':5}: teacher "
                f"{s['teacher_accuracy']:.4f}, student {s['student_accuracy']:.4f}, "
                f"{len(s.get('accepted') or [])} blocks accepted"
            )


if __name__ == "__main__":
    main()

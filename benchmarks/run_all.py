"""Every greenkd benchmark, one after another, with one command.

    python benchmarks/run_all.py             # all of them (about 40 minutes on 2 cores)
    python benchmarks/run_all.py --only fused,schedules

Each benchmark measures its own ratios side by side within its run (see its
docstring); this runner only sequences them, prints the machine and its load
before each, and writes everything it printed to `benchmarks/last_run.md`, from
which BENCHMARKS.md is updated by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = {
    "fused": (
        "fused teacher passes vs independent tasks (default run, width 1/8)",
        ["fused_vs_independent.py"],
    ),
    "fused-wide": (
        "fused vs independent at width 1/2",
        [
            "fused_vs_independent.py",
            "--width",
            "0.5",
            "--n-train",
            "2000",
            "--epochs",
            "4",
            "--finetune-epochs",
            "1",
        ],
    ),
    "core-pair": (
        "the machine's own 2-core efficiency: one compute kernel alone vs on both cores",
        ["core_pair.py"],
    ),
    "workers": (
        "1 vs 2 CPU workers on the default (fused) run",
        ["parallel_workers.py", "--sched", "binpack,opt"],
    ),
    "workers-independent": (
        "1 vs 2 CPU workers, one task at a time (--no-fuse), and predicted makespans",
        ["parallel_workers.py", "--sched", "ws,binpack,rr", "--distill-args=--no-fuse"],
    ),
    "schedules": (
        "rr, binpack, ws, opt predicted makespans vs bound and optimum",
        ["schedule_makespans.py"],
    ),
    "first-steps": (
        "a block's first step built before tracing or not; a worker's share of the stream",
        ["first_steps.py"],
    ),
    "finetune-step": (
        "the fine-tune's step with Keras's batch norms against the fused kernel",
        ["finetune_step.py"],
    ),
    "finetune-rows": (
        "the fused fine-tune step at 64, 32, 16 and 1 rows: its fixed cost, the 2-worker ceiling",
        ["finetune_step.py", "--rows", "64,32,16,1"],
    ),
    "jax-depthwise": (
        "JAX on the CPU: blocks with XLA's grouped convolution against shifted products",
        ["jax_depthwise.py"],
    ),
    "synthetic-data": (
        "drawing the synthetic images against fce64b4's drawing (same bytes)",
        ["synthetic_data.py", "--rev", "fce64b4"],
    ),
    "profiler-startup": ("profiler start-up added to `sleep 2`", ["profiler_startup.py"]),
    "profiler-overhead": ("profiler CPU and jitter over a 60 s sleep", ["profiler_overhead.py"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", default=str(HERE / "last_run.md"))
    args = parser.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: use {', '.join(BENCHMARKS)}")
    lines = [
        f"# greenkd benchmarks, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "",
    ]
    failed = []
    for name in chosen:
        title, argv = BENCHMARKS[name]
        command = [sys.executable, str(HERE / argv[0]), *argv[1:]]
        header = (
            f"## {name}: {title}\n\n`{' '.join(['python', f'benchmarks/{argv[0]}', *argv[1:]])}`"
            f" (load average before: {os.getloadavg()[0]:.2f})\n"
        )
        print(header, flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        print(done.stdout, flush=True)
        if done.returncode != 0:
            failed.append(name)
            print(done.stderr[-2000:], file=sys.stderr)
        lines += [
            header,
            "```text",
            done.stdout.rstrip(),
            "```",
            f"({time.perf_counter() - started:.0f} s, exit code {done.returncode})",
            "",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

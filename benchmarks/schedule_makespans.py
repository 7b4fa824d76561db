"""Predicted makespans of rr, binpack, ws and opt against the lower bound and the optimum.

    python benchmarks/schedule_makespans.py [--max-devices 8] [--time-limit 5]

Task lists: the VGG16 reference times (benchmarks/schedule_vgg16_times.csv, derived
from issue 7's figures), the same run fused (prefix shares from greenkd's analytic
model), a ResNet50-like list (17 near-equal tasks), and two random lists (13 and 40
tasks). Every ratio in a row comes from the same run; `opt s` is the optimiser's
wall time for that row and `proven` whether it proved optimality within its cap.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from greenkd.schedule import TaskCost, analytic_costs, load_timings_file, lower_bound, plan

VGG16_CSV = Path(__file__).with_name("schedule_vgg16_times.csv")
VGG16_CONVS = [(3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8),
               (256, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4), (512, 512, 4),
               (512, 512, 2), (512, 512, 2), (512, 512, 2)]  # fmt: skip


def vgg16_fused() -> list[TaskCost]:
    """The reference times, each split into prefix and own part by the analytic model's shares."""
    targets, prefix = [], 0.0
    for i, (cin, cout, side) in enumerate(VGG16_CONVS):
        prefix += 2 * side * side * 9 * cin * cout
        targets.append({
            "name": str(i),
            "prefix_flops": prefix,
            "block_flops": 2 * side * side * (9 * cin + cin * cout),
            "input_elements": side * side * cin,
            "output_elements": side * side * cout,
        })  # fmt: skip
    shares = [c.prefix_seconds / c.seconds for c in analytic_costs(targets)]
    measured = load_timings_file(VGG16_CSV)
    return [
        TaskCost(c.name, c.seconds, c.seconds * s) for c, s in zip(measured, shares, strict=True)
    ]


def task_lists() -> list[tuple[str, list[TaskCost], bool]]:
    rng = random.Random(2024)
    resnet = [TaskCost(f"conv{i}", 100 * rng.uniform(0.95, 1.05)) for i in range(17)]
    random13 = [TaskCost(f"t{i}", rng.lognormvariate(5, 0.6)) for i in range(13)]
    random40 = [TaskCost(f"t{i}", rng.uniform(10, 500)) for i in range(40)]
    return [
        ("VGG16 reference", load_timings_file(VGG16_CSV), False),
        ("VGG16 fused", vgg16_fused(), True),
        ("ResNet50-like, 17 near-equal", resnet, False),
        ("random lognormal, 13", random13, False),
        ("random uniform, 40", random40, False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-devices", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=5.0)
    args = parser.parse_args()
    print(
        "| tasks | n | bound s | opt s | opt/bound | rr/opt | binpack/opt | ws/opt | proven | opt time s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, costs, fused in task_lists():
        for n in range(1, args.max_devices + 1):
            t0 = time.perf_counter()
            best = plan(costs, n, "opt", fused=fused, time_limit_s=args.time_limit)
            solve_s = time.perf_counter() - t0
            ratios = [
                plan(costs, n, policy, fused=fused).predicted_makespan_s / best.predicted_makespan_s
                for policy in ("rr", "binpack", "ws")
            ]
            bound = lower_bound(costs, n, fused)
            print(
                f"| {label} | {n} | {bound:.1f} | {best.predicted_makespan_s:.1f} | "
                f"{best.predicted_makespan_s / bound:.3f} | "
                + " | ".join(f"{r:.3f}" for r in ratios)
                + f" | {'yes' if best.optimal else 'no'} | {solve_s:.3f} |"
            )


if __name__ == "__main__":
    main()

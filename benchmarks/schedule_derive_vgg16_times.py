"""Derive a plausible list of 13 VGG16 per-layer task times from the four figures issue 7 quotes.

The issue quotes, for the reference code's one-GPU per-layer times of VGG16 (13 tasks):
total 3554 s; on 4 devices round robin 1107 s, worst-fit decreasing 972 s, optimum 897 s
(lower bound 888 s). It does not list the 13 times. This script searches for integer
times that reproduce all four figures exactly, starting from a shape that follows the
issue's remark (the early layers, with the largest activations and the shortest teacher
prefixes, took longest): t = c + a * activation elements + b * prefix FLOPs, fitted by
eye, then nudged by simulated annealing (transfers between two tasks keep the total).
The optimum of the result is re-checked by an exhaustive search over all 4-way
partitions that does not use greenkd's optimiser.

    python benchmarks/schedule_derive_vgg16_times.py [--write]

`--write` rewrites benchmarks/schedule_vgg16_times.csv.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from greenkd.schedule import TaskCost, plan

NAMES = [
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
]  # fmt: skip
# VGG16 (CIFAR variant, 32 px): (in channels, out channels, side) of the 13 3x3 convolutions.
CONVS = [(3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8), (256, 256, 8),
         (256, 256, 8), (256, 512, 4), (512, 512, 4), (512, 512, 4), (512, 512, 2), (512, 512, 2),
         (512, 512, 2)]  # fmt: skip
TOTAL_S, RR4_S, WFD4_S, OPT4_S = 3554, 1107, 972, 897
OUT = Path(__file__).with_name("schedule_vgg16_times.csv")


def prior_shape() -> list[float]:
    """Activation-weighted prior: c + a * (in + out elements) + b * prefix MFLOPs, scaled to the total."""
    shape, prefix_mflops = [], 0.0
    for cin, cout, side in CONVS:
        prefix_mflops += 2 * side * side * 9 * cin * cout / 1e6
        elements = side * side * (cin + cout)
        shape.append(120 + 0.0035 * elements + 0.1 * prefix_mflops)
    scale = TOTAL_S / sum(shape)
    return [v * scale for v in shape]


def figures(times: list[int]) -> tuple[float, float, float]:
    costs = [TaskCost(n, float(t)) for n, t in zip(NAMES, times, strict=True)]
    return tuple(plan(costs, 4, p).predicted_makespan_s for p in ("rr", "binpack", "opt"))  # type: ignore[return-value]


def exhaustive_optimum(times: list[int], n: int = 4) -> int:
    """Best makespan over every n-way partition, by subset DP (no greenkd code)."""
    m = len(times)
    sums = [0] * (1 << m)
    for mask in range(1, 1 << m):
        low = mask & -mask
        sums[mask] = sums[mask ^ low] + times[low.bit_length() - 1]
    best = sums[:]  # best makespan of `mask` on one device
    for _ in range(n - 1):
        nxt = best[:]
        for mask in range(1, 1 << m):
            sub = mask
            while sub:  # sub on one more device, the rest on the previous ones
                val = max(sums[sub], best[mask ^ sub])
                if val < nxt[mask]:
                    nxt[mask] = val
                sub = (sub - 1) & mask
        best = nxt
    return best[(1 << m) - 1]


def violation(times: list[int], prior: list[float]) -> float:
    rr, wfd, opt = figures(times)
    miss = abs(rr - RR4_S) + abs(wfd - WFD4_S) + abs(opt - OPT4_S)
    # The early layers took longest (issue 5): block 1 above every later layer.
    order_miss = sum(max(0, t - min(times[:2])) for t in times[2:])
    shape = sum(abs(math.log(t / p)) for t, p in zip(times, prior, strict=True))
    return 10 * (miss + order_miss) + 5 * shape


def search(seed: int = 0, steps: int = 20000) -> list[int]:
    rng = random.Random(seed)
    prior = prior_shape()
    times = [round(v) for v in prior]
    times[0] += TOTAL_S - sum(times)
    score = violation(times, prior)
    temperature = 20.0
    for _ in range(steps):
        i, j = rng.sample(range(len(times)), 2)
        delta = rng.randint(1, 25)
        if times[i] - delta < 30:
            continue
        cand = times.copy()
        cand[i] -= delta
        cand[j] += delta
        s = violation(cand, prior)
        if s <= score or rng.random() < math.exp((score - s) / temperature):
            times, score = cand, s
        temperature = max(0.05, temperature * 0.9995)
    return times


def main() -> None:
    times = search()
    rr, wfd, opt = figures(times)
    exact = exhaustive_optimum(times)
    print("times:", times)
    print(
        f"sum {sum(times)}  rr4 {rr:.0f}  wfd4 {wfd:.0f}  opt4 {opt:.0f}  exhaustive {exact}  bound {sum(times) / 4}"
    )
    ok = (sum(times), rr, wfd, opt, exact) == (TOTAL_S, RR4_S, WFD4_S, OPT4_S, OPT4_S)
    if not ok:
        sys.exit("search did not reproduce all four figures; change the seed or the prior")
    if "--write" in sys.argv:
        header = (
            "# Plausible VGG16 (CIFAR, 32 px) one-GPU per-layer task times, derived by\n"
            "# benchmarks/schedule_derive_vgg16_times.py: issue 7 quotes only aggregate figures of the\n"
            "# reference runs (13 tasks, total 3554 s; on 4 devices round robin 1107 s, worst-fit\n"
            "# decreasing 972 s, optimum 897 s, bound 888 s). Searched from an activation-weighted\n"
            "# shape (early layers longest, as the issue says) until all four figures held exactly;\n"
            "# the optimum was re-checked by exhaustive search. Not measured data.\n"
        )
        rows = "".join(f"{n},{t}\n" for n, t in zip(NAMES, times, strict=True))
        OUT.write_text(header + "task,seconds\n" + rows)
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

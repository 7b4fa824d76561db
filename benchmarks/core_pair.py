"""The machine's own 2-core efficiency: one fixed single-threaded compute kernel on one core alone,
then on two cores at once, alternating; efficiency = alone / together (1.0: the second core costs
the first nothing).

Every parallel-efficiency figure of `parallel_workers.py` is bounded by this number: if two copies
of the same pure compute slow each other down on this VM (a shared host, its neighbours, turbo
budgets, two vCPUs that are one physical core's two threads: `lscpu` inside a VM cannot tell),
no code of ours can get past it. The kernel is a float32 256x256 matrix product (numpy, one BLAS
thread), the kind of dense arithmetic a convolution's training step runs, small enough to stay in
each core's L2; each process is pinned to its core, loads numpy, then waits on its stdin so that
the two start their timed loops together.

    python benchmarks/core_pair.py [--repeat 10] [--seconds 1.5] [--cores 0,1]

`parallel_workers.py` runs it before every distillation (`probe`), and prints each pair's figure
beside its efficiency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

KERNEL = r"""
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import numpy as np
a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
b = a.T.copy()
n = int(sys.argv[2])
a @ b
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
for _ in range(n):
    a @ b
print(time.perf_counter() - started, flush=True)
"""
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def _timed(cores: list[int], n: int) -> list[float]:
    """Seconds of n products in one process per core, the loops started together."""
    env = {**os.environ, **ONE_THREAD}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL, str(core), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for core in cores
    ]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("the kernel process did not start")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    seconds = [float(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    return seconds


def calibrate(core: int, seconds: float) -> int:
    """Products that take about `seconds` on one core alone, now."""
    n = 50
    while True:
        took = _timed([core], n)[0]
        if took >= seconds / 4:
            return max(1, round(n * seconds / took))
        n *= 4


def probe(cores: tuple[int, int] = (0, 1), rounds: int = 2, seconds: float = 1.5) -> dict:
    """The machine's 2-core efficiency now: `rounds` x (each core alone, then both at once).

    alone: each core's time alone; together: the slower of the two at once (a parallel job ends
    with its slower half); efficiency = mean alone / mean together."""
    n = calibrate(cores[0], seconds)
    alone, together = [], []
    for _ in range(rounds):
        alone += [_timed([core], n)[0] for core in cores]
        together.append(max(_timed(list(cores), n)))
    return {
        "products": n,
        "alone_s": alone,
        "together_s": together,
        "efficiency": statistics.mean(alone) / statistics.mean(together),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="probes, one after the other")
    parser.add_argument("--seconds", type=float, default=1.5, help="one timed loop, about")
    parser.add_argument("--cores", default="0,1", help="the two cores")
    args = parser.parse_args()
    first, second = (int(c) for c in args.cores.split(","))
    print(f"{'probe':>5} {'load':>5} {'alone s (each core, 2 rounds)':>32} {'together s':>12} "
          f"{'efficiency':>10}")  # fmt: skip
    effs = []
    for i in range(args.repeat):
        load = os.getloadavg()[0]
        p = probe((first, second), seconds=args.seconds)
        effs.append(p["efficiency"])
        print(f"{i:>5} {load:5.2f} {' '.join(f'{s:.3f}' for s in p['alone_s']):>32} "
              f"{' '.join(f'{s:.3f}' for s in p['together_s']):>12} {p['efficiency']:10.3f}",
              flush=True)  # fmt: skip
        time.sleep(0.5)
    print(f"median of {len(effs)}: {statistics.median(effs):.3f} "
          f"(min {min(effs):.3f}, max {max(effs):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()

"""What a process pays before its first step: a block's first `train_on_batch`, built or not
before tracing, and a worker's share of the training stream. Ratios side by side in one run.

1. **First step, built before tracing or not.** Keras on TensorFlow (no distribution strategy)
   creates the optimizer's and metrics' variables inside the first traced step, and a
   `tf.function` that creates variables is traced twice; `greenkd.framework.build_before_tracing`
   creates them first. Each measurement is a fresh process (traces are per process) bound to one
   core: a greenkd-sized block (six depthwise-separable layers with batch norm on 16x16x8
   activations), RMSprop and MSE, metrics on or off, the first `train_on_batch` timed (the build
   included where it is done), then a second one (the steady step, which must not change). The
   two variants alternate, `--repeat` times each.
2. **A worker's share of the training stream.** The default run's stream (4000 synthetic images,
   batch 64, flips and crops) read alone on one core, CPU ms per batch for the whole batch and for
   one worker's half (`shard=(0, 2)`): with the rows picked before any image is read the half
   costs about half.

    python benchmarks/first_steps.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD_STEP = r"""
import json, sys, time
import numpy as np
from greenkd.framework import build_before_tracing, keras
built, metrics = sys.argv[1] == "built", sys.argv[2] == "metrics"
keras.utils.set_random_seed(0)
inputs = keras.Input((16, 16, 8))
x = inputs
for _ in range(6):
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.ReLU()(x)
model = keras.Model(inputs, x)
rng = np.random.default_rng(0)
xb = rng.random((32, 16, 16, 8), np.float32)
yb = rng.random((32, 16, 16, 8), np.float32)
model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="mse",
              metrics=["mae"] if metrics else None)
t0 = time.perf_counter()
if built:
    build_before_tracing(model, (xb, yb))
model.train_on_batch(xb, yb)
t1 = time.perf_counter()
model.train_on_batch(xb, yb)
print(json.dumps({"first": t1 - t0, "step": time.perf_counter() - t1}))
"""

CHILD_STREAM = r"""
import json, time
from greenkd import data
from greenkd.config import RunConfig
cfg = RunConfig()
source = data.load("synthetic", n_train=4000, n_val=16)
out = {}
for size in (1, 2):
    it = iter(data.without_autotune_model(
        data.training_batches(source, cfg, "caffe", shard=(0, size))))
    next(it)
    started = time.process_time()
    for _ in range(300):
        next(it)
    out[size] = (time.process_time() - started) / 300 * 1e3
print(json.dumps(out))
"""


def child(code: str, *args: str) -> dict:
    """One fresh process on one core (the last the run may use), its JSON line back."""
    core = str(max(os.sched_getaffinity(0)))
    done = subprocess.run(
        ["taskset", "-c", core, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    print("\nfirst train_on_batch of a small block (fresh process each, one core)")
    print(f"{'metrics':8} {'variant':8} {'first s (each run)':32} {'median':>7} {'step ms':>8}")
    for metrics in ("none", "metrics"):
        runs: dict[str, list[dict]] = {"plain": [], "built": []}
        for _ in range(args.repeat):
            for variant in runs:  # alternate, so drift hits both
                runs[variant].append(child(CHILD_STEP, variant, metrics))
        medians = {}
        for variant, rows in runs.items():
            firsts = [r["first"] for r in rows]
            medians[variant] = statistics.median(firsts)
            step = statistics.median(r["step"] for r in rows) * 1e3
            each = ", ".join(f"{f:.2f}" for f in firsts)
            print(f"{metrics:8} {variant:8} {each:32} {medians[variant]:7.2f} {step:8.1f}")
        print(f"{metrics:8} built / plain: {medians['built'] / medians['plain']:.2f}", flush=True)
    started = time.perf_counter()
    stream = child(CHILD_STREAM)
    whole, half = stream["1"], stream["2"]
    print(
        f"\ntraining stream on one core: whole batch {whole:.2f} ms, one worker's half "
        f"{half:.2f} ms (x{half / whole:.2f}; {time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()

"""JAX on the CPU: the blocks' depthwise convolutions as Keras's op (XLA's grouped convolution)
against greenkd's shifted products (`greenkd.framework.depthwise_conv`), side by side.

In one one-core JAX process (the XLA flags of a one-core worker), for the default run's model
(VGG16 at `--width`, 32x32 inputs) and each distinct shape of its layer tasks: the task's block
built with Keras's `DepthwiseConv2D` and with `ShiftedDepthwiseConv2D` (everything else the
same: weights, batch, RMSprop, MSE), the first `train_on_batch` (trace and compile), the mean of
`--steps` more, and a forward pass (`predict_on_batch`, as a spliced evaluation runs it). The two
variants take turns per shape, so the machine's drift hits both alike. Printed: milliseconds and
shifted over Keras for each.

    python benchmarks/jax_depthwise.py [--width 0.125] [--batch 64] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import contextlib, json, sys, time
import numpy as np
from greenkd import models
from greenkd.distill import targets as tg
from greenkd.framework import fast_layers, keras

width, batch, steps = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
seen, rows = set(), []
for t in tg.find(models.vgg16(width=width)):
    key = (t.input_shape, t.output_shape)
    if key in seen:
        continue
    seen.add(key)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *t.input_shape)).astype("float32")
    y = rng.normal(size=(batch, *t.output_shape)).astype("float32")
    row = {"task": t.name, "shape": "x".join(map(str, t.input_shape))}
    for variant, shifted in (("keras", False), ("shifted", True)):
        block = tg.make_block(t, "a", seed=1)  # Keras's own layers
        block.compile(keras.optimizers.RMSprop(1e-3), "mse")
        # fast_layers: the depthwise layers shifted (batch norm is Keras's own under JAX either
        # way), as in a task's block (make_block for_training)
        with fast_layers(block) if shifted else contextlib.nullcontext():
            t0 = time.perf_counter()
            block.train_on_batch(x, y)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(steps):
                block.train_on_batch(x, y)
            step = (time.perf_counter() - t0) / steps
            block.predict_on_batch(x)
            t0 = time.perf_counter()
            for _ in range(steps):
                block.predict_on_batch(x)
            forward = (time.perf_counter() - t0) / steps
        row[variant] = {"first": first, "step": step, "forward": forward}
    rows.append(row)
print(json.dumps(rows))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "CUDA_VISIBLE_DEVICES": "",
        # a one-core worker's XLA client (greenkd.devices.framework_env)
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    }
    core = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as cache:  # an empty JAX compilation cache: all compile
        env["GREENKD_CACHE"] = cache
        done = subprocess.run(
            ["taskset", "-c", str(core), sys.executable, "-c", CHILD,
             str(args.width), str(args.batch), str(args.steps)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"VGG16 width {args.width}, batch {args.batch}, one core, JAX on the CPU; ms")
    print("| task | input | first step K / S | step K / S | S/K | forward K / S | S/K |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k, s = r["keras"], r["shifted"]
        print(
            f"| {r['task']} | {r['shape']} | {k['first'] * 1e3:.0f} / {s['first'] * 1e3:.0f} "
            f"| {k['step'] * 1e3:.1f} / {s['step'] * 1e3:.1f} | {s['step'] / k['step']:.2f} "
            f"| {k['forward'] * 1e3:.1f} / {s['forward'] * 1e3:.1f} "
            f"| {s['forward'] / k['forward']:.2f} |"
        )
    totals = {
        v: {m: sum(r[v][m] for r in rows) for m in ("first", "step", "forward")}
        for v in ("keras", "shifted")
    }
    print(
        "all shapes: first steps {:.2f}x, steps {:.2f}x, forward {:.2f}x (shifted over Keras)".format(
            *(totals["shifted"][m] / totals["keras"][m] for m in ("first", "step", "forward"))
        )
    )


if __name__ == "__main__":
    main()

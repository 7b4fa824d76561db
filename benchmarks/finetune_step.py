"""The fine-tune's step with Keras's batch norms against the fused kernel, side by side.

The default student keeps 48 batch norms (the teacher's and its blocks'), all training under
`--finetune-batch-norm batch`. Keras 3 builds a training batch norm from separate moment,
normalise and update ops; `greenkd.distill.targets.fused_batch_norms` runs them through
TensorFlow's FusedBatchNormV3 for the length of a fine-tune (same variables, same formula).

Each measurement is a fresh process bound to one core and set up as a one-core worker (one
intra-op and one inter-op thread): the default run's teacher (cached, as `greenkd distill` leaves
it; trained first if missing), every block spliced in (fresh blocks: the graph, not the weights,
sets the cost), the data-parallel fine-tune's own step (`dataparallel._Step`) on one worker's half
of the default batch. It times the first gradient call (tracing and the first run) and the median
of the next 29 steps (batches read beforehand). The two variants alternate, `--repeat` times each.

    python benchmarks/finetune_step.py [--repeat 3] [--shard 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill.dataparallel import _Step
from greenkd.distill.setup import prepare
from greenkd.distill.targets import fused_batch_norms, make_block

variant, size = sys.argv[1], int(sys.argv[2])
cfg = RunConfig()
setup = prepare(cfg)
blocks = {t.name: make_block(t, cfg.block, seed=t.seed_offset).get_weights()
          for t in setup.targets}
student = asm.assemble(setup.teacher.model, setup.targets, blocks, cfg.block)
asm.prepare_for_finetune(student, [t.name for t in setup.targets], cfg)
steps = setup.source.steps("train", cfg.batch_size)
train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, seed_offset=1,
                                  shard=(0, size))
stream = iter(data_mod.without_autotune_model(train))
batches = [next(stream) for _ in range(30)]
fused = fused_batch_norms(student) if variant == "fused" else None
if fused is not None:
    fused.__enter__()
step = _Step(student, cfg, steps, False)
t0 = time.perf_counter()
step.gradients(*batches[0])
first = time.perf_counter() - t0
times = []
for x, y in batches[1:]:
    t0 = time.perf_counter()
    step.gradients(x, y)
    times.append(time.perf_counter() - t0)
print(json.dumps({"first": first, "step": float(np.median(times))}))
"""


def measure(variant: str, shard: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", CHILD, variant, str(shard)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="processes per variant")
    parser.add_argument("--shard", type=int, default=2, help="workers the batch is split over")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"keras": [], "fused": []}
    for i in range(args.repeat):
        for variant in runs:
            runs[variant].append(measure(variant, args.shard))
            r = runs[variant][-1]
            print(f"  {i}: {variant:<6} first {r['first']:.2f} s, step {1000 * r['step']:.1f} ms")
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("first", "step")}
           for v, rs in runs.items()}  # fmt: skip
    print(f"\nbatch norms     first call   step (1/{args.shard} of a batch)")
    for v, m in med.items():
        print(f"{v:<14} {m['first']:>8.2f} s {1000 * m['step']:>10.1f} ms")
    print(
        f"fused / keras  {med['fused']['first'] / med['keras']['first']:>8.2f}"
        f" {med['fused']['step'] / med['keras']['step']:>12.2f}"
    )


if __name__ == "__main__":
    main()

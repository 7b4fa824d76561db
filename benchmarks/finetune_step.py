"""The fine-tune's step with Keras's batch norms against the fused kernel, side by side.

The default student keeps 48 batch norms (the teacher's and its blocks'), all training under
`--finetune-batch-norm batch`. Keras 3 builds a training batch norm from separate moment,
normalise and update ops; `greenkd.framework.fast_layers` runs them through
TensorFlow's FusedBatchNormV3 for the length of a fine-tune (same variables, same formula).

Each measurement is a fresh process bound to one core and set up as a one-core worker (one
intra-op and one inter-op thread): the default run's teacher (cached, as `greenkd distill` leaves
it; trained first if missing), every block spliced in (fresh blocks: the graph, not the weights,
sets the cost), the data-parallel fine-tune's own step (`dataparallel._Step`) on one worker's half
of the default batch. It times the first gradient call (tracing and the first run) and the median
of the next 29 steps (batches read beforehand). The two variants alternate, `--repeat` times each.
`--model resnet50` (or `vgg16`) times a fresh zoo teacher's `train_on_batch` instead (11 steps
after the first), compiled as its training (`models.train_teacher`, Keras's `fit`) compiles it:
the default VGG16 has no batch norm, ResNet50 has 53.

    python benchmarks/finetune_step.py [--repeat 3] [--shard 2] [--model student|resnet50|vgg16]

`--rows 64,32,16,1` instead times the fused step of the default student at those batch rows in one
process (each traced first, then the sizes taking turns, 25 rounds: the VM's drift hits every size
alike) and fits time = fixed + per row x rows: the fixed part is what every worker of a
data-parallel fine-tune pays whole at each step (the step's graph ops, whatever its batch), and
t(64) / (2 x t(32)) the best efficiency two workers can have in the gradients of the default
batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# set up as a one-core worker, with what both child scripts use; default_student(setup, cfg) is the
# default student with fresh blocks spliced in (the graph, not the weights, sets a step's cost)
ONE_CORE = r"""
import json, statistics, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill.dataparallel import _Step
from greenkd.distill.setup import prepare
from greenkd.distill.targets import make_block
from greenkd.framework import build_before_tracing, fast_layers, keras

def default_student(setup, cfg):
    blocks = {t.name: make_block(t, cfg.block, seed=t.seed_offset).get_weights()
              for t in setup.targets}
    model = asm.assemble(setup.teacher.model, setup.targets, blocks, cfg.block)
    asm.prepare_for_finetune(model, [t.name for t in setup.targets], cfg)
    return model
"""

CHILD = (
    ONE_CORE
    + r"""

from greenkd import models

variant, size, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = RunConfig() if what == "student" else RunConfig(model=what)
setup = prepare(cfg) if what == "student" else None
source = setup.source if setup else data_mod.load_for(cfg)
mode = setup.preprocess_mode if setup else models.preprocess_mode(cfg)
steps = source.steps("train", cfg.batch_size)
train = data_mod.training_batches(source, cfg, mode, seed_offset=1, shard=(0, size))
stream = iter(data_mod.without_autotune_model(train))
batches = [next(stream) for _ in range(30 if what == "student" else 12)]
if what == "student":
    model = default_student(setup, cfg)
else:  # a fresh zoo teacher, compiled as models.train_teacher compiles it
    model = models.build(cfg.model, width=cfg.width, image_size=cfg.image_size,
                         num_classes=source.num_classes, seed=cfg.seed)
    model.compile(optimizer=keras.optimizers.Adam(models.teacher_lr(cfg)),
                  loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"],
                  jit_compile=cfg.keras_jit())
    build_before_tracing(model, train)
fused = fast_layers(model) if variant == "fused" else None
if fused is not None:
    fused.__enter__()
if what == "student":
    call = _Step(model, cfg, steps, False).gradients
else:
    call = model.train_on_batch
t0 = time.perf_counter()
call(*batches[0])
first = time.perf_counter() - t0
times = []
for x, y in batches[1:]:
    t0 = time.perf_counter()
    call(x, y)
    times.append(time.perf_counter() - t0)
print(json.dumps({"first": first, "step": float(np.median(times))}))
"""
)


ROWS = (
    ONE_CORE
    + r"""
rows = [int(r) for r in sys.argv[1].split(",")]
cfg = RunConfig()
setup = prepare(cfg)
steps = setup.source.steps("train", cfg.batch_size)
train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, seed_offset=1)
x, y = next(iter(data_mod.without_autotune_model(train)))
model = default_student(setup, cfg)
with fast_layers(model):
    step = _Step(model, cfg, steps, False)
    for r in rows:
        step.gradients(x[:r], y[:r])
    graph = step._gradients.get_concrete_function(step.weights, x[:rows[0]], y[:rows[0]]).graph
    times = {r: [] for r in rows}
    for _ in range(25):
        for r in rows:
            t0 = time.perf_counter()
            step.gradients(x[:r], y[:r])
            times[r].append(time.perf_counter() - t0)
print(json.dumps({"ops": len(graph.get_operations()),
                  "step": {r: statistics.median(t) for r, t in times.items()}}))
"""
)


def _child(script: str, *args: str) -> dict:
    """Run a child script on core 0; the JSON its last line prints."""
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def by_rows(rows: str) -> None:
    """The fused step at several batch sizes in one one-core process: its fixed cost per step."""
    result = _child(ROWS, rows)
    step = {int(r): s for r, s in result["step"].items()}
    sizes = sorted(step)
    slope, fixed = statistics.linear_regression(sizes, [step[r] for r in sizes])
    print(f"the default student's fused fine-tune step, one core ({result['ops']} graph ops):")
    for r in sizes:
        print(f"  {r:>3} rows: {1000 * step[r]:6.1f} ms")
    print(f"fit: {1000 * fixed:.1f} ms fixed + {1000 * slope:.3f} ms a row")
    if 64 in step and 32 in step:
        print(
            f"2 workers on the batch of 64: t(64) / (2 x t(32)) = {step[64] / (2 * step[32]):.3f}"
        )


def measure(variant: str, shard: int, what: str) -> dict:
    return _child(CHILD, variant, str(shard), what)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="processes per variant")
    parser.add_argument("--shard", type=int, default=2, help="workers the batch is split over")
    parser.add_argument(
        "--model",
        choices=("student", "resnet50", "vgg16"),
        default="student",
        help="the fine-tune's step on the default student, or `train_on_batch` of a fresh zoo "
        "teacher (the default's settings otherwise) as its training compiles it",
    )
    parser.add_argument(
        "--rows", default=None, help="e.g. 64,32,16,1: the fused step's fixed cost (see above)"
    )
    args = parser.parse_args()
    if args.rows:
        by_rows(args.rows)
        return
    runs: dict[str, list[dict]] = {"keras": [], "fused": []}
    for i in range(args.repeat):
        for variant in runs:
            runs[variant].append(measure(variant, args.shard, args.model))
            r = runs[variant][-1]
            print(f"  {i}: {variant:<6} first {r['first']:.2f} s, step {1000 * r['step']:.1f} ms")
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("first", "step")}
           for v, rs in runs.items()}  # fmt: skip
    print(f"\n{args.model}: batch norms   first call   step (1/{args.shard} of a batch)")
    for v, m in med.items():
        print(f"{v:<14} {m['first']:>8.2f} s {1000 * m['step']:>10.1f} ms")
    print(
        f"fused / keras  {med['fused']['first'] / med['keras']['first']:>8.2f}"
        f" {med['fused']['step'] / med['keras']['step']:>12.2f}"
    )


if __name__ == "__main__":
    main()

"""Each block's own step cost inside a fused pass, and the shared trunk's (Fig. 5c/d for fused runs).

A fused pass trains its blocks in one compiled step behind one teacher forward (the trunk), so its
wall time says nothing about any one block. After the pass, on a few batches of the same stream:

- the trunk: the teacher prefix that yields every block's input/output pair, forward only, timed
  per batch;
- each block: one training step of a copy of the block (same architecture, fresh weights and
  optimizer, so the trained block is untouched) on that block's own input and target, timed per
  batch.

Both are compiled as the pass's own steps are (the run's `--jit` policy), so their costs compare
with each other and with the pass. Every timed call ends by reading its result back to the host
(`predict_on_batch`'s arrays, `train_on_batch`'s float loss), which waits for the device, so an
asynchronous GPU queue does not hide the work. The first call of each is a warm-up (tracing,
compiling) and is not counted; the median of the timed batches is kept. The warm-ups are most of
the measurement's own cost: about half a CPU second per block on a 2-core Xeon, whatever the data
size or epochs (BENCHMARKS.md, "Per-block costs of a fused pass"); `--no-block-costs` skips it. Only Keras 3's framework-neutral API is used (another
backend runs the same code). The costs are per step: `seconds_block` and `seconds_trunk` in
tasks.csv scale them by the steps the pass trained (docs/file-formats.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from greenkd.framework import build_before_tracing, keras

# Timed batches per block after one warm-up: enough for a stable median, a second or so per pass.
TIMED_BATCHES = 3


@dataclass(frozen=True)
class BlockCosts:
    """Seconds per training step: the shared trunk's (teacher forward) and each block's own."""

    trunk_step_s: float
    block_step_s: list[float]
    batches: int  # timed batches behind each median


def _median_seconds(call, batches: Sequence) -> float:
    call(batches[0])  # warm-up: tracing and compiling are not a step's cost
    times = []
    for batch in batches[1:] or batches[:1]:
        started = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - started)
    return float(statistics.median(times))


def measure_block_costs(
    pairs: keras.Model,
    blocks: Sequence[keras.Model],
    batches: Sequence,
    jit: bool | str = False,
) -> BlockCosts:
    """Time the trunk (`pairs`: image -> [in_1, out_1, ...]) and one training step of each block.

    `batches`: image batches of the pass's own stream, the first a warm-up (`TIMED_BATCHES` + 1);
    `jit`: the run's `jit_compile` (greenkd.distill.train.jit_compile).
    """
    if not batches:
        raise ValueError("no training batch to time the blocks on")
    if not pairs.compiled:  # predict only: the compiled forward the pass runs, not eager calls
        pairs.compile(jit_compile=jit)

    def trunk(batch):
        return list(pairs.predict_on_batch(batch))

    trunk_s = _median_seconds(trunk, batches)
    acts = [trunk(batch) for batch in batches]
    costs = []
    for i, block in enumerate(blocks):
        copy = keras.models.clone_model(block)
        copy.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="mse", jit_compile=jit)
        pairs_i = [(a[2 * i], a[2 * i + 1]) for a in acts]
        build_before_tracing(copy, pairs_i[0])  # the warm-up then traces its step once
        costs.append(_median_seconds(lambda xy, m=copy: m.train_on_batch(xy[0], xy[1]), pairs_i))
    return BlockCosts(trunk_s, costs, max(1, len(batches) - 1))


def record(
    results: Sequence,
    pairs: keras.Model,
    blocks: Sequence[keras.Model],
    batches: Sequence,
    steps_per_epoch: int,
    jit: bool | str = False,
) -> BlockCosts:
    """Measure a finished fused pass's costs and set them on its TaskResults (same order as `blocks`).

    `seconds_block`: the block's step cost x the steps it trained; `seconds_trunk`: the trunk's
    step cost x the steps of the pass's longest-training block, the same on every row of the pass
    (the trunk is shared: count it once per pass).
    """
    costs = measure_block_costs(pairs, blocks, batches, jit)
    pass_steps = steps_per_epoch * max((r.epochs for r in results), default=0)
    for result, step_s in zip(results, costs.block_step_s, strict=True):
        result.block_step_s = step_s
        result.trunk_step_s = costs.trunk_step_s
        result.seconds_block = step_s * steps_per_epoch * result.epochs
        result.seconds_trunk = costs.trunk_step_s * pass_steps
    return costs

"""Data-parallel fine-tuning: the student fine-tuned on the run's worker processes, every batch
split among them, their gradients summed by the executor's own means (issue 15).

**Decision: gradient all-reduce by the executor, not MultiWorkerMirroredStrategy.** The local
workers are already running, bound to the devices the tasks used, with the teacher and the data
loaded. TensorFlow's multi-worker strategy would need its cluster (TF_CONFIG, gRPC ports) set up
before a worker's first TensorFlow op, which the workers are long past, and it would tie the run
to TensorFlow. Here the executor sums numpy arrays only (`Replicas`: every worker runs the same
picklable job; the local workers sum in shared memory, rank by rank, so the sum is the same every
time: executors/allreduce.py); what is framework-specific — a
gradient of the shard's loss and the optimizer's update — is one small class, `_Step` for
TensorFlow and `_JaxStep` for JAX (Keras's stateless calls under `jax.jit`). Several GPUs in one process (MirroredStrategy) would need the run's process
to hold every GPU, against "no process holds a GPU it does not train on" (parallel.md).

**Same as serial.** Every worker reads the serial fine-tune's training stream (same seed, batch,
augmentation), only its rows rank, rank + n, ... of each global batch (`shard`: picked before
augmentation and preprocessing, so no worker prepares another's rows), and computes
the gradient of the *sum* of its rows' losses; the sums over workers divided by the global batch
size are the serial step's gradient of the mean loss, up to floating-point summation order. The
optimizer (SGD, Nesterov, cosine decay) then takes the same step on every worker. The top-1 after
fine-tuning is counted the same way: each worker evaluates its share of the validation batches and
the correct counts are summed.

**Decision: batch norms see each worker's share, as PyTorch's DDP without SyncBatchNorm.** Under
`--finetune-batch-norm batch` (the default) the batch norms a fine-tune trains normalise with the
statistics of the worker's own rows (rank, rank + n, ... of the global batch), not of the whole
batch, and each worker's moving statistics follow its own shares. After the last step the workers
replace their moving means and variances by the mean over workers (`_average_moving_statistics`,
summed through the same `reduce`): the moving means are then exactly those of the global batches
(a mean of equal shares' means is the batch's), the moving variances miss the spread between the
shares' means. So the student equals the serial one only up to the difference between per-share
and global batch statistics: the same top-1 within 0.5 points on the default run
(tests/test_finetune_parallel.py), not the same weights. Synchronising the statistics every step
would cost one more reduction per batch norm per step. Under
`--finetune-batch-norm frozen` (`assemble.freeze_batch_norms`) no statistic depends on the split and
the student is the serial one up to floating-point noise (the tiny-model weight test). Frozen is not
the default because moving statistics from block training do not fit once many blocks are spliced:
the default run's 12-block student collapsed to 7-10% in its fine-tune with them.

**Spliced sets too.** Target-mode selection measures every ranked set of blocks spliced into the
teacher (`spliced_accuracies`: one model with a branch per set, one pass over the validation
split). On the workers (`EvaluateSetsJob`) the sets are dealt out, rank r taking sets r, r + n,
...: each worker builds, traces and runs a model of its sets only, over the whole split, so each
set's top-1 comes from the same computation as in one process and is the same number; dealing out
the validation batches instead would leave every worker building and tracing every branch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenkd import data as data_mod
from greenkd.config import JIT_COMPILE, RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill.setup import Setup
from greenkd.distill.train import branch_accuracies, jit_compile
from greenkd.framework import NAME as FRAMEWORK
from greenkd.framework import fast_layers, keras

Reduce = Callable[[list[np.ndarray]], list[np.ndarray]]


def supported() -> bool:
    """Whether this framework has a data-parallel step (`_STEPS`: TensorFlow and JAX)."""
    return FRAMEWORK in _STEPS


@dataclass(frozen=True)
class FinetuneJob:
    """What every worker runs to fine-tune one student on its share of each batch (picklable)."""

    blocks: Mapping[str, list[np.ndarray]]  # the student's blocks and their trained weights
    cfg: RunConfig  # finetune_epochs: this fine-tune's

    def __call__(self, setup: Setup, rank: int, size: int, reduce: Reduce) -> dict[str, Any]:
        cfg = self.cfg
        clock = _Clock()
        student = asm.assemble(setup.teacher.model, setup.targets, dict(self.blocks), cfg.block)
        asm.prepare_for_finetune(student, [t.name for t in setup.targets], cfg)
        steps = setup.source.steps("train", cfg.batch_size)
        keras.utils.set_random_seed(cfg.seed)  # the serial fine-tune's data order (student.py)
        train = data_mod.training_batches(
            setup.source, cfg, setup.preprocess_mode, seed_offset=1, shard=(rank, size)
        )
        with fast_layers(student):  # as the serial fine-tune (student.finetune)
            step = _STEPS[FRAMEWORK](student, cfg, steps, JIT_COMPILE[cfg.jit])
            batches = iter(data_mod.without_autotune_model(train))
            clock.lap("build")
            for i in range(steps * cfg.finetune_epochs):
                x, y = next(batches)  # this worker's rows of the serial run's batch only
                clock.lap("data")
                grads, count = step.gradients(x, y)
                clock.lap("compile" if i == 0 else "gradients")  # the first call traces the step
                summed, total = reduce([grads, np.array([count], np.float64)])
                clock.lap("reduce")
                step.apply(summed, total[0])
                clock.lap("compile" if i == 0 else "apply")
            step.finish()
        _average_moving_statistics(student, size, reduce)
        val = data_mod.validation_batches(setup.source, cfg, setup.preprocess_mode)
        correct, weight = np.zeros(1, np.float64), np.zeros(1, np.float64)
        for x, y, w in _share(val, rank, size):
            c, n = step.correct(x, y, w)
            correct += c
            weight += n
        correct, weight = reduce([correct, weight])
        clock.lap("evaluate")
        return {
            "accuracy": float(correct[0] / weight[0]),
            "weights": student.get_weights() if rank == 0 else None,
            "seconds": clock.seconds,
        }


def _share(val, rank: int, size: int):
    """Validation batches rank, rank + size, ... (tf.data's `shard`; the same of a PyDataset)."""
    if hasattr(val, "shard"):
        return val.shard(size, rank)
    return (val[i] for i in range(rank, len(val), size))


class _Clock:
    """Seconds spent in each part of a worker's fine-tune, lap by lap (summary `finetune_parts`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - self._last
        self._last = now


def spliced_accuracies(
    setup: Setup,
    blocks: Mapping[str, list[np.ndarray]],
    sets: Sequence[Sequence[str]],
    val,
    cfg: RunConfig,
) -> list[float]:
    """Top-1 of the teacher with each set of trained blocks spliced in, set by set (one model,
    a branch per set, a block shared by the sets it is in)."""
    if not sets:
        return []
    teacher = setup.teacher.model
    every = dict.fromkeys(n for s in sets for n in s)
    trained = asm.trained_blocks(teacher, setup.targets, {n: blocks[n] for n in every}, cfg.block)
    branches = asm.set_branches(teacher, [{n: trained[n] for n in s} for s in sets])
    return branch_accuracies(branches, val, jit_compile(cfg))


@dataclass(frozen=True)
class EvaluateSetsJob:
    """What every worker runs to measure its share of the spliced sets (picklable): rank r takes
    sets r, r + n, ... and returns {set index: top-1}."""

    blocks: Mapping[str, list[np.ndarray]]  # every block of the sets, trained weights
    sets: tuple[tuple[str, ...], ...]
    cfg: RunConfig

    def __call__(self, setup: Setup, rank: int, size: int, reduce: Reduce) -> dict[int, float]:
        mine = list(range(rank, len(self.sets), size))
        if not mine:
            return {}
        val = data_mod.validation_batches(setup.source, self.cfg, setup.preprocess_mode)
        accuracies = spliced_accuracies(
            setup, self.blocks, [self.sets[i] for i in mine], val, self.cfg
        )
        return dict(zip(mine, accuracies, strict=True))


def _average_moving_statistics(student: keras.Model, size: int, reduce: Reduce) -> None:
    """Every worker's training batch norms take the mean over workers of their moving means and
    variances (summed through `reduce`, float64), so that the weights rank 0 sends back and the
    top-1 each worker counts are those of one student. Nothing to do when batch norms are frozen."""
    norms = asm.training_batch_norms(student)
    if not norms or size == 1:
        return
    variables = [v for bn in norms for v in (bn.moving_mean, bn.moving_variance)]
    summed = reduce([np.asarray(v, np.float64) for v in variables])
    for variable, total in zip(variables, summed, strict=True):
        variable.assign((total / size).astype(np.float32))


class _Step:
    """The framework-specific part: a shard's gradients and the optimizer's update (TensorFlow).

    The gradients leave the step as one flat float32 vector and come back as one: a student has
    about a hundred variables, and passing each through the reduction and into the update as its
    own array cost more per step than the shard's gradient itself (summary `finetune_parts` of
    the default run on 2 one-core workers: reduce 22 s and apply 25 s against 48 s of
    gradients, 620 steps), a cost that does not shrink with the shard.

    **The update in numpy, on the flat vector.** Keras's SGD (momentum, Nesterov, the cosine
    schedule) is a few element-wise operations per weight, Keras's own arithmetic in the same
    order (`_sgd`); the new weights go into the variables at the start of the next gradient call.
    As a separate TensorFlow call after the gradient step the update cost 4.5-5 ms a step on a
    one-core worker (the default student, 66 664 weights), whether Keras's optimizer or one
    assignment per variable did it: the first call after a gradient step pays ~1 ms for nothing,
    and its operations run slow (2.8 ms for the assignments, 0.6 ms alone); in numpy and inside
    the gradient call it is ~1 ms, on every worker, so T1 and Tn alike.
    """

    def __init__(self, model: keras.Model, cfg: RunConfig, steps: int, jit: bool | str) -> None:
        import tensorflow as tf

        self.model = model
        self.variables = model.trainable_variables
        jit_compile = jit is True  # "auto" is Keras's choice; XLA here only when asked for
        sizes = [int(np.prod(v.shape)) for v in self.variables]
        self.weights = np.concatenate([np.ravel(v.numpy()) for v in self.variables])
        self.velocity = np.zeros_like(self.weights)
        # the schedule's rate at every step, computed by Keras at once (its float32 arithmetic)
        total = max(1, steps * cfg.finetune_epochs)
        schedule = asm.finetune_schedule(cfg, steps)
        self.rates = np.asarray(schedule(np.arange(total, dtype=np.int64)), np.float32)
        self.done = 0

        def assign(weights):
            for part, v in zip(tf.split(weights, sizes), self.variables, strict=True):
                v.assign(tf.reshape(part, v.shape))

        def gradients(weights, x, y):
            assign(weights)  # the last update's weights, before the forward pass reads them
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probs))
            grads = tape.gradient(loss, self.variables)
            return tf.concat([tf.reshape(tf.convert_to_tensor(g), [-1]) for g in grads], 0)

        def correct(x, y, w):
            probs = model(x, training=False)
            hits = tf.cast(
                tf.equal(tf.argmax(probs, -1, output_type=tf.int32), tf.cast(y, tf.int32)), w.dtype
            )
            return tf.reduce_sum(hits * w), tf.reduce_sum(w)

        # traced as written (loops over the variables unrolled): autograph has nothing to convert
        self._gradients = tf.function(gradients, jit_compile=jit_compile, autograph=False)
        self._assign = tf.function(assign, jit_compile=jit_compile, autograph=False)
        self._correct = tf.function(correct, jit_compile=jit_compile, autograph=False)

    def gradients(self, x, y) -> tuple[np.ndarray, int]:
        """The gradient of the sum of the shard's losses, every variable's in one flat vector."""
        return np.asarray(self._gradients(self.weights, x, y)), int(y.shape[0])

    def apply(self, summed: np.ndarray, count: float) -> None:
        """One optimizer step on the summed flat gradients divided by the global batch's rows."""
        rate = self.rates[min(self.done, len(self.rates) - 1)]
        grads = np.asarray(summed, np.float32) / np.float32(count)
        self.weights, self.velocity = _sgd(self.weights, self.velocity, grads, rate)
        self.done += 1

    def finish(self) -> None:
        """Write the last update's weights into the model's variables."""
        self._assign(self.weights)

    def correct(self, x, y, w) -> tuple[float, float]:
        c, n = self._correct(x, y, w)
        return float(c), float(n)


def _sgd(weights, velocity, grads, rate):
    """Keras's SGD step with Nesterov momentum (`asm.FINETUNE_MOMENTUM`), its operations in its
    order (keras/src/optimizers/sgd.py): m = m * momentum - g * lr, then w += m * momentum - g * lr
    with the new m; float32 throughout."""
    momentum = np.float32(asm.FINETUNE_MOMENTUM)
    step = grads * rate
    velocity = velocity * momentum - step
    return weights + (velocity * momentum - step), velocity


class _JaxStep:
    """`_Step` under JAX: Keras's stateless calls, one `jax.jit` program each.

    The model's and the optimizer's values live in this object between steps, as arrays (what
    Keras's own JAX trainer does inside `fit`); `finish` writes them back into the variables.
    Always compiled with XLA, whatever `--jit` says (RunConfig.keras_jit: JAX runs nothing else
    but op-by-op dispatch).
    """

    def __init__(self, model: keras.Model, cfg: RunConfig, steps: int, jit: bool | str) -> None:
        import jax
        import jax.numpy as jnp

        del jit  # always XLA under JAX
        optimizer = asm.finetune_optimizer(cfg, steps)
        self.model, self.optimizer = model, optimizer
        optimizer.build(model.trainable_variables)
        self.trainable = [v.value for v in model.trainable_variables]
        self.non_trainable = [v.value for v in model.non_trainable_variables]
        self.opt_state = [v.value for v in optimizer.variables]
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1].tolist()

        def loss(trainable, non_trainable, x, y):
            probs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            total = jnp.sum(keras.losses.sparse_categorical_crossentropy(y, probs))
            return total, non_trainable

        grad = jax.value_and_grad(loss, has_aux=True)

        def gradients(trainable, non_trainable, x, y):
            (_, non_trainable), grads = grad(trainable, non_trainable, x, y)
            return jnp.concatenate([jnp.ravel(g) for g in grads]), non_trainable

        def apply(trainable, opt_state, flat, count):
            parts = jnp.split(flat / count.astype(flat.dtype), cuts)
            grads = [jnp.reshape(p, s) for p, s in zip(parts, shapes, strict=True)]
            return optimizer.stateless_apply(opt_state, grads, trainable)

        def correct(trainable, non_trainable, x, y, w):
            probs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            hits = (jnp.argmax(probs, -1) == y.astype(jnp.int32)).astype(w.dtype)
            return jnp.sum(hits * w), jnp.sum(w)

        self._gradients, self._apply = jax.jit(gradients), jax.jit(apply)
        self._correct = jax.jit(correct)

    def gradients(self, x, y) -> tuple[np.ndarray, int]:
        flat, self.non_trainable = self._gradients(self.trainable, self.non_trainable, x, y)
        return np.asarray(flat), int(y.shape[0])

    def apply(self, summed: np.ndarray, count: float) -> None:
        self.trainable, self.opt_state = self._apply(
            self.trainable, self.opt_state, np.asarray(summed, np.float32), np.float32(count)
        )

    def finish(self) -> None:
        """Write the fine-tuned values back into the model's (and optimizer's) variables."""
        model, optimizer = self.model, self.optimizer
        for variable, value in zip(model.trainable_variables, self.trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(model.non_trainable_variables, self.non_trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, self.opt_state, strict=True):
            variable.assign(value)

    def correct(self, x, y, w) -> tuple[float, float]:
        # after `finish` (and the moving statistics' averaging): the variables' values
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        c, n = self._correct(trainable, non_trainable, x, y, w)
        return float(c), float(n)


_STEPS = {"tensorflow": _Step, "jax": _JaxStep}

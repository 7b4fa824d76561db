"""One layer task (paper §3.1, eq. 3): train a block on the teacher's own activations.

A sub-model of the teacher yields the target conv's input and output tensors,
found by graph identity (`layer.input`, `layer.output`), so it works anywhere
in any functional graph. The block learns to map the one to the other with the
local MSE loss; no labels are used. Every `eval_every` epochs the block is
spliced into the teacher and top-1 is measured on the validation split; the
best weights are kept. Every epoch is trained and timed, whatever epoch wins.

`--epochs` is each task's cap. A block stops earlier once it is good enough: its
spliced top-1 meets the per-block acceptance threshold and its MSE has plateaued,
gaining less than MSE_MIN_GAIN of its layer's output power over each of the last
`patience` evaluations (`patience=0`: every task trains all its epochs, the
paper's fixed count). Under `--budget` a worker's tasks
share an allowance of epochs or seconds: what an early-stopping task leaves, a task
still improving may use, up to the cap; a task that runs out is evaluated and stops.

A fused pass (`train_pass` with several targets) shares one teacher pass per
batch among several tasks: the sub-model yields every target's pair at once and one
compiled step updates all blocks. The sum of the blocks' losses has, for each block,
exactly its own gradient (the blocks share no weights), and RMSprop's state is per
weight, so a fused block sees the same updates as when trained alone. A block that is
done leaves the pass: the pass goes on with the others, on a teacher prefix that ends
at the deepest block still training, and the same data stream (the same batches in the
same order as had nobody left).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill import blockcost
from greenkd.distill.assemble import accepted, branches, model_inputs
from greenkd.distill.targets import BLOCK_LAYERS, Target, flatten, layer_io, make_block
from greenkd.executors.base import TaskResult
from greenkd.framework import build_before_tracing, fast_layers, keras
from profilers.hostid import host_time

ProgressFn = Callable[[str, int, float], None]  # (task, epoch done, epoch mse)
# A block's MSE has plateaued when the mean training MSE since the previous evaluation is
# lower than the best earlier interval's by less than this fraction of the layer's output
# power (mean square of the teacher's output there): normalised so that a block whose MSE
# falls geometrically towards zero counts as done once what it misses is under 0.5% of the
# output, while one still cutting its error by points keeps training. Accuracy gains do not
# count: a few validation images move it by noise.
MSE_MIN_GAIN = 0.005


@dataclass
class Allowance:
    """What a worker may still spend on layer tasks under `--budget` (a pool, refilled per job)."""

    epochs: float = math.inf  # block-epochs: a fused pass of k blocks spends k per epoch
    seconds: float = math.inf  # wall seconds of training and evaluation

    def exhausted(self, blocks: int, elapsed_s: float) -> bool:
        """Whether another epoch of `blocks` blocks would overspend."""
        return self.epochs < blocks or elapsed_s >= self.seconds


class _BlockTrainer(keras.Model):
    """image -> frozen teacher prefix (inference mode) -> block(s); loss: sum of local MSEs.

    Only the blocks train. The teacher's layers are left as they are (never marked
    non-trainable): they are the very layer objects the teacher and its students are built
    from, and a flag set here would leak into every student assembled in this process.
    """

    def __init__(self, pairs: keras.Model, blocks: Sequence[keras.Model]) -> None:
        super().__init__(name="block_trainer")
        self.pairs = pairs
        self.blocks = list(blocks)
        self.mse = [keras.metrics.Mean(name=f"mse_{i}") for i in range(len(self.blocks))]

    @property
    def trainable_weights(self):
        return [w for block in self.blocks for w in block.trainable_weights]

    @property
    def trainable_variables(self):
        return self.trainable_weights

    def call(self, images, training=False):
        acts = self.pairs(images, training=False)
        return [
            (block(acts[2 * i], training=training), acts[2 * i + 1])
            for i, block in enumerate(self.blocks)
        ]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        for tracker, (pred, target) in zip(self.mse, y_pred, strict=True):
            mse = keras.ops.mean(keras.ops.square(pred - keras.ops.stop_gradient(target)))
            tracker.update_state(mse)
            total = total + mse
        return total


def pair_model(teacher: keras.Model, names: Sequence[str]) -> keras.Model:
    """teacher input -> [in_1, out_1, in_2, out_2, ...] for the named layers.

    Its layers are the teacher's own objects: whoever trains with it trains the blocks only."""
    teacher = flatten(teacher)
    outputs = []
    for name in names:
        outputs += list(layer_io(teacher, teacher.get_layer(name)))
    # frozen by the trainer (it trains only the blocks), not by a flag on the shared layers
    return keras.Model(model_inputs(teacher), outputs, name="pairs")


def jit_compile(cfg: RunConfig) -> bool | str:
    """`--jit` as Keras takes it: off and on mean the same on every device; auto is Keras's own
    choice (XLA where it supports the device, which for TensorFlow means GPUs, not CPUs); JAX
    always compiles (RunConfig.keras_jit)."""
    return cfg.keras_jit()


def evaluate_accuracy(model: keras.Model, val, jit: bool | str = False) -> float:
    """Top-1 of `model` on validation batches of (images, labels, weights): weighted, so the
    padding that gives every batch one shape counts for nothing."""
    model.compile(
        weighted_metrics=["accuracy"], loss="sparse_categorical_crossentropy", jit_compile=jit
    )
    build_before_tracing(model, val)
    with fast_layers(model):
        result = model.evaluate(val, verbose=0, return_dict=True)
    return float(result["accuracy"])


def branch_accuracies(model: keras.Model, val, jit: bool | str = False) -> list[float]:
    """Top-1 of each output of `model` on validation batches of (images, labels, weights)."""
    labels, weights = [], []
    for _, y, w in val:
        labels.append(np.asarray(y))
        weights.append(np.asarray(w))
    real = np.concatenate(weights) > 0
    labels = np.concatenate(labels)[real]
    if not model.compiled:  # predict only (no loss, no optimizer); compiled once, traced once
        model.compile(jit_compile=jit)
    with fast_layers(model):
        outputs = model.predict(data_mod.images_only(val), verbose=0)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    return [float(np.mean(np.argmax(o[real], axis=-1) == labels)) for o in outputs]


@dataclass
class _Task:
    """One block's bookkeeping in a pass."""

    target: Target
    block: keras.Model
    best: tuple[float, int, list[np.ndarray]]  # (spliced top-1, epoch, weights) of the best eval
    history: dict[int, float] = field(default_factory=dict)  # epoch -> spliced top-1
    mse: list[float] = field(default_factory=list)  # mean training MSE per epoch
    power: float = 1.0  # mean square of the teacher's output at the layer (MSE's scale)
    best_mse: float = math.inf  # lowest mean MSE of an interval between evaluations
    stale: int = 0  # evaluations in a row without an MSE gain
    stop: str = ""  # why it stopped: converged, cap, budget (interrupted: Ctrl-C)


@dataclass
class _Clock:
    """A pass's epoch and evaluation times, per segment (a segment retraces its steps)."""

    epochs: list[list[float]] = field(default_factory=list)  # training part of each epoch
    evals: list[list[float]] = field(default_factory=list)

    def segment(self) -> None:
        self.epochs.append([])
        self.evals.append([])

    def compile_seconds(self) -> tuple[float, float]:
        """(training, evaluation) seconds spent tracing and compiling, estimated as each
        segment's first epoch (and first evaluation) beyond the median of the later ones;
        NaN where no later one exists to compare with."""
        out = []
        for runs in (self.epochs, self.evals):
            later = [t for seg in runs for t in seg[1:]]
            if not later:
                out.append(math.nan)
                continue
            steady = float(np.median(later))
            out.append(sum(max(0.0, seg[0] - steady) for seg in runs if seg))
        return out[0], out[1]


class _PassCallback(keras.callbacks.Callback):
    """Per epoch: MSEs, the budget; every `eval_every` epochs (and at a stop): splice each
    active block in, keep its best weights, decide which blocks are done. When one is, the
    fit stops so that the pass can go on without it."""

    def __init__(self, tasks, active, spliced, val, cfg, cap, teacher_accuracy, allowance, clock,
                 progress, timing) -> None:  # fmt: skip
        super().__init__()
        self.tasks, self.active, self.spliced, self.val = tasks, active, spliced, val
        self.cfg, self.cap, self.teacher_accuracy = cfg, cap, teacher_accuracy
        self.allowance, self.clock, self.progress = allowance, clock, progress
        self.timing = timing
        self.eval_seconds = 0.0
        self.last_eval = 0
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.timing.epochs[-1].append(time.perf_counter() - self.epoch_started)
        done = epoch + 1
        active = [self.tasks[i] for i in self.active]
        for j, task in enumerate(active):
            task.mse.append(float(logs[f"mse_{j}"]))
        self.allowance.epochs -= len(active)
        broke = self.allowance.exhausted(len(active), time.perf_counter() - self.clock)
        if done % self.cfg.eval_every == 0 or done == self.cap or broke:
            self._evaluate(active, done)
        for task in active:
            if done == self.cap:
                task.stop = task.stop or "cap"
            elif broke:
                task.stop = task.stop or "budget"
        if self.progress:
            for task in active:
                self.progress(task.target.name, done, task.mse[-1])
        if any(task.stop for task in active):
            self.model.stop_training = True

    def _evaluate(self, active: list[_Task], done: int) -> None:
        started = time.perf_counter()
        accuracies = branch_accuracies(self.spliced, self.val, jit_compile(self.cfg))
        since = done - self.last_eval
        self.last_eval = done
        for task, acc in zip(active, accuracies, strict=True):
            task.history[done] = acc
            interval_mse = float(np.mean(task.mse[-since:]))
            improved = task.best_mse - interval_mse > MSE_MIN_GAIN * task.power
            task.best_mse = min(task.best_mse, interval_mse)
            if acc > task.best[0]:
                task.best = (acc, done, [w.copy() for w in task.block.get_weights()])
            task.stale = 0 if improved else task.stale + 1
            good = self.teacher_accuracy is not None and accepted(
                task.best[0], self.teacher_accuracy, self.cfg
            )
            if self.cfg.patience > 0 and good and task.stale >= self.cfg.patience:
                task.stop = "converged"
        self.timing.evals[-1].append(time.perf_counter() - started)
        self.eval_seconds += self.timing.evals[-1][-1]


def train_tasks(
    teacher: keras.Model,
    targets: Sequence[Target],
    cfg: RunConfig,
    source: data_mod.Source,
    *,
    device: str = "cpu0",
    progress: ProgressFn | None = None,
    preprocess_mode: str = "none",
    teacher_accuracy: float | None = None,
    allowance: Allowance | None = None,
) -> Iterator[TaskResult]:
    """A worker's list of tasks: one fused pass when `cfg.fuse` and several, else one by one."""
    val = data_mod.validation_batches(source, cfg, preprocess_mode)
    passes = [list(targets)] if cfg.fuse and len(targets) > 1 else [[t] for t in targets]
    allowance = allowance or Allowance()
    for group in passes:
        yield from train_pass(
            teacher,
            group,
            cfg,
            source,
            device=device,
            progress=progress,
            preprocess_mode=preprocess_mode,
            val=val,
            teacher_accuracy=teacher_accuracy,
            allowance=allowance,
        )


def _match_output_scale(blocks, pairs, train, targets, cfg, batches: int = 4) -> list[float]:
    """Start each block's last batch norm at its target's per-channel mean and spread.

    The teacher's activations can be large (tens to hundreds with caffe
    preprocessing) while a fresh block outputs values near 1, and RMSprop moves a
    weight about `lr` per step: without this the block spends its epochs
    learning the scale instead of the features. Returns each untrained block's
    local MSE on the same batches (the "before" of real learning) and the mean square
    of each target output (the scale of its MSE).
    """
    first = data_mod.first_batches(train, batches)
    sums = [(0.0, 0.0)] * len(blocks)
    for images in first:
        acts = pairs(images, training=False)
        for i in range(len(blocks)):
            out = acts[2 * i + 1]
            axes = tuple(range(len(out.shape) - 1))
            mean = keras.ops.mean(out, axis=axes)
            std = keras.ops.std(out, axis=axes)
            sums[i] = (sums[i][0] + mean, sums[i][1] + std)
    last_bn = f"_kd_pw{BLOCK_LAYERS[cfg.block]}_bn"
    for block, target, (mean, std) in zip(blocks, targets, sums, strict=True):
        bn = block.get_layer(f"{target.name}{last_bn}")
        gamma, beta, moving_mean, moving_var = bn.get_weights()
        gamma = np.maximum(np.asarray(std) / batches, 1e-3).astype(gamma.dtype)
        bn.set_weights(
            [gamma, (np.asarray(mean) / batches).astype(beta.dtype), moving_mean, moving_var]
        )
    errors, powers = [0.0] * len(blocks), [0.0] * len(blocks)
    for images in first:
        acts = pairs(images, training=False)
        for i, block in enumerate(blocks):
            pred = block(acts[2 * i], training=False)
            errors[i] += float(keras.ops.mean(keras.ops.square(pred - acts[2 * i + 1])))
            powers[i] += float(keras.ops.mean(keras.ops.square(acts[2 * i + 1])))
    return [e / batches for e in errors], [max(p / batches, 1e-12) for p in powers]


def train_pass(
    teacher: keras.Model,
    targets: Sequence[Target],
    cfg: RunConfig,
    source: data_mod.Source,
    *,
    device: str = "cpu0",
    progress: ProgressFn | None = None,
    preprocess_mode: str = "none",
    val=None,
    teacher_accuracy: float | None = None,
    allowance: Allowance | None = None,
) -> list[TaskResult]:
    """Train the blocks of `targets` together, one teacher pass per batch: the paper's
    independent task when there is one target, a fused pass when there are several.

    Without `teacher_accuracy` no block is known to be good enough, so every block trains
    to the cap (or the allowance); `allowance` is spent and shared with later passes.
    """
    group = ",".join(t.name for t in targets) if len(targets) > 1 else ""
    start = host_time()  # this host's clock: a multi-host run aligns it (profilers.hosts)
    t0 = time.perf_counter()
    teacher = flatten(teacher)
    allowance = allowance or Allowance()
    if val is None:
        val = data_mod.validation_batches(source, cfg, preprocess_mode)
    steps = source.steps("train", cfg.batch_size)

    def stream(skip_batches: int = 0):
        # The data order depends on the run seed only, never on the layer or the schedule:
        # tf.data's shuffle seed pairs with the global seed, which make_block sets to the
        # block's own, so the run seed is set again before every pipeline is built.
        keras.utils.set_random_seed(cfg.seed)
        return data_mod.training_batches(
            source, cfg, preprocess_mode, labels=False, skip_batches=skip_batches
        )

    tasks = []
    for target in targets:
        block = make_block(
            target,
            cfg.block,
            layer=teacher.get_layer(target.name),
            for_training=True,
            seed=(cfg.seed + target.seed_offset) % 2**31,
        )
        tasks.append(_Task(target, block, (-1.0, 0, [w.copy() for w in block.get_weights()])))
    # exponential decay from lr to lr * lr_end_factor over the cap, so the schedule fits a
    # 6-epoch CPU run as well as the paper's 30; one optimizer for the whole pass (its state
    # is per weight), kept when blocks leave
    lr = keras.optimizers.schedules.ExponentialDecay(
        cfg.lr, decay_steps=steps * cfg.epochs, decay_rate=cfg.lr_end_factor
    )
    optimizer = keras.optimizers.RMSprop(lr)
    active = list(range(len(tasks)))
    pairs = pair_model(teacher, [t.target.name for t in tasks])
    mse_start, powers = _match_output_scale([t.block for t in tasks], pairs, stream(), targets, cfg)
    for task, power in zip(tasks, powers, strict=True):
        task.power = power
    callback = None
    timing = _Clock()
    t1 = time.perf_counter()
    epoch = 0

    def results(evaluated_only: bool) -> list[TaskResult]:
        t2, end = time.perf_counter(), host_time()
        share = 1.0 / len(targets)  # a fused pass's time, split evenly among its tasks
        evaluated = callback.eval_seconds if callback is not None else 0.0
        compile_train, compile_eval = timing.compile_seconds()
        compiled = np.nansum([compile_train, compile_eval])
        known = not (math.isnan(compile_train) and math.isnan(compile_eval))
        out = []
        for task in tasks:
            acc, best_epoch, weights = task.best
            if evaluated_only and best_epoch == 0:
                continue  # never spliced in and measured: nothing worth keeping
            out.append(
                TaskResult(
                    name=task.target.name,
                    index=task.target.index,
                    weights=weights,
                    accuracy=acc,
                    best_epoch=best_epoch,
                    epochs=len(task.mse),
                    mse_start=mse_start[tasks.index(task)],
                    mse_history=task.mse,
                    accuracy_history=task.history,
                    seconds_setup=(t1 - t0) * share,
                    seconds_train=(t2 - t1 - evaluated - np.nan_to_num(compile_train)) * share,
                    seconds_eval=(evaluated - np.nan_to_num(compile_eval)) * share,
                    seconds_compile=compiled * share if known else math.nan,
                    start=start,
                    end=end,
                    device=device,
                    fused_group=group,
                    interrupted=evaluated_only,
                    stop="interrupted" if evaluated_only else task.stop,
                )
            )
        return out

    try:
        eval_seconds = 0.0
        while active:
            # a segment: the active blocks until the cap, or until one of them is done;
            # the prefix ends at the deepest active block (pair_model keeps what it needs)
            blocks = [tasks[i].block for i in active]
            if pairs is None:
                pairs = pair_model(teacher, [tasks[i].target.name for i in active])
            trainer = _BlockTrainer(pairs, blocks)
            trainer.compile(optimizer=optimizer, jit_compile=jit_compile(cfg))
            train = stream(epoch * steps)  # the batches an unbroken stream gives from here on
            build_before_tracing(trainer, train)
            spliced = branches(teacher, {tasks[i].target.name: tasks[i].block for i in active})
            callback = _PassCallback(
                tasks, active, spliced, val, cfg, cfg.epochs, teacher_accuracy, allowance,
                t1, progress, timing,
            )  # fmt: skip
            timing.segment()
            callback.eval_seconds, callback.last_eval = eval_seconds, epoch
            trainer.fit(
                train,
                initial_epoch=epoch,
                epochs=cfg.epochs,
                steps_per_epoch=steps,
                verbose=0,
                shuffle=False,
                callbacks=[callback],
            )
            epoch = max(len(tasks[i].mse) for i in active)
            eval_seconds = callback.eval_seconds
            active = [i for i in active if not tasks[i].stop]
            pairs = None
    except KeyboardInterrupt as exc:
        # Ctrl-C mid-pass: hand the caller each block's best weights so far (those
        # evaluated at least once), so that the run directory keeps them
        exc.partial_results = results(evaluated_only=True)  # type: ignore[attr-defined]
        raise
    finally:
        allowance.seconds -= time.perf_counter() - t1
    out = results(evaluated_only=False)
    if len(targets) > 1 and cfg.block_costs:  # a fused pass: each block's and the trunk's cost
        names = [t.target.name for t in tasks]
        batches = data_mod.first_batches(stream(), blockcost.TIMED_BATCHES + 1)
        pairs = pair_model(teacher, names)
        blockcost.record(out, pairs, [t.block for t in tasks], batches, steps, jit_compile(cfg))
    return out

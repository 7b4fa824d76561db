"""One layer task (paper §3.1, eq. 3): train a block on the teacher's own activations.

A sub-model of the teacher yields the target conv's input and output tensors,
found by graph identity (`layer.input`, `layer.output`), so it works anywhere
in any functional graph. The block learns to map the one to the other with the
local MSE loss; no labels are used. Every `eval_every` epochs the block is
spliced into the teacher and top-1 is measured on the validation split; the
best weights are kept. Every epoch is trained and timed, whatever epoch wins.

A fused pass (`train_pass` with several targets) shares one teacher pass per
batch among several tasks: the sub-model yields every target's pair at once and one compiled step updates all
blocks. The sum of the blocks' losses has, for each block, exactly its own
gradient (the blocks share no weights), and RMSprop's state is per weight, so
a fused block sees the same updates as when trained alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from greenkd import data as data_mod
from greenkd.config import RunConfig
from greenkd.distill.assemble import branches, model_inputs
from greenkd.distill.targets import BLOCK_LAYERS, Target, flatten, layer_io, make_block
from greenkd.executors.base import TaskResult
from greenkd.tfsetup import keras

ProgressFn = Callable[[str, int, float], None]  # (task, epoch done, epoch mse)


class _BlockTrainer(keras.Model):
    """image -> frozen teacher prefix (inference mode) -> block(s); loss: sum of local MSEs."""

    def __init__(self, pairs: keras.Model, blocks: Sequence[keras.Model]) -> None:
        super().__init__(name="block_trainer")
        self.pairs = pairs
        self.blocks = list(blocks)
        self.mse = [keras.metrics.Mean(name=f"mse_{i}") for i in range(len(self.blocks))]

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
    """teacher input -> [in_1, out_1, in_2, out_2, ...] for the named layers, frozen."""
    teacher = flatten(teacher)
    outputs = []
    for name in names:
        outputs += list(layer_io(teacher, teacher.get_layer(name)))
    model = keras.Model(model_inputs(teacher), outputs, name="pairs")
    model.trainable = False
    return model


def _accuracy(model: keras.Model, val) -> float:
    result = model.evaluate(val, verbose=0, return_dict=True)
    return float(result["accuracy"])


def evaluate_accuracy(model: keras.Model, val) -> float:
    """Top-1 of `model` on a batched (images, labels) dataset."""
    model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy", jit_compile=False)
    return _accuracy(model, val)


def branch_accuracies(model: keras.Model, val) -> list[float]:
    """Top-1 of each output of `model` on a batched (images, labels) dataset."""
    labels = np.concatenate([np.asarray(y) for _, y in val])
    outputs = model.predict(val.map(lambda x, y: x), verbose=0)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    return [float(np.mean(np.argmax(o, axis=-1) == labels)) for o in outputs]


class _EvalCallback(keras.callbacks.Callback):
    """Every `every` epochs (and after the last) splice each block in and keep its best weights."""

    def __init__(self, names, blocks, spliced, val, every, epochs, progress):
        super().__init__()
        self.names, self.blocks, self.spliced = names, blocks, spliced
        self.val, self.every, self.epochs, self.progress = val, every, epochs, progress
        self.best = [(-1.0, 0, [w.copy() for w in b.get_weights()]) for b in blocks]
        self.history = [dict() for _ in blocks]
        self.mse = [[] for _ in blocks]
        self.eval_seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        for i in range(len(self.blocks)):
            self.mse[i].append(float(logs[f"mse_{i}"]))
        if done % self.every == 0 or done == self.epochs:
            started = time.perf_counter()
            accuracies = branch_accuracies(self.spliced, self.val)
            for i, (block, acc) in enumerate(zip(self.blocks, accuracies, strict=True)):
                self.history[i][done] = acc
                if acc > self.best[i][0]:
                    self.best[i] = (acc, done, [w.copy() for w in block.get_weights()])
            self.eval_seconds += time.perf_counter() - started
        if self.progress:
            for i, name in enumerate(self.names):
                self.progress(name, done, self.mse[i][-1])


def train_tasks(
    teacher: keras.Model,
    targets: Sequence[Target],
    cfg: RunConfig,
    source: data_mod.Source,
    *,
    device: str = "cpu0",
    progress: ProgressFn | None = None,
    preprocess_mode: str = "none",
) -> Iterator[TaskResult]:
    """A worker's list of tasks: one fused pass when `cfg.fuse` and several, else one by one."""
    val = data_mod.validation_batches(source, cfg, preprocess_mode)
    passes = [list(targets)] if cfg.fuse and len(targets) > 1 else [[t] for t in targets]
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
        )


def _match_output_scale(blocks, pairs, train, targets, cfg, batches: int = 4) -> list[float]:
    """Start each block's last batch norm at its target's per-channel mean and spread.

    The teacher's activations can be large (tens to hundreds with caffe
    preprocessing) while a fresh block outputs values near 1, and RMSprop moves a
    weight about `lr` per step: without this the block spends its epochs
    learning the scale instead of the features. Returns each untrained block's
    local MSE on the same batches: the "before" of real learning.
    """
    first = train.take(batches)
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
    errors = [0.0] * len(blocks)
    for images in first:
        acts = pairs(images, training=False)
        for i, block in enumerate(blocks):
            pred = block(acts[2 * i], training=False)
            errors[i] += float(keras.ops.mean(keras.ops.square(pred - acts[2 * i + 1])))
    return [e / batches for e in errors]


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
) -> list[TaskResult]:
    """Train the blocks of `targets` together, one teacher pass per batch: the paper's
    independent task when there is one target, a fused pass when there are several."""
    group = ",".join(t.name for t in targets) if len(targets) > 1 else ""
    start = time.time()
    t0 = time.perf_counter()
    teacher = flatten(teacher)
    if val is None:
        val = data_mod.validation_batches(source, cfg, preprocess_mode)
    # The data order depends on the run seed only, never on the layer or the
    # schedule: reset the global seed before building the pipeline.
    keras.utils.set_random_seed(cfg.seed)
    steps = source.steps("train", cfg.batch_size)
    train = data_mod.training_batches(source, cfg, preprocess_mode, labels=False)
    blocks = []
    for target in targets:
        layer = teacher.get_layer(target.name)
        blocks.append(
            make_block(
                target,
                cfg.block,
                layer=layer,
                for_training=True,
                seed=(cfg.seed + target.seed_offset) % 2**31,
            )
        )
    pairs = pair_model(teacher, [t.name for t in targets])
    trainer = _BlockTrainer(pairs, blocks)
    # exponential decay from lr to lr * lr_end_factor over the task's epochs, so
    # the schedule fits a 6-epoch CPU run as well as the paper's 30 epochs
    lr = keras.optimizers.schedules.ExponentialDecay(
        cfg.lr, decay_steps=steps * cfg.epochs, decay_rate=cfg.lr_end_factor
    )
    trainer.compile(optimizer=keras.optimizers.RMSprop(lr))
    # one model, one output per block: the teacher's trunk runs once per batch
    # and each block's path only from its layer on
    spliced = branches(teacher, {t.name: b for t, b in zip(targets, blocks, strict=True)})
    mse_start = _match_output_scale(blocks, pairs, train, targets, cfg)
    callback = _EvalCallback(
        [t.name for t in targets], blocks, spliced, val, cfg.eval_every, cfg.epochs, progress
    )
    t1 = time.perf_counter()

    def results(evaluated_only: bool) -> list[TaskResult]:
        t2, end = time.perf_counter(), time.time()
        share = 1.0 / len(targets)  # a fused pass's time, split evenly among its tasks
        out = []
        for i, target in enumerate(targets):
            acc, best_epoch, weights = callback.best[i]
            if evaluated_only and best_epoch == 0:
                continue  # never spliced in and measured: nothing worth keeping
            out.append(
                TaskResult(
                    name=target.name,
                    index=target.index,
                    weights=weights,
                    accuracy=acc,
                    best_epoch=best_epoch,
                    epochs=len(callback.mse[i]),
                    mse_start=mse_start[i],
                    mse_history=callback.mse[i],
                    accuracy_history=callback.history[i],
                    seconds_setup=(t1 - t0) * share,
                    seconds_train=(t2 - t1 - callback.eval_seconds) * share,
                    seconds_eval=callback.eval_seconds * share,
                    start=start,
                    end=end,
                    device=device,
                    fused_group=group,
                    interrupted=evaluated_only,
                )
            )
        return out

    try:
        trainer.fit(
            train,
            epochs=cfg.epochs,
            steps_per_epoch=steps,
            verbose=0,
            shuffle=False,
            callbacks=[callback],
        )
    except KeyboardInterrupt as exc:
        # Ctrl-C mid-pass: hand the caller each block's best weights so far (those
        # evaluated at least once), so that the run directory keeps them
        exc.partial_results = results(evaluated_only=True)  # type: ignore[attr-defined]
        raise
    return results(evaluated_only=False)

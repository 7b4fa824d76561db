"""Calibration: a few timed training steps of every task, scaled to whole tasks (paper §3.3).

The costs a run plans with when nothing was measured yet and `--calibrate` is given
(greenkd.schedule.sources says which source wins). Timed in the run's own process, on the
data and teacher the tasks will use and on the first device's GPU (the process is bound to
it), each timing waiting until the device has finished.
"""

from __future__ import annotations

import time

from greenkd import data as data_mod
from greenkd.distill.setup import Setup
from greenkd.distill.targets import make_block
from greenkd.distill.train import _BlockTrainer, jit_compile, pair_model
from greenkd.framework import build_before_tracing, keras
from greenkd.schedule import TaskCost


def calibrate(setup: Setup, steps: int = 3) -> list[TaskCost]:
    """Time a few training steps of every task here, and scale them to the whole task.

    A task's time, trained for its expected epochs (Setup.expected_epochs), is its set-up
    (building and tracing its step, measured), its training steps (epochs x batches x the measured step) and its evaluations
    (each a spliced-teacher pass over the validation split, timed once on the teacher).
    """
    cfg = setup.cfg
    teacher = setup.teacher.model
    train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, labels=False)
    images = next(iter(train))
    epochs = setup.expected_epochs  # the cap, or the budget's share of it
    total_steps = epochs * setup.source.steps("train", cfg.batch_size)
    evals = max(1.0, epochs / cfg.eval_every)
    val_batch = next(iter(data_mod.validation_batches(setup.source, cfg, setup.preprocess_mode)))[0]
    forward = _Forward(teacher)
    forward.compile(jit_compile=jit_compile(cfg))
    _done(forward.predict_on_batch(val_batch))
    started = time.perf_counter()
    _done(forward.predict_on_batch(val_batch))
    per_image_s = (time.perf_counter() - started) / int(val_batch.shape[0])
    eval_s = per_image_s * setup.source.sizes["val"]

    out = []
    for target in setup.targets:
        t0 = time.perf_counter()
        pairs = pair_model(teacher, [target.name])
        block = make_block(target, cfg.block, layer=teacher.get_layer(target.name), seed=0)
        # the task's own compiled step (the trainer fit() runs), one batch at a time
        trainer = _BlockTrainer(pairs, [block])
        trainer.compile(optimizer=keras.optimizers.RMSprop(cfg.lr), jit_compile=jit_compile(cfg))
        build_before_tracing(trainer, images)  # as train_pass does before its fit
        prefix = _Forward(pairs)
        prefix.compile(jit_compile=jit_compile(cfg))

        def step(x, trainer=trainer):
            return trainer.train_on_batch(x, return_dict=True)

        def prefix_pass(x, prefix=prefix):
            return prefix.predict_on_batch(x)

        _done(step(images))
        _done(prefix_pass(images))
        setup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(steps):
            loss = step(images)
        _done(loss)  # a GPU runs ops asynchronously: the clock stops when they are done
        step_s = (time.perf_counter() - t1) / steps
        t2 = time.perf_counter()
        for _ in range(steps):
            acts = prefix_pass(images)
        _done(acts)
        prefix_s = min(step_s, (time.perf_counter() - t2) / steps)
        seconds = setup_s + total_steps * step_s + evals * eval_s
        out.append(TaskCost(target.name, seconds, total_steps * prefix_s))
    return out


class _Forward(keras.Model):
    """`model` in inference mode as a compiled predict step (Keras traces it once per shape)."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__(name=f"forward_{model.name}")
        self.inner = model

    def call(self, x, training=False):
        return self.inner(x, training=False)


def _done(result) -> None:
    """Wait until the device has computed `result` (copying it to the host does)."""
    for tensor in keras.tree.flatten(result):
        keras.ops.convert_to_numpy(tensor)

"""Which task costs a run schedules with, and the plan they give (paper §3.3, issue 5).

Sources, first that applies: `--timings FILE` ("timings-file"); the timing store,
written by every finished run from its measured task times and keyed by model,
dataset, the settings that change a task's time and the hardware ("store");
with `--calibrate`, a few timed training steps of every task ("calibration");
else the analytic model of `greenkd.schedule` ("analytic"), which costs nothing
and only has to rank the tasks (rr ignores costs; ws adapts at run time).

Measured times are whole tasks run one at a time (end - start); their teacher
prefix share, which fused plans need, is the analytic model's fraction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenkd import schedule
from greenkd.config import RunConfig
from greenkd.devices import Device, hardware_label
from greenkd.errors import GreenkdError
from greenkd.paths import cache_dir
from greenkd.schedule import Plan, TaskCost, TimingStore

if TYPE_CHECKING:
    from greenkd.distill.run import Setup
    from greenkd.distill.targets import Target
    from greenkd.distill.train import TaskResult


def store() -> TimingStore:
    """The timing store: $GREENKD_TIMINGS, else timings.json in the greenkd cache."""
    path = os.environ.get(schedule.costs.STORE_ENV)
    return TimingStore(Path(path) if path else cache_dir() / "timings.json")


def store_key(setup: Setup, devices: Sequence[Device]) -> str:
    """The timing-store key of this run: what a task's time depends on, not seeds or rates."""
    cfg = setup.cfg
    settings = {
        "width": cfg.width if cfg.model == "vgg16" else None,
        "n_train": setup.source.sizes["train"],
        "n_val": setup.source.sizes["val"],
        "image_size": cfg.image_size,
        "preprocess": setup.preprocess_mode,
        "augment": cfg.augment,
        "batch_size": cfg.batch_size,
        "block": cfg.block,
        "epochs": cfg.epochs,
        "eval_every": cfg.eval_every,
        "data_threads": cfg.data_threads.label,
    }
    return schedule.timing_key(cfg.model, cfg.dataset, settings, hardware_label(list(devices)))


def check_timings_file(cfg: RunConfig) -> None:
    """Fail early (before a teacher is trained) on a timings file that cannot be read."""
    if cfg.timings:
        schedule.load_timings_file(cfg.timings)


def _target_info(target: Target) -> dict[str, Any]:
    def size(shape: Sequence[int]) -> int:
        n = 1
        for d in shape:
            n *= max(int(d), 1)
        return n

    return {
        "name": target.name,
        "prefix_flops": target.prefix_flops,
        "block_flops": target.flops_after,
        "input_elements": size(target.input_shape),
        "output_elements": size(target.output_shape),
    }


def analytic(setup: Setup) -> list[TaskCost]:
    """The analytic estimate for this run's targets: every epoch sees the whole training set."""
    images = setup.cfg.epochs * setup.source.sizes["train"]
    return schedule.analytic_costs([_target_info(t) for t in setup.targets], images=images)


def _with_prefix_share(measured: Sequence[TaskCost], setup: Setup) -> list[TaskCost]:
    """Measured seconds, with the analytic model's prefix fraction where none was measured."""
    model = {c.name: c for c in analytic(setup)}
    out = []
    for c in measured:
        if c.prefix_seconds > 0 or c.name not in model or model[c.name].seconds <= 0:
            out.append(c)
            continue
        share = model[c.name].prefix_seconds / model[c.name].seconds
        out.append(TaskCost(c.name, c.seconds, c.seconds * share))
    return out


def from_file(path: str, names: Sequence[str]) -> list[TaskCost]:
    """Costs for `names` (in that order) from a timings file; every task must be in it."""
    given = {c.name: c for c in schedule.load_timings_file(path)}
    missing = [n for n in names if n not in given]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise GreenkdError(
            f"timings file {path} has no time for {shown}; it must list every layer task "
            f"of this model ({len(names)} tasks)"
        )
    return [given[n] for n in names]


def task_costs(setup: Setup, devices: Sequence[Device]) -> tuple[list[TaskCost], str]:
    """The costs to plan with, in model order, and their source (see the module docstring)."""
    names = [t.name for t in setup.targets]
    cfg = setup.cfg
    if cfg.timings:
        return _with_prefix_share(from_file(cfg.timings, names), setup), "timings-file"
    stored = store().lookup(store_key(setup, devices), names)
    if stored is not None:
        return _with_prefix_share(stored, setup), "store"
    if cfg.calibrate:
        return calibrate(setup), "calibration"
    return analytic(setup), "analytic"


def plan_for(setup: Setup, devices: Sequence[Device]) -> Plan:
    """The run's plan: its policy over its devices, with the costs chosen above."""
    costs, source = task_costs(setup, devices)
    return schedule.plan(
        costs, len(devices), setup.cfg.sched, fused=setup.cfg.fuse, cost_source=source
    )


def record(setup: Setup, devices: Sequence[Device], results: Iterable[TaskResult]) -> int:
    """Write the measured times of tasks that ran on their own into the store; return how many.

    A fused pass's time is split evenly among its tasks, which says nothing about
    any one of them, so fused results are left out.
    """
    measured = [TaskCost(r.name, max(0.0, r.end - r.start)) for r in results if not r.fused_group]
    if measured:
        store().put(store_key(setup, devices), measured)
    return len(measured)


def calibrate(setup: Setup, steps: int = 3) -> list[TaskCost]:
    """Time a few training steps of every task here, and scale them to the whole task.

    A task's time is its set-up (building and tracing its step, measured), its
    training steps (epochs x batches x the measured step) and its evaluations
    (each a spliced-teacher pass over the validation split, timed once on the teacher).
    """
    from greenkd import data as data_mod
    from greenkd.distill.targets import make_block
    from greenkd.distill.train import pair_model
    from greenkd.tfsetup import keras, tf

    cfg = setup.cfg
    teacher = setup.teacher.model
    train = data_mod.training_batches(setup.source, cfg, setup.preprocess_mode, labels=False)
    images = next(iter(train))
    total_steps = cfg.epochs * setup.source.steps("train", cfg.batch_size)
    evals = len({e for e in range(1, cfg.epochs + 1) if e % cfg.eval_every == 0 or e == cfg.epochs})
    val_batch = next(iter(data_mod.validation_batches(setup.source, cfg, setup.preprocess_mode)))[0]
    forward = tf.function(lambda x: teacher(x, training=False))
    forward(val_batch)
    started = time.perf_counter()
    forward(val_batch)
    per_image_s = (time.perf_counter() - started) / int(val_batch.shape[0])
    eval_s = per_image_s * setup.source.sizes["val"]

    out = []
    for target in setup.targets:
        t0 = time.perf_counter()
        pairs = pair_model(teacher, [target.name])
        block = make_block(target, cfg.block, layer=teacher.get_layer(target.name), seed=0)
        optimizer = keras.optimizers.RMSprop(cfg.lr)

        @tf.function
        def step(x, pairs=pairs, block=block, optimizer=optimizer):
            source, wanted = pairs(x, training=False)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(block(source, training=True) - wanted))
            grads = tape.gradient(loss, block.trainable_variables)
            optimizer.apply_gradients(zip(grads, block.trainable_variables, strict=True))
            return loss

        prefix = tf.function(lambda x, pairs=pairs: pairs(x, training=False))
        step(images)
        prefix(images)
        setup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(steps):
            step(images)
        step_s = (time.perf_counter() - t1) / steps
        t2 = time.perf_counter()
        for _ in range(steps):
            prefix(images)
        prefix_s = min(step_s, (time.perf_counter() - t2) / steps)
        seconds = setup_s + total_steps * step_s + evals * eval_s
        out.append(TaskCost(target.name, seconds, total_steps * prefix_s))
    return out

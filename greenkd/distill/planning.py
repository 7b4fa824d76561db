"""How a run plans its tasks: the key its times are stored under, its costs, its plan.

The cost sources themselves (timings file, timing store, calibration, the analytic
model) are greenkd.schedule's; this module says what a distillation task's time
depends on (the timing-store key) and what the analytic model needs of each target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from greenkd import schedule
from greenkd.devices import Device, hardware_label
from greenkd.distill.setup import Setup
from greenkd.executors.base import TaskResult
from greenkd.schedule import Plan, TaskCost, sources


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
        "patience": cfg.patience,
        "budget": cfg.budget,
        "data_threads": cfg.data_threads.label,
    }
    if cfg.budget is not None:
        # a task's share of the budget, so its time, depends on how many tasks share it, and
        # skipping growing targets changes that (without a budget a task's time does not)
        settings["replace_growing"] = cfg.replace_growing
    return schedule.timing_key(cfg.model, cfg.dataset, settings, hardware_label(list(devices)))


def analytic(setup: Setup) -> list[TaskCost]:
    """The analytic estimate for this run's targets: every epoch sees the whole training set."""
    images = max(1, round(setup.expected_epochs * setup.source.sizes["train"]))
    infos = [
        {
            "name": t.name,
            "prefix_flops": t.prefix_flops,
            "block_flops": t.flops_after,
            "input_elements": math.prod(max(int(d), 1) for d in t.input_shape),
            "output_elements": math.prod(max(int(d), 1) for d in t.output_shape),
        }
        for t in setup.targets
    ]
    return schedule.analytic_costs(infos, images=images)


def task_costs(setup: Setup, devices: Sequence[Device]) -> tuple[list[TaskCost], str]:
    """The costs to plan with, in model order, and their source (greenkd.schedule.sources)."""
    calibrate = None
    if setup.cfg.calibrate:
        from greenkd.distill.calibrate import calibrate as timed_steps

        def calibrate() -> list[TaskCost]:
            return timed_steps(setup)

    return sources.task_costs(
        setup.names,
        analytic=analytic(setup),
        store_key=store_key(setup, devices),
        timings_file=setup.cfg.timings,
        calibrate=calibrate,
    )


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
    return sources.record(store_key(setup, devices), measured)

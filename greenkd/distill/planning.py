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
        "framework": cfg.framework,
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


def fused_costs(results: Iterable[TaskResult], model: Sequence[TaskCost]) -> list[TaskCost]:
    """What each task of a measured fused pass would cost run alone, for the timing store.

    The pass's wall time (end - start) is split by its measured per-block costs
    (greenkd.distill.blockcost): the trunk's share is the deepest task's teacher prefix, each
    block's share its own part. A shallower task's prefix is the deepest one's scaled by the
    analytic model's prefix FLOPs (`model`), as only the deepest prefix ran. So a fused plan of
    the same pass predicts its measured time exactly (deepest prefix + the blocks' own parts).
    Passes without per-block costs (`--no-block-costs`, an interrupted pass) give nothing.
    """
    prefix = {c.name: c.prefix_seconds for c in model}
    passes: dict[tuple[str, str], list[TaskResult]] = {}
    for r in results:
        if r.fused_group:
            passes.setdefault((r.device, r.fused_group), []).append(r)
    out = []
    for rows in passes.values():
        costs = [r.seconds_block for r in rows] + [rows[0].seconds_trunk]
        if not all(math.isfinite(c) and c > 0 for c in costs):
            continue
        scale = max(0.0, rows[0].end - rows[0].start) / sum(costs)
        deepest = max(prefix.get(r.name, 0.0) for r in rows)
        for r in rows:
            share = prefix.get(r.name, 0.0) / deepest if deepest > 0 else 1.0
            own, pre = r.seconds_block * scale, rows[0].seconds_trunk * scale * share
            out.append(TaskCost(r.name, own + pre, pre))
    return out


def record(setup: Setup, devices: Sequence[Device], results: Iterable[TaskResult]) -> int:
    """Write measured task times into the store; return how many.

    Tasks that ran on their own give their end - start. A fused pass's tasks share one
    interval, which says nothing about any one of them: they are recorded only where the
    pass measured its per-block costs (`fused_costs`).
    """
    results = list(results)
    measured = [TaskCost(r.name, max(0.0, r.end - r.start)) for r in results if not r.fused_group]
    measured += fused_costs(results, analytic(setup))
    return sources.record(store_key(setup, devices), measured)

"""Fused passes measured per block (greenkd.distill.blockcost): each block's own step and the trunk's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greenkd import data
from greenkd.distill.blockcost import TIMED_BATCHES, measure_block_costs
from greenkd.distill.planning import fused_costs
from greenkd.distill.train import pair_model, train_pass
from greenkd.executors.base import TaskResult
from greenkd.schedule import TaskCost
from greenkd.schedule.core import device_load


def test_a_fused_pass_records_each_blocks_cost_and_the_shared_trunks(tiny_setup, tiny_cfg):
    picked = [tiny_setup.targets[i] for i in (1, 11)]
    cfg = tiny_cfg.replace(epochs=1)
    results = train_pass(
        tiny_setup.teacher.model,
        picked,
        cfg,
        tiny_setup.source,
        preprocess_mode=tiny_setup.preprocess_mode,
    )
    steps = tiny_setup.source.steps("train", cfg.batch_size)
    trunks = {r.trunk_step_s for r in results}
    assert len(trunks) == 1 and next(iter(trunks)) > 0  # one trunk, shared by the pass
    for r in results:
        assert r.block_step_s > 0
        assert r.seconds_block == pytest.approx(r.block_step_s * steps * r.epochs)
        assert r.seconds_trunk == pytest.approx(r.trunk_step_s * steps * 1)
    # an independent task has no trunk to split off: its own times stand
    alone = train_pass(
        tiny_setup.teacher.model,
        picked[:1],
        cfg,
        tiny_setup.source,
        preprocess_mode=tiny_setup.preprocess_mode,
    )[0]
    assert math.isnan(alone.block_step_s) and math.isnan(alone.seconds_trunk)
    # --no-block-costs: a fused pass without the measurement
    unmeasured = train_pass(
        tiny_setup.teacher.model,
        picked,
        cfg.replace(block_costs=False),
        tiny_setup.source,
        preprocess_mode=tiny_setup.preprocess_mode,
    )
    assert all(r.fused_group and math.isnan(r.seconds_block) for r in unmeasured)


def test_timing_a_block_leaves_the_trained_block_untouched(tiny_setup, tiny_cfg):
    from greenkd.distill.targets import make_block

    teacher = tiny_setup.teacher.model
    target = tiny_setup.targets[3]
    block = make_block(
        target, tiny_cfg.block, layer=teacher.get_layer(target.name), for_training=True
    )
    before = [w.copy() for w in block.get_weights()]
    batches = data.first_batches(
        data.training_batches(
            tiny_setup.source, tiny_cfg, tiny_setup.preprocess_mode, labels=False
        ),
        TIMED_BATCHES + 1,
    )
    costs = measure_block_costs(pair_model(teacher, [target.name]), [block], batches)
    assert costs.batches == TIMED_BATCHES and costs.trunk_step_s > 0 and costs.block_step_s[0] > 0
    for w0, w1 in zip(before, block.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)


def _pass_row(name: str, block_s: float, trunk_s: float, group: str = "a,b") -> TaskResult:
    return TaskResult(
        name, 0, [], 0.9, 1, 2, 1.0, [0.5, 0.4], {2: 0.9}, 0.0, 0.0, 0.0, 100.0, 110.0,
        device="cpu0", fused_group=group, seconds_block=block_s, seconds_trunk=trunk_s,
    )  # fmt: skip


def test_a_measured_fused_pass_feeds_the_timing_store_and_replans_to_its_own_time():
    # a 10 s pass whose measured parts are trunk 2, blocks 2 and 4 (scaled to the wall: x1.25);
    # the analytic model puts "a"'s teacher prefix at half of "b"'s, the deepest
    model = [TaskCost("a", 5.0, 1.0), TaskCost("b", 9.0, 2.0)]
    costs = {c.name: c for c in fused_costs([_pass_row("a", 2, 2), _pass_row("b", 4, 2)], model)}
    assert costs["b"].prefix_seconds == pytest.approx(2.5)  # the trunk's share of the 10 s
    assert costs["a"].prefix_seconds == pytest.approx(1.25)
    assert costs["a"].own_seconds == pytest.approx(2.5) and costs["b"].own_seconds == 5.0
    # planned fused on one device, the stored costs predict the pass's measured 10 s
    assert device_load(list(costs.values()), fused=True) == pytest.approx(10.0)
    # a pass measured without per-block costs (--no-block-costs) says nothing about a task
    nan = float("nan")
    assert fused_costs([_pass_row("a", nan, nan), _pass_row("b", nan, nan)], model) == []

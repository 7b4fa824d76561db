"""Blocks trained until they are good enough: early stops per task, a fused pass that drops
finished blocks, and a budget that gives what one task leaves to another still improving.

The teacher is built so that its two target layers differ in a known way: `easy` outputs
almost a constant (a tiny kernel and a bias of 3), which a block matches as soon as its output
scale is set, so its MSE has nothing left to gain after one epoch; `hard` is a random 3x3
convolution with a ReLU over 8 channels, which a depthwise-separable block approximates better
for five epochs and more (at this learning rate its MSE still falls by 1% of the layer's output
power or more at every epoch up to the fifth, twice the gain that counts). `easy` is the deeper one, so when it leaves a fused pass the teacher
prefix must shrink to `hard`.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from greenkd.config import RunConfig
from greenkd.distill.setup import prepare
from greenkd.distill.train import Allowance, train_pass, train_tasks
from greenkd.framework import keras

CAP = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("two-speed") / "two_speed.keras"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="hard")(x)
    x = keras.layers.Conv2D(
        8,
        3,
        padding="same",
        name="easy",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-4, seed=1),
        bias_initializer=keras.initializers.Constant(3.0),
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)
    # accept every block, so that a block's stop depends on its MSE alone
    path.with_suffix(".json").write_text(json.dumps({"accuracy": 0.1}))
    cfg = RunConfig(
        model=str(path),
        n_train=128,
        n_val=64,
        batch_size=32,
        epochs=CAP,
        eval_every=1,
        patience=1,
        lr=0.003,
        accept_max_drop=1.0,
        acceptance="threshold",
        replace_growing=True,  # "hard" (3 -> 8 channels) has a larger block
        out=str(tmp_path_factory.mktemp("run")),
    )
    return prepare(cfg)


def _train(setup, names, *, fused: bool, allowance=None, **changes):
    cfg = setup.cfg.replace(fuse=fused, **changes)
    return list(
        train_tasks(
            setup.teacher.model,
            setup.targets_named(names),
            cfg,
            setup.source,
            preprocess_mode=setup.preprocess_mode,
            teacher_accuracy=setup.teacher.accuracy,
            allowance=allowance,
        )
    )


@pytest.fixture(scope="module")
def alone(setup):
    """Each task trained on its own (no budget): the reference every other test compares to."""
    return {r.name: r for r in _train(setup, ["hard", "easy"], fused=False)}


def test_each_task_stops_when_its_own_mse_has_plateaued(alone):
    easy, hard = alone["easy"], alone["hard"]
    assert (easy.epochs, easy.stop) == (2, "converged")  # learnt in one, confirmed by the next
    assert hard.epochs >= 5 and hard.stop in ("converged", "cap")  # gaining for five and more
    assert len(easy.mse_history) == 2 and len(hard.mse_history) == hard.epochs
    assert hard.mse_history[-1] < 0.8 * hard.mse_history[0]


def test_patience_zero_or_no_teacher_accuracy_trains_for_all_the_epochs(setup):
    [fixed] = _train(setup, ["easy"], fused=False, patience=0)  # the paper's fixed count
    [blind] = train_pass(  # nothing says the block is good enough
        setup.teacher.model,
        setup.targets_named(["easy"]),
        setup.cfg,
        setup.source,
        preprocess_mode=setup.preprocess_mode,
    )
    for result in (fixed, blind):
        assert (result.epochs, result.stop) == (CAP, "cap")


def test_a_fused_pass_drops_the_finished_block_and_the_rest_trains_as_if_alone(setup, alone):
    fused = {r.name: r for r in _train(setup, ["hard", "easy"], fused=True)}
    assert fused["easy"].fused_group == fused["hard"].fused_group == "hard,easy"
    assert (fused["easy"].epochs, fused["easy"].stop) == (2, "converged")
    assert (fused["hard"].epochs, fused["hard"].stop) == (alone["hard"].epochs, alone["hard"].stop)
    # after `easy` left, `hard` went on with the same data stream and optimizer state, on a
    # prefix that ends at its own layer: the same updates as when trained on its own
    for name in ("easy", "hard"):
        np.testing.assert_allclose(fused[name].mse_history, alone[name].mse_history, rtol=1e-3)
        for a, b in zip(fused[name].weights, alone[name].weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fused", [False, True], ids=["independent", "fused"])
def test_a_budget_gives_what_a_converged_task_leaves_to_one_still_improving(setup, fused):
    # 7 block-epochs for two tasks: an even split would give each 3.5; `easy` needs 2
    allowance = Allowance(epochs=7)
    results = {r.name: r for r in _train(setup, ["easy", "hard"], fused=fused, allowance=allowance)}
    assert (results["easy"].epochs, results["easy"].stop) == (2, "converged")
    assert (results["hard"].epochs, results["hard"].stop) == (5, "budget")
    assert allowance.epochs == 0
    assert 5 in results["hard"].accuracy_history  # evaluated when the budget ran out


def test_an_epoch_budget_is_shared_out_by_tasks_and_planned_with(setup):
    cfg = setup.cfg.replace(budget="6")  # 3 epochs per task of two, under the cap of 6
    shared = dataclasses.replace(setup, cfg=cfg)
    assert shared.expected_epochs == 3.0
    results = {
        r.name: r for name in ("easy", "hard") for r in shared.train([name], "cpu0", _Quiet())
    }
    assert results["easy"].epochs == 2  # converged: one epoch of its share left over ...
    assert (results["hard"].epochs, results["hard"].stop) == (4, "budget")  # ... for `hard`


def test_a_budget_it_cannot_read_is_one_clear_error():
    from greenkd.errors import GreenkdError

    with pytest.raises(GreenkdError, match="is not N"):
        RunConfig(budget="ten")
    assert RunConfig(budget="90s").budget_limits() == (None, 90.0)


class _Quiet:
    def phase(self, name: str, detail: str = "") -> None: ...
    def epoch(self, task: str, epoch: int, mse: float) -> None: ...

"""Layer tasks: real training on the teacher's own activations."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from greenkd import data
from greenkd.config import RunConfig
from greenkd.distill import targets as tg
from greenkd.distill.train import pair_model, train_pass
from greenkd.framework import keras
from greenkd.rundir import RunDir


def test_block_learns_its_layer(tiny_setup, tiny_cfg):
    target = tiny_setup.targets[6]
    cfg = tiny_cfg.replace(epochs=5)
    result = train_pass(
        tiny_setup.teacher.model,
        [target],
        cfg,
        tiny_setup.source,
        preprocess_mode=tiny_setup.preprocess_mode,
    )[0]
    assert result.name == target.name and result.epochs == 5
    assert len(result.mse_history) == 5
    # real learning: the local loss ends far below the untrained block's
    assert result.mse_best < 0.5 * result.mse_start
    # evaluated every 2 epochs and after the last; the best of them is kept
    assert set(result.accuracy_history) == {2, 4, 5}
    assert result.accuracy == max(result.accuracy_history.values())
    assert 0.0 <= result.accuracy <= 1.0
    assert result.seconds_train > 0 and result.seconds_eval > 0
    assert result.end > result.start
    block = tg.make_block(target, tiny_cfg.block)
    assert [w.shape for w in block.get_weights()] == [w.shape for w in result.weights]


def test_same_layer_same_seed_same_block(tiny_setup, tiny_cfg):
    target = tiny_setup.targets[9]
    cfg = tiny_cfg.replace(epochs=1)
    kw = dict(preprocess_mode=tiny_setup.preprocess_mode)
    a = train_pass(tiny_setup.teacher.model, [target], cfg, tiny_setup.source, **kw)[0]
    b = train_pass(tiny_setup.teacher.model, [target], cfg, tiny_setup.source, **kw)[0]
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert a.accuracy == pytest.approx(b.accuracy)


def test_keeps_the_best_evaluated_weights_not_the_last(tiny_setup, tiny_cfg):
    target = tiny_setup.targets[2]
    cfg = tiny_cfg.replace(epochs=3, eval_every=1, lr=0.05)  # a rough ride: accuracy moves
    result = train_pass(
        tiny_setup.teacher.model,
        [target],
        cfg,
        tiny_setup.source,
        preprocess_mode=tiny_setup.preprocess_mode,
    )[0]
    assert set(result.accuracy_history) == {1, 2, 3}
    best_epoch = max(result.accuracy_history, key=result.accuracy_history.get)
    assert result.best_epoch == best_epoch
    assert result.accuracy == result.accuracy_history[best_epoch]


def resnet_like_teacher() -> keras.Model:
    """Convs with linear outputs followed by BN and ReLU, as in every conv of Keras ResNet50."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_linear_conv_gets_a_linear_block_that_beats_any_relu_block():
    """The reference code's bug: a ReLU-ended block regressing a linear conv's raw output.

    For any non-negative prediction p, (p - y)^2 >= min(y, 0)^2, so no ReLU-ended
    block can go below mean(min(y, 0)^2). Ours ends linear like the conv and must.
    """
    teacher = resnet_like_teacher()
    source = data.load("synthetic", n_train=256, n_val=64)
    cfg = RunConfig(epochs=6, eval_every=6, batch_size=32, augment=False, lr=1e-2)
    target = next(t for t in tg.find(teacher) if t.name == "c2")
    assert target.activation == "linear"
    pairs = pair_model(teacher, ["c2"])
    images = next(
        iter(data.pipeline(source, "train", batch_size=256, preprocess_mode="scale", labels=False))
    )
    _, raw = pairs(images)
    raw = keras.ops.convert_to_numpy(raw)
    relu_floor = float(np.mean(np.minimum(raw, 0.0) ** 2))
    assert (raw < 0).mean() > 0.3  # the conv's raw output really is often negative
    result = train_pass(teacher, [target], cfg, source, preprocess_mode="scale")[0]
    assert result.mse_best < 0.6 * relu_floor


def test_fresh_pipeline_repeats_the_same_order_after_other_work():
    """Any schedule gives a task the same data: the order depends on the seed alone."""
    source = data.load("synthetic", n_train=64, n_val=16)

    def first_labels():
        keras.utils.set_random_seed(0)
        ds = data.pipeline(
            source,
            "train",
            batch_size=64,
            preprocess_mode="none",
            seed=0,
            augment=True,
            repeat=True,
        )
        return next(iter(ds))[1].numpy()

    a = first_labels()
    for _ in range(3):  # unrelated iterations in between, as another task would do
        next(iter(data.pipeline(source, "train", batch_size=8, preprocess_mode="none", seed=9)))
    np.testing.assert_array_equal(a, first_labels())


def test_fused_tasks_match_independent_tasks(tiny_setup, tiny_cfg):
    """One teacher pass for several blocks changes nothing but the time it takes."""

    picked = [tiny_setup.targets[i] for i in (1, 5, 11)]
    cfg = tiny_cfg.replace(epochs=2, block_costs=False)  # the pass's own costs: not compared
    kw = dict(preprocess_mode=tiny_setup.preprocess_mode)
    fused = train_pass(tiny_setup.teacher.model, picked, cfg, tiny_setup.source, **kw)
    for target, f in zip(picked, fused, strict=True):
        alone = train_pass(tiny_setup.teacher.model, [target], cfg, tiny_setup.source, **kw)[0]
        assert f.name == alone.name and f.fused_group
        np.testing.assert_allclose(f.mse_history, alone.mse_history, rtol=1e-3)
        assert f.accuracy == pytest.approx(alone.accuracy, abs=2 / 256)  # at most 2 images
        for wf, wa in zip(f.weights, alone.weights, strict=True):
            np.testing.assert_allclose(wf, wa, rtol=1e-3, atol=1e-4)


def test_ctrl_c_mid_pass_keeps_each_evaluated_blocks_best_weights(tiny_setup, tiny_cfg, tmp_path):
    """A KeyboardInterrupt during a fused pass (as SIGINT raises it in the main thread)."""
    from greenkd.distill.run import distill

    class CtrlC:
        def phase(self, name, detail=""): ...
        def tasks_started(self, total, epochs): ...
        def task_done(self, result, target, accepted): ...
        def epoch(self, task, epoch, mse):
            if epoch == 2 and task == tiny_setup.targets[-1].name:  # after the first evaluation
                raise KeyboardInterrupt

    out = tmp_path / "run"
    cfg = tiny_cfg.replace(epochs=4, eval_every=2, fuse=True, out=str(out))
    # three of the 13 layer tasks in the pass: as many as the behaviour needs, a quarter of the
    # tracing (each block adds its layers to the pass's one compiled step)
    setup = dataclasses.replace(tiny_setup, cfg=cfg, targets=tiny_setup.targets[-3:])
    with pytest.raises(KeyboardInterrupt) as caught:
        distill(cfg, setup=setup, reporter=CtrlC())
    names = [t.name for t in setup.targets]
    assert [r.name for r in caught.value.partial_results] == names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["interrupted_tasks"] == names
    assert summary["tasks_done"] == 0  # none finished its 4 epochs
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    assert [r["task"] for r in rows] == names
    for row, result in zip(rows, caught.value.partial_results, strict=True):
        assert row["epochs"] == "2" and row["best_epoch"] == "2" and row["accepted"] == "false"
        assert 0.0 <= float(row["accuracy"]) <= 1.0  # spliced in and measured at epoch 2
        kept = RunDir(out).load_block(row["task"])
        for a, b in zip(kept, result.weights, strict=True):
            np.testing.assert_array_equal(a, b)

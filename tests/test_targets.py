"""Targets, replacement blocks and graph surgery on real Keras graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greenkd import models
from greenkd.distill import targets as tg
from greenkd.distill.assemble import assemble, splice
from greenkd.errors import GreenkdError
from greenkd.framework import keras


@pytest.fixture(scope="module")
def vgg():
    return models.vgg16(width=1 / 16)


@pytest.fixture(scope="module")
def resnet():
    return models.resnet50(image_size=32)


def branchy_model() -> keras.Model:
    """Branches, concatenation, 'valid' padding, strides 2, and 5x5, 7x7, 1x7 and 1x1 kernels."""
    inputs = keras.Input((32, 32, 3))
    stem = keras.layers.Conv2D(8, 7, strides=2, padding="valid", name="stem7x7")(inputs)
    left = keras.layers.Conv2D(6, 5, padding="same", activation="relu", name="left5x5")(stem)
    right = keras.layers.Conv2D(4, 1, name="right1x1")(stem)
    right = keras.layers.Conv2D(6, (1, 7), padding="same", name="right1x7")(right)
    merged = keras.layers.Concatenate(name="concat")([left, right])
    down = keras.layers.Conv2D(
        10, 3, strides=2, padding="valid", activation="relu", name="down3x3"
    )(merged)
    dilated = keras.layers.Conv2D(10, 3, dilation_rate=2, padding="same", name="dilated")(down)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([down, dilated]))
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x), name="branchy")


def test_vgg16_has_13_targets_and_resnet50_17(vgg, resnet):
    assert [t.name for t in tg.find(vgg)] == [
        f"block{b}_conv{c}"
        for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
        for c in range(1, n + 1)
    ]
    found = tg.find(resnet)
    assert len(found) == 17
    assert found[0].name == "conv1_conv" and found[0].kernel == (7, 7)
    assert found[0].strides == (2, 2) and found[0].padding == "valid"
    assert all(t.kernel == (3, 3) for t in found[1:])


def test_targets_command_json_counts():
    from typer.testing import CliRunner

    from greenkd.cli import app

    for model, count in (("vgg16", 13), ("resnet50", 17)):
        # the real command in this process (TensorFlow is loaded already); the exit codes of
        # errors through `greenkd` itself are tested in a subprocess in test_distill_cli.py
        done = CliRunner().invoke(app, ["targets", model, "--json"])
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        assert report["model"]["n_targets"] == count == len(report["targets"])
        first = report["targets"][0]
        assert {
            "name",
            "kernel",
            "strides",
            "input_shape",
            "output_shape",
            "params_before",
            "params_after",
            "flops_before",
            "flops_after",
        } <= set(first)


def first_conv_only_model(path):
    """A model whose one compressible layer is a 3 -> 8 channel conv: any block is larger."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(16, 1, name="mix1x1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    return path


def test_a_target_whose_block_is_larger_is_skipped_unless_replace_growing(vgg):
    found = tg.find(models.vgg16(width=1.0))
    first = found[0]  # 3 -> 64 channels: 1,792 params and 3.5M FLOPs against 5,672 and 10M
    assert first.params_after > first.params_before and first.flops_after > first.flops_before
    kept, skipped = tg.split(found)
    assert [s.target.name for s in skipped] == ["block1_conv1"]
    assert [t.name for t in kept] == [t.name for t in found[1:]]
    assert "params 1,792 -> " in skipped[0].reason and "FLOPs 3,538,944 -> " in skipped[0].reason
    assert skipped[0].to_dict() == {
        "name": "block1_conv1",
        "reason": skipped[0].reason,
        "params_before": first.params_before,
        "params_after": first.params_after,
        "flops_before": first.flops_before,
        "flops_after": first.flops_after,
    }
    assert tg.split(found, replace_growing=True) == (found, [])
    # more params alone is enough: at width 1/16 the first three blocks have more params only
    kept, skipped = tg.split(tg.find(vgg))
    assert [s.target.name for s in skipped] == ["block1_conv1", "block1_conv2", "block2_conv1"]
    assert all("FLOPs" not in s.reason for s in skipped) and len(kept) == 10
    for t in kept:  # the rule is the selection's: nothing kept grows on either count
        assert t.params_after <= t.params_before and t.flops_after <= t.flops_before


def test_targets_json_lists_every_candidate_and_says_which_are_replaced_and_why():
    from typer.testing import CliRunner

    from greenkd.cli import app

    done = CliRunner().invoke(app, ["targets", "vgg16", "--width", "0.125", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["model"]["n_targets"] == len(report["targets"]) == 13
    assert (report["model"]["n_replaced"], report["model"]["n_skipped"]) == (12, 1)
    [skipped] = [t for t in report["targets"] if not t["replaced"]]
    assert skipped["name"] == "block1_conv1" and skipped["params_after"] > skipped["params_before"]
    assert skipped["skip_reason"] == "block a is larger than the conv (params 224 -> 295)"
    assert all(t["skip_reason"] is None for t in report["targets"] if t["replaced"])
    saved = sum(t["params_before"] - t["params_after"] for t in report["targets"] if t["replaced"])
    assert report["model"]["params_saved"] == saved
    done = CliRunner().invoke(
        app, ["targets", "vgg16", "--width", "0.125", "--json", "--replace-growing"]
    )
    report = json.loads(done.stdout)
    assert all(t["replaced"] for t in report["targets"]) and report["model"]["n_replaced"] == 13


def test_targets_on_a_model_whose_only_compressible_layer_grows_lists_it_skipped(tmp_path):
    from typer.testing import CliRunner

    from greenkd.cli import app

    model = first_conv_only_model(tmp_path / "stem.keras")
    done = CliRunner().invoke(app, ["targets", str(model), "--json"])
    assert done.exit_code == 0, done.output
    [stem] = json.loads(done.stdout)["targets"]
    assert stem["name"] == "stem" and stem["replaced"] is False
    assert stem["skip_reason"].startswith("block a is larger than the conv (params 224 -> ")
    done = CliRunner().invoke(app, ["targets", str(model)], env={"COLUMNS": "120"})
    assert done.exit_code == 0, done.output
    row = next(line for line in done.stdout.splitlines() if line.startswith("│ stem"))
    assert "3x3 / 1" in row and "224 -> 295" in row
    text = " ".join(done.stdout.split())  # the title and caption wrap
    assert "skipped: more params" in done.stdout and "0 of 1 layers to replace" in text
    assert "nothing to replace" in text and "--replace-growing replaces it anyway" in text


def test_conv_cost_by_hand():
    inputs = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(6, 3, padding="same", name="c")(inputs)
    model = keras.Model(inputs, conv)
    (t,) = tg.find(model)
    assert t.params_before == 3 * 3 * 4 * 6 + 6
    assert t.flops_before == 2 * 8 * 8 * 6 * 3 * 3 * 4
    # block (a): dw 3x3 on 4 ch, pw 4->6, dw 3x3 on 6 ch, pw 6->6 (BN not counted)
    assert t.flops_after == 2 * 64 * (4 * 9 + 4 * 6 + 6 * 9 + 6 * 6)
    # params: dw 36 + bn 16 + pw 24 + bn 24 + dw 54 + bn 24 + pw 36 + bn 24
    assert t.params_after == 36 + 16 + 24 + 24 + 54 + 24 + 36 + 24


def test_1x1_depthwise_and_separable_convs_are_not_targets():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.SeparableConv2D(4, 3, padding="same")(x)
    model = keras.Model(inputs, x)
    assert tg.find(model) == []
    with pytest.raises(GreenkdError, match="no compressible layer"):
        tg.require_targets(tg.find(model), "tiny")


@pytest.mark.parametrize("kind", ["a", "b", "c", "d"])
def test_every_block_kind_matches_every_target_shape(kind):
    model = branchy_model()
    for t in tg.find(model):
        block = tg.make_block(t, kind, layer=model.get_layer(t.name))
        assert tuple(block.output.shape[1:]) == t.output_shape, (kind, t.name)
        n_dw = sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in block.layers)
        assert n_dw == tg.BLOCK_LAYERS[kind]
        has_add = any(isinstance(layer, keras.layers.Add) for layer in block.layers)
        assert has_add == (kind in ("c", "d"))


@pytest.mark.parametrize("name", ["vgg", "resnet", "branchy"])
def test_splicing_each_target_and_all_keeps_the_output_shape(name, vgg, resnet):
    model = {"vgg": vgg, "resnet": resnet, "branchy": branchy_model()}[name]
    found = tg.find(model)
    want = tuple(model.output.shape)
    for t in found:
        spliced = splice(
            model, {t.name: tg.make_block(t, "a", layer=model.get_layer(t.name))}, share=True
        )
        assert tuple(spliced.output.shape) == want, t.name
        assert t.name not in {layer.name for layer in spliced.layers}
    weights = {}
    for t in found:
        weights[t.name] = tg.make_block(t, "a", layer=model.get_layer(t.name)).get_weights()
    student = assemble(model, found, weights, "a")
    assert tuple(student.output.shape) == want
    assert not any(layer.name in weights for layer in student.layers)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert student(x).shape == model(x).shape
    assert student.count_params() < model.count_params()


def test_assembled_student_copies_weights_and_does_not_share_them(vgg):
    found = tg.find(vgg)
    last = found[-1]
    block = tg.make_block(last, "a", layer=vgg.get_layer(last.name))
    student = assemble(vgg, found, {last.name: block.get_weights()}, "a")
    for name in ("block1_conv1", "predictions"):
        np.testing.assert_array_equal(
            student.get_layer(name).get_weights()[0], vgg.get_layer(name).get_weights()[0]
        )
        assert student.get_layer(name) is not vgg.get_layer(name)
    np.testing.assert_array_equal(
        student.get_layer(f"{last.name}_kd").get_weights()[0], block.get_weights()[0]
    )


def test_nested_models_are_flattened_for_surgery():
    inner = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")],
        name="backbone",
    )
    inputs = keras.Input((16, 16, 3))
    x = inner(inputs)
    x = keras.layers.Conv2D(4, 3, name="outer_conv")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    found = tg.find(model)
    assert [t.name for t in found] == ["inner_conv", "outer_conv"]
    student = assemble(
        model, found, {t.name: tg.make_block(t, "a").get_weights() for t in found}, "a"
    )
    assert tuple(student.output.shape) == tuple(model.output.shape)


def test_block_ends_like_the_conv_it_replaces(vgg, resnet):
    relu_target = tg.find(vgg)[3]
    linear_target = tg.find(resnet)[1]
    assert relu_target.activation == "relu" and linear_target.activation == "linear"
    relu_block = tg.make_block(relu_target, "a", seed=0)
    linear_block = tg.make_block(linear_target, "a", seed=0)
    assert isinstance(relu_block.layers[-1], keras.layers.Activation)
    assert isinstance(linear_block.layers[-1], keras.layers.BatchNormalization)
    x = np.random.default_rng(0).normal(size=(4, *linear_target.input_shape)).astype("float32")
    assert float(np.min(linear_block(x, training=True))) < 0  # can be negative, as the conv


def test_training_batch_norm_is_keras_batch_norm_with_a_faster_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (16, 6, 6, 5)).astype("float32")
    plain = keras.layers.BatchNormalization(momentum=0.9)
    fast = tg.TrainingBatchNorm(momentum=0.9)
    plain.build(x.shape)
    fast.build(x.shape)
    fast.set_weights([w + 0.1 * i for i, w in enumerate(plain.get_weights())])
    plain.set_weights(fast.get_weights())
    for _ in range(3):  # the moving statistics follow the same updates
        np.testing.assert_allclose(
            fast(x, training=True), plain(x, training=True), rtol=1e-4, atol=1e-4
        )
    for a, b in zip(fast.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        fast(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5
    )
    # a block built for training holds the same weights as the one the student gets
    t = tg.find(models.vgg16(width=1 / 16))[3]
    trained = tg.make_block(t, "a", seed=1, for_training=True)
    saved = tg.make_block(t, "a", seed=1)
    assert [w.shape for w in trained.get_weights()] == [w.shape for w in saved.get_weights()]
    assert any(isinstance(layer, tg.TrainingBatchNorm) for layer in trained.layers)
    assert not any(isinstance(layer, tg.TrainingBatchNorm) for layer in saved.layers)
    assert any(isinstance(layer, tg.ShiftedDepthwiseConv2D) for layer in trained.layers)
    assert not any(isinstance(layer, tg.ShiftedDepthwiseConv2D) for layer in saved.layers)


def test_fast_layers_train_a_model_as_keras_does_and_leave_it_plain(tmp_path):
    """The fine-tune's fast path: every batch norm (a nested block's too) trains through the fused
    kernel inside the context (and every depthwise convolution through the framework's fastest
    form: Keras's own op under TensorFlow), to the weights Keras's own batch norms reach, and the model is
    Keras's own again after it (it saves and loads without greenkd's class)."""
    from greenkd.framework import fast_layers

    t = tg.find(models.vgg16(width=1 / 16))[3]

    def student() -> keras.Model:
        inputs = keras.Input(t.input_shape)
        x = tg.make_block(t, "a", seed=1)(inputs)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
        model.get_layer("head").set_weights([np.full((t.output_shape[-1], 3), 0.1), np.zeros(3)])
        model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
        return model

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (8, *t.input_shape)).astype("float32")
    y = rng.integers(0, 3, 8)
    plain, fused = student(), student()
    fused.set_weights(plain.get_weights())
    for _ in range(4):
        plain.train_on_batch(x, y)
    with fast_layers(fused):
        norms = [
            layer
            for layer in fused._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)
        ]
        assert len(norms) == 5 and all(isinstance(n, tg.TrainingBatchNorm) for n in norms)
        depthwise = [
            layer
            for layer in fused._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.DepthwiseConv2D)
        ]
        assert len(depthwise) == 2
        assert all(type(d) is tg.ShiftedDepthwiseConv2D for d in depthwise)
        for _ in range(4):
            fused.train_on_batch(x, y)
    assert not any(isinstance(n, tg.TrainingBatchNorm) for n in norms)
    assert all(type(d) is keras.layers.DepthwiseConv2D for d in depthwise)
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(plain.get_weights(), student().get_weights(), strict=True)
    )
    assert moved > 1e-3  # the four steps trained the model
    for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    fused.save(tmp_path / "fused.keras")
    loaded = keras.models.load_model(tmp_path / "fused.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fused.predict(x, verbose=0))


@pytest.mark.parametrize("name", ["resnet", "branchy"])
def test_branch_model_gives_each_spliced_model_output(name, resnet):
    """Evaluating all blocks at once (one trunk, one suffix per block) = splicing each alone."""
    from greenkd.distill.assemble import branches

    model = {"resnet": resnet, "branchy": branchy_model()}[name]
    found = tg.find(model)
    picked = [found[0], found[len(found) // 2], found[-1]]
    blocks = {
        t.name: tg.make_block(t, "a", layer=model.get_layer(t.name), seed=t.index) for t in picked
    }
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    together = branches(model, blocks)(x, training=False)
    assert len(together) == len(picked)
    for t, out in zip(picked, together, strict=True):
        alone = splice(model, {t.name: blocks[t.name]}, share=True)(x, training=False)
        np.testing.assert_allclose(out, alone, rtol=1e-5, atol=1e-6)
    reference = model(x, training=False)
    assert not np.allclose(together[0], reference)  # each branch really holds its block

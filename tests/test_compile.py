"""One jit policy and compile time kept apart: validation batches of one shape (so each
evaluation step is traced once), tracing time out of the training seconds, `--jit` recorded."""

from __future__ import annotations

import json
import math

import pytest

from greenkd import data
from greenkd.config import RunConfig
from greenkd.distill import assemble as asm
from greenkd.distill.setup import prepare
from greenkd.distill.train import branch_accuracies, evaluate_accuracy, train_pass
from greenkd.errors import GreenkdError
from greenkd.framework import keras, tf

N_VAL = 300  # a full batch of 256 and a ragged 44, padded


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "two_conv.keras"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for name in ("conv1", "conv2"):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=name)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    path.with_suffix(".json").write_text(json.dumps({"accuracy": 0.1}))
    cfg = RunConfig(
        model=str(path), n_train=64, n_val=N_VAL, batch_size=32, epochs=3, eval_every=1,
        patience=0, acceptance="threshold", replace_growing=True,
        out=str(tmp_path_factory.mktemp("run")),
    )  # fmt: skip
    return prepare(cfg)


def test_validation_batches_have_one_shape_and_the_padding_weighs_nothing(setup):
    val = data.validation_batches(setup.source, setup.cfg, setup.preprocess_mode)
    shapes = {tuple(x.shape) for x, _, _ in val}
    assert shapes == {(256, 32, 32, 3)}
    weights = tf.concat([w for _, _, w in val], axis=0).numpy()
    assert weights.sum() == N_VAL and set(weights.tolist()) == {0.0, 1.0}
    traces = []

    @tf.function
    def step(x):  # a compiled evaluation step sees these batches: one shape, one trace
        traces.append(1)
        return tf.reduce_sum(x)

    for x, _, _ in val:
        step(x)
    assert len(traces) == 1


def test_every_evaluation_of_a_task_runs_one_traced_step(setup):
    teacher = setup.teacher.model
    val = data.validation_batches(setup.source, setup.cfg, setup.preprocess_mode)
    model = asm.branches(teacher, {"conv1": teacher.get_layer("conv1")})  # the teacher itself
    first = branch_accuracies(model, val)
    again = branch_accuracies(model, val)  # as every `--eval-every` epochs of a task
    assert first == again
    assert model.predict_function.experimental_get_tracing_count() == 1
    # weighted: the padded copies count for nothing, every validation image once
    predictions = teacher.predict(val.map(lambda x, y, w: x), verbose=0)[:N_VAL]
    labels = tf.concat([y for _, y, _ in val], axis=0).numpy()[:N_VAL]
    expected = float((predictions.argmax(axis=-1) == labels).mean())
    assert first[0] == pytest.approx(expected)
    assert evaluate_accuracy(teacher, val) == pytest.approx(expected)


def test_tasks_time_their_compilation_apart_from_their_training(setup):
    [result] = train_pass(
        setup.teacher.model, setup.targets_named(["conv2"]), setup.cfg, setup.source,
        preprocess_mode=setup.preprocess_mode,
    )  # fmt: skip
    assert math.isfinite(result.seconds_compile) and result.seconds_compile > 0
    parts = (
        result.seconds_setup + result.seconds_train + result.seconds_eval + result.seconds_compile
    )
    assert parts == pytest.approx(result.end - result.start, rel=0.1, abs=0.5)
    assert result.seconds_train > 0 and result.seconds_eval > 0


def test_the_jit_policy_is_one_of_three_and_recorded(setup, tmp_path):
    with pytest.raises(GreenkdError, match="--jit must be one of off, on, auto"):
        RunConfig(jit="sometimes")
    assert RunConfig().jit == "off"

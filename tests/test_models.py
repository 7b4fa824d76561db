"""Teachers: the zoo, user files, cached training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from greenkd import data, models
from greenkd.config import RunConfig
from greenkd.errors import GreenkdError


def test_vgg16_width_multiplier_scales_filters_and_keeps_keras_names():
    full = models.vgg16(width=1.0)
    eighth = models.vgg16(width=0.125)
    assert full.get_layer("block5_conv3").filters == 512
    assert eighth.get_layer("block5_conv3").filters == 64
    assert eighth.get_layer("block1_conv1").filters == 8
    # the paper's CIFAR variant: global average pooling, no dense head but the classifier
    dense = [layer for layer in full.layers if layer.__class__.__name__ == "Dense"]
    assert len(dense) == 1 and full.output.shape == (None, 10)
    assert full.count_params() == 14_714_688 + 512 * 10 + 10  # Keras VGG16 conv stack + classifier


@pytest.mark.parametrize("size", [32, 64, 75])
def test_resnet50_any_input_size_from_32(size):
    model = models.resnet50(image_size=size, num_classes=7)
    assert model.input.shape == (None, size, size, 3)
    assert model.output.shape == (None, 7)


def test_resnet50_below_32_is_a_user_error():
    with pytest.raises(GreenkdError, match="at least 32"):
        models.resnet50(image_size=24)


def test_user_model_file_loads_and_bad_files_are_user_errors(tmp_path):
    path = tmp_path / "mine.keras"
    models.vgg16(width=1 / 16).save(path)
    assert models.load_file(path).count_params() == models.vgg16(width=1 / 16).count_params()
    with pytest.raises(GreenkdError, match="does not exist"):
        models.load_file(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(GreenkdError, match="cannot load"):
        models.load_file(junk)
    with pytest.raises(GreenkdError, match="unknown model"):
        models.load_file("alexnet")


def test_a_user_models_accuracy_is_measured_once_per_file_and_validation_split(
    tiny_setup, tiny_cfg, tmp_path
):
    """A user's model file without a .json beside it: the first process measures its val top-1
    and keeps it; the next ones (a sweep's runs, a run's workers) read it. Its key is the file's
    bytes and the validation split's settings."""
    from greenkd.distill.setup import prepare
    from greenkd.distill.train import evaluate_accuracy

    path = tmp_path / "mine.keras"
    tiny_setup.teacher.model.save(path)
    cfg = tiny_cfg.replace(model=str(path), preprocess=tiny_setup.preprocess_mode)
    assert models.measured_accuracy(cfg) is None
    first = prepare(cfg).teacher.accuracy
    val = data.validation_batches(tiny_setup.source, cfg, tiny_setup.preprocess_mode)
    assert first == pytest.approx(evaluate_accuracy(tiny_setup.teacher.model, val), abs=1e-6)
    assert models.measured_accuracy(cfg) == first
    # what the next process gets is what is kept (here made different on purpose to tell)
    kept = models.measured_accuracy_path(cfg)
    kept.write_text(json.dumps({"accuracy": 0.123}))
    assert prepare(cfg).teacher.accuracy == 0.123
    # another validation split, or the same file saved with other weights: measured again
    assert models.measured_accuracy_path(cfg.replace(n_val=128)) != kept
    model = models.load_file(path)
    model.set_weights([w * 0 for w in model.get_weights()])  # every image: class 0
    model.save(path)
    assert models.measured_accuracy_path(cfg) != kept
    assert prepare(cfg).teacher.accuracy not in (0.123, first)


def test_teacher_is_trained_once_and_cached_by_config(tiny_setup, tiny_cfg):
    # tiny_setup trained (or found) it; asking again reuses the file
    again = models.get_teacher(tiny_cfg)
    assert not again.trained_now
    assert again.path == tiny_setup.teacher.path
    assert again.accuracy == tiny_setup.teacher.accuracy
    # a setting that changes the teacher changes the cache key
    assert models.teacher_path(tiny_cfg.replace(teacher_epochs=4)) != again.path
    assert models.teacher_path(tiny_cfg.replace(teacher_patience=2)) != again.path
    # settings that only matter to distillation do not
    assert models.teacher_path(tiny_cfg.replace(epochs=9, gpus=2, sched="binpack")) == again.path


def test_a_changed_training_rule_retrains(tiny_cfg, monkeypatch):
    before = models.teacher_path(tiny_cfg)
    monkeypatch.setattr(models, "TEACHER_TRAINING_VERSION", models.TEACHER_TRAINING_VERSION + 1)
    assert models.teacher_path(tiny_cfg) != before


def test_tiny_teacher_learns_the_synthetic_task(tiny_setup):
    # 1024 images, 8 epochs, width 1/16: far above the 10% of chance
    assert tiny_setup.teacher.accuracy > 0.7


def test_teacher_train_command_reports_the_cache(tiny_setup, tiny_cfg):
    args = [
        sys.executable,
        "-m",
        "greenkd",
        "teacher",
        "train",
        "--width",
        "0.0625",
        "--n-train",
        "1024",
        "--n-val",
        "256",
        "--epochs",
        "8",
        "--batch-size",
        "32",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cached" in proc.stdout and str(tiny_setup.teacher.path) in proc.stdout
    assert f"stopped: {tiny_setup.teacher.training.stopped}" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "greenkd", "teacher", "train", "--model", "x.keras"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "teacher train knows" in bad.stderr


def test_default_run_settings_are_the_embedded_small_job():
    cfg = RunConfig()
    assert (cfg.model, cfg.width, cfg.dataset, cfg.image_size) == ("vgg16", 0.125, "synthetic", 32)


# --------------------------------------------------------------------------- teacher training


def test_plateau_rule_warms_up_halves_stops_and_restores_the_best_epoch():
    keras = models.keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rule = models.UntilPlateau(1e-3, warmup_steps=4, patience=4, halve_after=2)
    rule.set_model(model)
    rates = []
    for batch in range(5):
        rule.on_train_batch_begin(batch)
        rates.append(float(model.optimizer.learning_rate))
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # one epoch, per batch
    stops, rates = [], []
    for epoch, top1 in enumerate([0.5, 0.8, 0.7, 0.8, 0.6, 0.75]):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        rule.on_epoch_end(epoch, {"val_accuracy": top1})
        stops.append(bool(model.stop_training))
        rates.append(float(model.optimizer.learning_rate))
    # 0.8 again is no gain: 2 epochs without one halve the rate, 4 end training
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    assert stops == [False] * 5 + [True]
    rule.on_train_end()
    assert rule.best_epoch == 2 and rule.best == 0.8
    assert all((w == 1).all() for w in model.get_weights())  # epoch 2's weights, not the last


@pytest.fixture
def linear_teacher(monkeypatch):
    """train_teacher's real loop on a linear classifier at a brisk rate: learns digits in 1 s."""
    keras = models.keras

    def linear(name, *, width, image_size, num_classes, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input((image_size, image_size, 3)),
                keras.layers.AveragePooling2D(4),  # back to the digits' own 8x8
                keras.layers.Rescaling(1 / 128),
                keras.layers.Flatten(),
                keras.layers.Dense(num_classes, activation="softmax"),
            ]
        )

    monkeypatch.setattr(models, "build", linear)
    monkeypatch.setattr(models, "teacher_lr", lambda cfg: 1e-2)

    def train(**settings):
        from greenkd import data

        pytest.importorskip("sklearn")
        cfg = RunConfig(dataset="digits", n_train=256, n_val=64, batch_size=16, **settings)
        source = data.load_for(cfg)
        model, record = models.train_teacher(cfg, source)
        val = data.validation_batches(source, cfg, models.preprocess_mode(cfg))
        kept = float(model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
        return record, kept

    return train


def test_teacher_stops_when_val_top1_stops_improving_and_keeps_its_best_epoch(linear_teacher):
    record, kept = linear_teacher(teacher_epochs=30, teacher_patience=2)
    assert record.stopped == "no val top-1 gain in 2 epochs"
    assert record.epochs_run == record.best_epoch + 2 < 30
    assert len(record.val_accuracy) == record.epochs_run
    assert record.accuracy == max(record.val_accuracy) == record.val_accuracy[record.best_epoch - 1]
    assert record.accuracy > 0.5  # it learned before it stopped
    # the model returned is the best epoch's, not the last one's (which scored less)
    assert record.val_accuracy[-1] < record.accuracy
    assert kept == pytest.approx(record.accuracy, abs=1e-6)


def test_teacher_training_stops_at_the_cap(linear_teacher):
    record, kept = linear_teacher(teacher_epochs=2, teacher_patience=5)
    assert record.stopped == "reached the cap of 2 epochs"
    assert record.epochs_run == 2 and len(record.val_accuracy) == 2
    assert kept == pytest.approx(record.accuracy, abs=1e-6) and record.seconds > 0


def test_how_a_teacher_stopped_is_in_its_json_and_comes_back_when_cached(tiny_setup, tiny_cfg):
    trained = tiny_setup.teacher
    meta = json.loads(trained.path.with_suffix(".json").read_text())
    record = meta["training"]
    assert record["epochs_run"] == len(record["val_accuracy"]) <= tiny_cfg.teacher_epochs
    assert record["accuracy"] == meta["accuracy"] == trained.accuracy
    assert record["stopped"] in (
        f"no val top-1 gain in {tiny_cfg.teacher_patience} epochs",
        f"reached the cap of {tiny_cfg.teacher_epochs} epochs",
    )
    again = models.get_teacher(tiny_cfg)
    assert not again.trained_now
    assert again.training_record() == record == trained.training_record()

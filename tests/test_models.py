"""Teachers: the zoo, user files, cached training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from greenkd import models
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


def test_teacher_is_trained_once_and_cached_by_config(tiny_setup, tiny_cfg):
    # tiny_setup trained (or found) it; asking again reuses the file
    again = models.get_teacher(tiny_cfg)
    assert not again.trained_now
    assert again.path == tiny_setup.teacher.path
    assert again.accuracy == tiny_setup.teacher.accuracy
    # a setting that changes the teacher changes the cache key
    assert models.teacher_path(tiny_cfg.replace(teacher_epochs=4)) != again.path
    # settings that only matter to distillation do not
    assert models.teacher_path(tiny_cfg.replace(epochs=9, gpus=2, sched="binpack")) == again.path


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

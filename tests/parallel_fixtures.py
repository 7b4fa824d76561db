"""Fixtures of the parallel-run tests: a private cache, a tiny trained teacher, run helpers.

The teacher is a 5-convolution CNN trained once per test session on 512
synthetic images (a few seconds) and saved as a .keras file with its accuracy
beside it, so every worker process, Dask worker and MPI rank loads the same
file. Five layer tasks keep a whole parallel run at a few tens of seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from greenkd.config import RunConfig

GREENKD = [sys.executable, "-m", "greenkd"]
N_TRAIN, N_VAL = 512, 128


@pytest.fixture(scope="session")
def parallel_root(tmp_path_factory) -> Path:
    """A private GREENKD_CACHE (and timing store) shared by this session's parallel tests."""
    return tmp_path_factory.mktemp("parallel")


def parallel_env(root: Path) -> dict[str, str]:
    """Environment for runs: the private cache, its own timing store, no GPU."""
    return {
        "GREENKD_CACHE": str(root / "cache"),
        "GREENKD_TIMINGS": str(root / "cache" / "timings.json"),
        "CUDA_VISIBLE_DEVICES": "",
    }


@pytest.fixture(scope="session")
def small_teacher(parallel_root) -> Path:
    """A trained 5-conv CNN (.keras) with `accuracy` in the .json beside it."""
    from greenkd import data as data_mod
    from greenkd.framework import keras

    path = parallel_root / "small_cnn.keras"
    source = data_mod.load("synthetic", n_train=N_TRAIN, n_val=N_VAL, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    for i, filters in enumerate((8, 12, 16, 16, 24), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if i in (2, 4):
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(source.num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    train = data_mod.pipeline(
        source, "train", batch_size=32, preprocess_mode="none", augment=True, seed=0, repeat=True
    )
    val = data_mod.pipeline(source, "val", batch_size=128, preprocess_mode="none")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(train, epochs=25, steps_per_epoch=N_TRAIN // 32, verbose=0, shuffle=False)
    accuracy = float(model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
    model.save(path)
    path.with_suffix(".json").write_text(json.dumps({"accuracy": accuracy}))
    return path


def tiny_config(teacher: Path, out: Path, **changes) -> RunConfig:
    """Two 1-core CPU devices, 4 short epochs per task evaluated once, no fine-tuning.

    After 4 epochs the small teacher's blocks splice in at 17-66% top-1 (teacher 95%, trained on
    one TensorFlow thread: conftest.py): a 50-point threshold (45%) lets the deeper three in
    (50.0, 66.4, 50.7%) and keeps conv1/conv2 out (18.7, 17.1%), 6 validation images or more
    either side, so the backends are compared on a real selection.
    Tasks run one at a time (`fuse=False`), so each has its own interval and
    worker; the fused tests say `fuse=True`.
    """
    values = {
        "model": str(teacher),
        "dataset": "synthetic",
        "n_train": N_TRAIN,
        "n_val": N_VAL,
        "batch_size": 32,
        "epochs": 4,
        "eval_every": 4,
        "acceptance": "threshold",  # the per-block rule these tests assert; target adds fine-tunes
        "replace_growing": True,  # five tasks: conv1 (3 -> 8 channels) has a larger block
        "accept_max_drop": 0.5,
        "finetune_epochs": 0,
        "gpus": 2,
        "cores_per_device": 1,
        "out": str(out),
        "fuse": False,
    }
    values.update(changes)
    return RunConfig(**values)


def run_cli(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    """`greenkd ARGS` in a fresh interpreter, with `env` over this environment."""
    return subprocess.run(
        [*GREENKD, *args],
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 300),
        env={**os.environ, **env},
        **kw,
    )


def read_tasks(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (Path(run_dir) / "tasks.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live process below `pid` (default: this one)."""
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def bound_to(cores: set[int], processes: Iterator[psutil.Process]) -> list[psutil.Process]:
    """The processes whose CPU affinity is exactly `cores` (how a device's worker is told apart)."""
    found = []
    for p in processes:
        try:
            if set(p.cpu_affinity()) == cores and "python" in p.name().lower():
                found.append(p)
        except psutil.Error:
            continue
    return found


class RecordingReporter:
    """A Reporter that keeps what a run tells it, and can act on an epoch (a fault test's hook)."""

    def __init__(self, on_epoch=None) -> None:
        self.phases: list[tuple[str, str]] = []
        self.epochs: list[tuple[str, int]] = []
        self.done: list[str] = []
        self.on_epoch = on_epoch

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append((name, detail))

    def tasks_started(self, total: int, epochs: int) -> None:
        pass

    def epoch(self, task: str, epoch: int, mse: float) -> None:
        self.epochs.append((task, epoch))
        if self.on_epoch is not None:
            self.on_epoch(task, epoch)

    def task_done(self, result, target, accepted: bool) -> None:
        self.done.append(result.name)

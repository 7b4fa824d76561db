"""Teachers: the model zoo, user `.keras` files, and cached teacher training.

`vgg16` is the paper's CIFAR variant (§4.1.3): the Keras VGG16 convolution
stack with its layer names, global average pooling instead of the dense head,
and a `width` multiplier on every layer's filters so tests and the CPU default
stay small. `resnet50` is `keras.applications.ResNet50(weights=None)` for any
input size >= 32.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenkd import data as data_mod
from greenkd.config import MODEL_ZOO, RunConfig, is_model_file, unknown_model
from greenkd.errors import GreenkdError
from greenkd.fileio import read_json, write_json_atomic
from greenkd.framework import (
    build_before_tracing,
    fast_layers,
    keras,
    weights_set_afterwards,
)
from greenkd.paths import cache_dir

ZOO = MODEL_ZOO
# keras.applications' own preprocessing for these architectures
ZOO_PREPROCESS = {"vgg16": "caffe", "resnet50": "caffe"}
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16(
    *, width: float = 1.0, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> keras.Model:
    """VGG16's conv stack (Keras layer names) + global average pooling + softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), name="input")
    x = inputs
    for b, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = keras.layers.Conv2D(
                max(1, round(filters * width)),
                3,
                padding="same",
                activation="relu",
                name=f"block{b}_conv{c}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg16")


def resnet50(*, image_size: int = 32, num_classes: int = 10, seed: int = 0) -> keras.Model:
    """keras.applications.ResNet50, untrained, for `image_size` >= 32."""
    if image_size < 32:
        raise GreenkdError(f"resnet50 needs inputs of at least 32x32, got {image_size}")
    keras.utils.set_random_seed(seed)
    return keras.applications.ResNet50(
        weights=None, input_shape=(image_size, image_size, 3), classes=num_classes
    )


def build(
    name: str, *, width: float = 1.0, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> keras.Model:
    """A fresh zoo teacher by name."""
    if name == "vgg16":
        return vgg16(width=width, image_size=image_size, num_classes=num_classes, seed=seed)
    if name == "resnet50":
        return resnet50(image_size=image_size, num_classes=num_classes, seed=seed)
    raise unknown_model(name)


def load_file(path: str | Path) -> keras.Model:
    """A user's saved Keras model; missing or unreadable files are user errors."""
    if not is_model_file(str(path)):
        raise unknown_model(str(path))
    path = Path(path).expanduser()
    if not path.is_file():
        raise GreenkdError(f"model file {path} does not exist")
    try:
        with weights_set_afterwards():  # every weight is then read from the file
            model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for foreign or corrupt files
        raise GreenkdError(f"cannot load {path} as a Keras model: {exc}") from None
    if not isinstance(model, keras.Model):
        raise GreenkdError(f"{path} holds a {type(model).__name__}, not a Keras model")
    return model


def preprocess_mode(cfg: RunConfig) -> str:
    """The input preprocessing for this run: explicit, else the zoo model's, else none."""
    if cfg.preprocess is not None:
        return cfg.preprocess
    return ZOO_PREPROCESS.get(cfg.model, "none")


# --------------------------------------------------------------------------- teacher training


# The training rule's version, in the cache key: a changed rule (schedule, stopping, augmentation
# policy) retrains instead of reusing a teacher the old rule made. 2: until val top-1 stops
# improving, best weights kept, no flips for digits.
TEACHER_TRAINING_VERSION = 2


@dataclass(frozen=True)
class TeacherTraining:
    """How a zoo teacher was trained and why it stopped (kept in the .json beside it)."""

    epochs_run: int
    best_epoch: int  # 1-based; the teacher is this epoch's weights
    accuracy: float  # val top-1 after best_epoch, 0..1: the teacher's
    stopped: str  # "no val top-1 gain in N epochs" or "reached the cap of N epochs"
    seconds: float
    val_accuracy: tuple[float, ...] = ()  # val top-1 after each epoch

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "val_accuracy": list(self.val_accuracy)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TeacherTraining:
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in record.items() if k in fields}
        return cls(**{**known, "val_accuracy": tuple(known.get("val_accuracy", ()))})


@dataclass(frozen=True)
class Teacher:
    model: keras.Model
    accuracy: float  # top-1 on the validation split, 0..1
    path: Path
    trained_now: bool
    seconds: float
    training: TeacherTraining | None = None  # None for a user's model file

    def training_record(self) -> dict[str, Any] | None:
        """How the teacher stopped training, for summaries; None for a user's file."""
        return self.training.to_dict() if self.training else None


def teacher_key(cfg: RunConfig) -> dict:
    """The settings a teacher depends on; the cache is keyed by their hash."""
    return {
        "training": TEACHER_TRAINING_VERSION,
        "model": cfg.model,
        "width": cfg.width if cfg.model == "vgg16" else None,
        "dataset": cfg.dataset,
        "n_train": cfg.n_train,
        "n_val": cfg.n_val,
        "image_size": cfg.image_size,
        "preprocess": preprocess_mode(cfg),
        "augment": cfg.augment,
        "batch_size": cfg.batch_size,
        "teacher_epochs": cfg.teacher_epochs,
        "teacher_patience": cfg.teacher_patience,
        "teacher_lr": teacher_lr(cfg),
        "seed": cfg.seed,
        "keras": keras.__version__,
        "framework": cfg.framework,  # its numerics, and a teacher is trained where it is used
    }


def teacher_path(cfg: RunConfig) -> Path:
    digest = hashlib.sha256(json.dumps(teacher_key(cfg), sort_keys=True).encode()).hexdigest()
    return cache_dir() / "teachers" / f"{cfg.model}-{cfg.dataset}-{digest[:12]}.keras"


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """A file's content hash, read once per version of the file (its mtime and size) in this
    process: looking up a model's kept top-1 and then keeping it hash the file once."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def measured_accuracy_path(cfg: RunConfig) -> Path:
    """Where a user's model file's val top-1, measured by greenkd, is kept: keyed by the file's
    bytes and by the validation split it was measured on (the data settings it depends on), so
    that a sweep's runs and every worker of a run read it instead of measuring it again. A file
    changed in place gets a new key; a dataset changed on disk under the same settings does not
    (as with cached zoo teachers)."""
    path = Path(cfg.model).expanduser()
    stat = path.stat()
    digest = _file_digest(str(path), stat.st_mtime_ns, stat.st_size)
    split = {
        "dataset": cfg.dataset,
        "data_dir": cfg.data_dir,
        "n_train": cfg.n_train,
        "n_val": cfg.n_val,
        "image_size": cfg.image_size,
        "preprocess": preprocess_mode(cfg),
        "seed": cfg.seed,
        "keras": keras.__version__,
        "framework": cfg.framework,
    }
    key = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "accuracy" / f"{Path(cfg.model).stem}-{digest}-{key}.json"


def measured_accuracy(cfg: RunConfig) -> float | None:
    """A user's model file's val top-1 as greenkd measured it before, if it did."""
    record = read_json(measured_accuracy_path(cfg))
    return None if record is None else float(record["accuracy"])


def keep_measured_accuracy(cfg: RunConfig, accuracy: float) -> None:
    write_json_atomic(
        measured_accuracy_path(cfg), {"model": str(Path(cfg.model)), "accuracy": accuracy}
    )


def get_teacher(
    cfg: RunConfig,
    source: data_mod.Source | None = None,
    *,
    retrain: bool = False,
    verbose: int = 0,
) -> Teacher:
    """The run's teacher: a user's file as is, or a zoo model trained once and cached."""
    if cfg.model not in ZOO:
        model = load_file(cfg.model)
        meta_path = Path(cfg.model).with_suffix(".json")
        accuracy = float("nan")
        if meta_path.is_file():
            accuracy = json.loads(meta_path.read_text()).get("accuracy", float("nan"))
        return Teacher(model, accuracy, Path(cfg.model), False, 0.0)
    path = teacher_path(cfg)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file() and not retrain:
        meta = json.loads(meta_path.read_text())
        training = TeacherTraining.from_dict(meta["training"]) if "training" in meta else None
        return Teacher(load_file(path), float(meta["accuracy"]), path, False, 0.0, training)
    source = source or data_mod.load_for(cfg)
    model, training = train_teacher(cfg, source, verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    write_json_atomic(
        meta_path,
        {
            "accuracy": training.accuracy,
            "seconds": training.seconds,
            "training": training.to_dict(),
            "key": teacher_key(cfg),
        },
    )
    return Teacher(model, training.accuracy, path, True, training.seconds, training)


def teacher_lr(cfg: RunConfig) -> float:
    """Adam's peak learning rate for a zoo teacher.

    VGG16 has no batch norm: trained from scratch, the wider it is the smaller
    the step it survives (at width 1/2 a peak of 1e-3 stalls at 81% on the
    synthetic set and 2e-3 never leaves chance, while 5e-4 reaches 98.9%; at
    width 1/8 the larger 1e-3 works best). So the peak shrinks with the width.
    """
    if cfg.model == "vgg16":
        return min(1e-3, 2.5e-4 / cfg.width)
    return 1e-3


class UntilPlateau(keras.callbacks.Callback):
    """A teacher's schedule and stopping rule, driven by val top-1 after each epoch.

    The learning rate warms up linearly over the first epoch, batch by batch (VGG16 without
    batch norm is fragile from scratch: see `teacher_lr`), then stays at the peak and halves
    after every `halve_after` epochs without a gain (reduce-on-plateau). The rate so follows the
    progress actually made, not the cap: a cosine over a 40-epoch cap is still at 2/3 of its
    peak at epoch 16, where the digits teacher stops, and a larger cap would change the teacher.
    (Measured on digits: a cosine over a 30-epoch cap reached the same 98.3%, seeds 0 and 1.)
    `patience` epochs without a gain end training; the best epoch's weights are restored.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, patience: int, halve_after: int):
        super().__init__()
        self.peak_lr, self.warmup_steps = peak_lr, warmup_steps
        self.patience, self.halve_after = patience, halve_after
        self.step = 0
        self.val_accuracy: list[float] = []
        self.best, self.best_epoch, self.since_best = -1.0, 0, 0
        self.best_weights: list | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.step < self.warmup_steps:
            lr = self.peak_lr * (self.step + 1) / self.warmup_steps
            self.model.optimizer.learning_rate.assign(lr)
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        top1 = float(logs["val_accuracy"])
        self.val_accuracy.append(top1)
        if top1 > self.best:
            self.best, self.best_epoch, self.since_best = top1, epoch + 1, 0
            self.best_weights = self.model.get_weights()
            return
        self.since_best += 1
        if self.since_best % self.halve_after == 0:
            lr = self.model.optimizer.learning_rate
            lr.assign(lr * 0.5)
        if self.since_best >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def teacher_halve_after(cfg: RunConfig) -> int:
    """Epochs without a val top-1 gain before the teacher's learning rate halves.

    Half the patience: a plateau first gets a halved rate, and training stops only if that does
    not help either. On digits, halving after every 2 epochs sometimes dropped the rate
    before the noisy high-rate phase had found its best (97.8% where 3 gives 98.3-98.6%).
    """
    return max(1, cfg.teacher_patience // 2)


def train_teacher(
    cfg: RunConfig, source: data_mod.Source, *, verbose: int = 0
) -> tuple[keras.Model, TeacherTraining]:
    """Train a zoo teacher from scratch until its val top-1 stops improving; keep its best epoch.

    Adam at `teacher_lr`, one epoch of warm-up, halved on plateaus (`UntilPlateau`); at most
    `teacher_epochs` epochs, `teacher_patience` epochs without a gain end it earlier.
    """
    started = time.perf_counter()
    model = build(
        cfg.model,
        width=cfg.width,
        image_size=cfg.image_size,
        num_classes=source.num_classes,
        seed=cfg.seed,
    )
    mode = preprocess_mode(cfg)
    steps = source.steps("train", cfg.batch_size)
    train = data_mod.training_batches(source, cfg, mode)
    val = data_mod.validation_batches(source, cfg, mode)
    plateau = UntilPlateau(
        teacher_lr(cfg), steps, cfg.teacher_patience, halve_after=teacher_halve_after(cfg)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(teacher_lr(cfg)),
        loss="sparse_categorical_crossentropy",
        # weighted: the validation batches' padding weighs 0 (data.validation_batches)
        weighted_metrics=["accuracy"],
        jit_compile=cfg.keras_jit(),
    )
    build_before_tracing(model, train)
    with fast_layers(model):
        model.fit(
            train,
            epochs=cfg.teacher_epochs,
            steps_per_epoch=steps,
            validation_data=val,
            callbacks=[plateau],
            verbose=verbose,
            shuffle=False,
        )
    epochs_run = len(plateau.val_accuracy)
    stopped = (
        f"no val top-1 gain in {cfg.teacher_patience} epochs"
        if plateau.since_best >= cfg.teacher_patience
        else f"reached the cap of {cfg.teacher_epochs} epochs"
    )
    training = TeacherTraining(
        epochs_run=epochs_run,
        best_epoch=plateau.best_epoch,
        accuracy=plateau.best,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        val_accuracy=tuple(plateau.val_accuracy),
    )
    return model, training

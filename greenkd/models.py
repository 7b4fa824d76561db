"""Teachers: the model zoo, user `.keras` files, and cached teacher training.

`vgg16` is the paper's CIFAR variant (§4.1.3): the Keras VGG16 convolution
stack with its layer names, global average pooling instead of the dense head,
and a `width` multiplier on every layer's filters so tests and the CPU default
stay small. `resnet50` is `keras.applications.ResNet50(weights=None)` for any
input size >= 32.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from greenkd import data as data_mod
from greenkd.config import MODEL_ZOO, RunConfig, is_model_file, unknown_model
from greenkd.errors import GreenkdError
from greenkd.fileio import write_json_atomic
from greenkd.paths import cache_dir
from greenkd.tfsetup import keras

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


@dataclass(frozen=True)
class Teacher:
    model: keras.Model
    accuracy: float  # top-1 on the validation split, 0..1
    path: Path
    trained_now: bool
    seconds: float


def teacher_key(cfg: RunConfig) -> dict:
    """The settings a teacher depends on; the cache is keyed by their hash."""
    return {
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
        "teacher_lr": teacher_lr(cfg),
        "seed": cfg.seed,
        "keras": keras.__version__,
    }


def teacher_path(cfg: RunConfig) -> Path:
    digest = hashlib.sha256(json.dumps(teacher_key(cfg), sort_keys=True).encode()).hexdigest()
    return cache_dir() / "teachers" / f"{cfg.model}-{cfg.dataset}-{digest[:12]}.keras"


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
        return Teacher(load_file(path), float(meta["accuracy"]), path, False, 0.0)
    source = source or data_mod.load_for(cfg)
    started = time.perf_counter()
    model, accuracy = train_teacher(cfg, source, verbose=verbose)
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    write_json_atomic(
        meta_path, {"accuracy": accuracy, "seconds": seconds, "key": teacher_key(cfg)}
    )
    return Teacher(model, accuracy, path, True, seconds)


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


def train_teacher(
    cfg: RunConfig, source: data_mod.Source, *, verbose: int = 0
) -> tuple[keras.Model, float]:
    """Train a zoo teacher from scratch with Adam and cosine decay; return it and its val top-1."""
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
    # one epoch of linear warm-up, then cosine decay to zero
    warmup = min(steps, steps * cfg.teacher_epochs // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=steps * cfg.teacher_epochs - warmup,
        warmup_target=teacher_lr(cfg),
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        train, epochs=cfg.teacher_epochs, steps_per_epoch=steps, verbose=verbose, shuffle=False
    )
    accuracy = float(model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
    return model, accuracy

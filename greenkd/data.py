"""Datasets, and their input pipelines: tf.data for TensorFlow, `greenkd.batches` for others.

A *source* gives unbatched `(image uint8 HxWx3, label int32)` pairs for a split;
`pipeline()` turns it into batches with the paper's augmentation (§4.1.5:
random crops, and random horizontal flips where a flip keeps the label: not
for digits), the model's preprocessing, and the thread settings the
sweep varies (§4.3: `num_parallel_calls`, `max_intra_op_parallelism`, the
private thread pool).

Sources: `synthetic` (the default, generated here), `digits` (scikit-learn's
UCI digits), `cifar10`/`cifar100` (the python-pickle archives), an image folder
(one sub-folder per class), and `tfds:NAME`.

**One data order for every framework.** A training split is read in a fresh permutation per
epoch, `epoch_order(seed, epoch, n)` (numpy), on TensorFlow and elsewhere alike, so the same
seed gives the same images in the same batches whichever framework trains; augmentation is
seeded too, per framework (TensorFlow's stateless image ops here, numpy per batch in
`greenkd.batches`).
"""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenkd.batches import (
    Batches,
    ValidationBatches,
    epoch_order,
    folder_splits,
    preprocess_array,
    require_image_decoder,
)
from greenkd.config import DataThreads, unknown_dataset
from greenkd.errors import GreenkdError
from greenkd.framework import NAME as FRAMEWORK
from greenkd.framework import keras, on_host, tf

SPLITS = ("train", "val")
PREPROCESS_MODES = ("none", "scale", "caffe", "tf", "torch")
SYNTHETIC_CLASSES = (
    "disc",
    "ring",
    "square",
    "frame",
    "hstripes",
    "vstripes",
    "plus",
    "cross",
    "triangle",
    "checker",
)  # all symmetric under a horizontal flip, so flip augmentation keeps labels true


@dataclass
class Source:
    """A dataset: per split, its (uint8 image, int32 label) pairs: numpy arrays where they fit
    in memory (`arrays`), else an unbatched tf.data dataset (`_make`, TensorFlow only)."""

    name: str
    num_classes: int
    image_size: int
    sizes: dict[str, int]
    _make: Callable[[str], tf.data.Dataset] | None
    in_memory: bool = True
    # augment with horizontal flips: only where a mirrored image keeps its label (a mirrored
    # 2, 3, 4, 5, 7 or 9 is no digit, or another one), so off for digits
    flip: bool = True
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    # an image folder read without TensorFlow: per split (files, labels), decoded per batch
    files: dict[str, tuple[list[Path], np.ndarray]] | None = None

    def split(self, split: str) -> tf.data.Dataset:
        """The split as an unbatched tf.data dataset (TensorFlow only)."""
        if split not in SPLITS:
            raise GreenkdError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        if self.arrays is not None:
            x, y = self.arrays[split]
            return tf.data.Dataset.from_tensor_slices((x, y))
        return self._make(split)

    def steps(self, split: str, batch_size: int) -> int:
        """Batches per epoch (the last partial batch included)."""
        return max(1, -(-self.sizes[split] // batch_size))


def _array_source(
    name: str,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    image_size: int,
    *,
    flip: bool = True,
) -> Source:
    for split, (x, y) in arrays.items():
        if x.shape[1] != image_size or x.shape[2] != image_size:
            x = _resize_uint8(x, image_size)
        arrays[split] = (np.ascontiguousarray(x, np.uint8), np.asarray(y, np.int32))
    sizes = {s: len(a[1]) for s, a in arrays.items()}
    return Source(name, num_classes, image_size, sizes, None, flip=flip, arrays=arrays)


def _resize_uint8(x: np.ndarray, size: int, chunk: int = 1024) -> np.ndarray:
    """Resize a whole split once, on the host, a chunk at a time (never a split on GPU 0)."""
    out = []
    with on_host():
        for start in range(0, len(x), chunk):
            part = keras.ops.image.resize(x[start : start + chunk].astype(np.float32), (size, size))
            out.append(np.clip(np.rint(keras.ops.convert_to_numpy(part)), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


# --------------------------------------------------------------------------- synthetic


def synthetic_images(n: int, seed: int, *, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`n` procedurally drawn RGB images of ten shape classes, deterministic by `seed`.

    Image i depends only on (seed, i): any size is a prefix of a larger one.
    Each image is one shape (random position, size, colour, thickness) on a
    noisy background with a faint distractor line, so a classifier must learn
    spatial features, not colour statistics.
    """
    chunk = 512
    xs, ys = [], []
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        rng = np.random.default_rng([seed, start // chunk, 0x5EED])
        x, y = _draw_chunk(rng, chunk, image_size)
        xs.append(x[:count])
        ys.append(y[:count])
    if not xs:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys)


def _draw_chunk(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = size / 32.0
    labels = rng.integers(0, len(SYNTHETIC_CLASSES), n).astype(np.int32)
    cy = rng.uniform(11, 21, n)[:, None, None] * s
    cx = rng.uniform(11, 21, n)[:, None, None] * s
    radius = rng.uniform(6, 10, n)[:, None, None] * s
    thick = rng.uniform(1.6, 3.0, n)[:, None, None] * s
    period = rng.uniform(3.5, 6.0, n)[:, None, None] * s
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    dy, dx = yy[None] - cy, xx[None] - cx
    dist = np.hypot(dy, dx)
    box = np.maximum(np.abs(dy), np.abs(dx))
    inside = box <= radius

    # each image's one shape, drawn only for the images of its class
    def shape(k: int, i: np.ndarray) -> np.ndarray:
        d, y, x, b, r, t, p = dist[i], dy[i], dx[i], box[i], radius[i], thick[i], period[i]
        inner = inside[i]
        if k == 0:  # disc
            return d <= r
        if k == 1:  # ring
            return np.abs(d - r) <= t
        if k == 2:  # square
            return inner
        if k == 3:  # frame
            return inner & (b >= r - 2 * t)
        if k == 4:  # horizontal stripes
            return inner & (np.mod(y, p) < p / 2)
        if k == 5:  # vertical stripes
            return inner & (np.mod(x, p) < p / 2)
        if k == 6:  # plus
            return inner & ((np.abs(y) <= t) | (np.abs(x) <= t))
        if k == 7:  # cross
            return inner & ((np.abs(y - x) <= 1.4 * t) | (np.abs(y + x) <= 1.4 * t))
        if k == 8:  # triangle, apex up
            return (y <= r * 0.8) & (np.abs(x) <= (y + r) * 0.55)
        return inner & ((np.floor(y / p) + np.floor(x / p)) % 2 == 0)  # checker

    mask = np.zeros((n, size, size, 1), np.float32)
    for k in range(len(SYNTHETIC_CLASSES)):
        i = np.flatnonzero(labels == k)
        if i.size:
            mask[i, ..., 0] = shape(k, i)
    background = rng.uniform(0, 90, (n, 1, 1, 3))
    fg = rng.uniform(120, 255, (n, 1, 1, 3))
    # a faint straight line at a random angle: clutter that no class owns
    angle = rng.uniform(0, np.pi, n)[:, None, None]
    offset = rng.uniform(-12, 12, n)[:, None, None] * s
    line = (
        np.abs(
            (yy[None] - size / 2) * np.cos(angle) - (xx[None] - size / 2) * np.sin(angle) - offset
        )
        <= 0.8 * s
    ).astype(np.float32)[..., None]
    img = background + mask * (fg - background) + line * 40.0
    img = img + rng.normal(0, 14, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def _synthetic(n_train: int | None, n_val: int | None, image_size: int, seed: int) -> Source:
    n_train = 4000 if n_train is None else n_train
    n_val = 1000 if n_val is None else n_val
    arrays = {
        "train": synthetic_images(n_train, seed, image_size=image_size),
        "val": synthetic_images(n_val, seed + 1_000_003, image_size=image_size),
    }
    return _array_source("synthetic", arrays, len(SYNTHETIC_CLASSES), image_size)


# --------------------------------------------------------------------------- digits


def _digits(n_train: int | None, n_val: int | None, image_size: int, seed: int) -> Source:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GreenkdError(
            "the digits dataset needs scikit-learn: pip install 'greenkd[digits]'"
        ) from None
    digits = load_digits()
    # 8x8 images with values 0..16: scale to 0..255, upsample 4x, grey to RGB
    img = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    img = np.repeat(np.repeat(img, 4, axis=1), 4, axis=2)
    img = np.repeat(img[..., None], 3, axis=3)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val_default = len(labels) // 5
    val_idx = order[: (n_val or n_val_default)]
    train_idx = order[len(val_idx) :]
    if n_train is not None:
        train_idx = train_idx[:n_train]
    arrays = {"train": (img[train_idx], labels[train_idx]), "val": (img[val_idx], labels[val_idx])}
    return _array_source("digits", arrays, 10, image_size, flip=False)


# --------------------------------------------------------------------------- CIFAR


CIFAR = {
    # name: (folder inside the archive, archive name, train files, test file, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        b"labels",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ["train"],
        "test",
        b"fine_labels",
        100,
    ),
}


def keras_cache_dir() -> Path:
    """Where keras.datasets keeps downloads (KERAS_HOME, else ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _cifar_candidates(name: str, data_dir: str | None) -> list[Path]:
    folder, _, _, _, _, _ = CIFAR[name]
    roots = [Path(data_dir)] if data_dir else []
    roots.append(keras_cache_dir())
    out = []
    for root in roots:
        out += [root / folder, root / f"{folder}-target" / folder, root]
    return out


def _read_cifar_pickles(
    name: str, data_dir: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder, archive, train_files, test_file, label_key, _ = CIFAR[name]
    needed = [*train_files, test_file]
    for cand in _cifar_candidates(name, data_dir):
        if all((cand / f).is_file() for f in needed):
            blobs = {f: (cand / f).read_bytes() for f in needed}
            break
        tar_path = cand / archive
        if tar_path.is_file():
            with tarfile.open(tar_path) as tar:
                blobs = {f: tar.extractfile(f"{folder}/{f}").read() for f in needed}
            break
    else:
        where = data_dir or keras_cache_dir()
        raise GreenkdError(
            f"{name} not found: put the python version of the archive ({archive}) or its files "
            f"{', '.join(needed)} in {Path(where) / folder} (or pass --data-dir DIR holding "
            f"{folder}/); download it elsewhere from https://www.cs.toronto.edu/~kriz/cifar.html"
        )

    def decode(blob: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            batch = pickle.loads(blob, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[label_key], dtype=np.int32)
        except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
            raise GreenkdError(f"{name} file {what} is not a CIFAR python pickle: {exc}") from None
        return x.transpose(0, 2, 3, 1), y

    parts = [decode(blobs[f], f) for f in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_val, y_val = decode(blobs[test_file], test_file)
    return {"train": (x_train, y_train), "val": (x_val, y_val)}


def _cifar(
    name: str, data_dir: str | None, n_train: int | None, n_val: int | None, image_size: int
) -> Source:
    arrays = _read_cifar_pickles(name, data_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        if n is not None:
            x, y = arrays[split]
            arrays[split] = (x[:n], y[:n])
    return _array_source(name, arrays, CIFAR[name][5], image_size)


# --------------------------------------------------------------------------- folders and tfds


def _image_folder(path: Path, image_size: int, seed: int) -> Source:
    if FRAMEWORK != "tensorflow":
        require_image_decoder(path)
        classes, files = folder_splits(path)
        if len(classes) < 2:
            raise GreenkdError(
                f"image folder {path} needs one sub-folder per class (found {len(classes)})"
            )
        sizes = {s: len(f) for s, (f, _) in files.items()}
        return Source(f"folder:{path.name}", len(classes), image_size, sizes, None,
                      in_memory=False, files=files)  # fmt: skip

    def load(directory: Path, **kw) -> tf.data.Dataset:
        return keras.utils.image_dataset_from_directory(
            directory,
            labels="inferred",
            label_mode="int",
            image_size=(image_size, image_size),
            batch_size=None,
            shuffle=False,
            seed=seed,
            verbose=False,
            **kw,
        )

    try:
        if (path / "train").is_dir() and any((path / v).is_dir() for v in ("val", "validation")):
            val_dir = path / "val" if (path / "val").is_dir() else path / "validation"
            splits = {"train": load(path / "train"), "val": load(val_dir)}
        else:
            splits = {
                "train": load(path, validation_split=0.1, subset="training"),
                "val": load(path, validation_split=0.1, subset="validation"),
            }
    except ValueError as exc:
        raise GreenkdError(f"image folder {path}: {exc}") from None
    num_classes = len(splits["train"].class_names)
    if num_classes < 2:
        raise GreenkdError(
            f"image folder {path} needs one sub-folder per class (found {num_classes})"
        )
    sizes = {s: len(ds.file_paths) for s, ds in splits.items()}

    def cast(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(
            _ops(
                lambda x, y: (
                    tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8),
                    tf.cast(y, tf.int32),
                )
            )
        )

    return Source(
        f"folder:{path.name}",
        num_classes,
        image_size,
        sizes,
        lambda split: cast(splits[split]),
        in_memory=False,
    )


# tensorflow-datasets whose classes are digits or characters: a mirrored image changes its label
TFDS_NO_FLIP = ("mnist", "emnist", "kmnist", "svhn_cropped")


def _tfds(name: str, data_dir: str | None, image_size: int) -> Source:
    if FRAMEWORK != "tensorflow":
        raise GreenkdError(
            f"tfds:{name} reads through TensorFlow: use --framework tensorflow, or export the "
            "images to a folder (one sub-folder per class) and pass that folder"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise GreenkdError(
            f"tfds:{name} needs tensorflow-datasets: pip install 'greenkd[tfds]'"
        ) from None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # tfds raises its own DatasetNotFoundError and friends
        raise GreenkdError(f"tfds:{name}: {exc}") from None
    if not builder.is_prepared():
        raise GreenkdError(
            f"tfds:{name} is not prepared in {builder.data_dir}: run `tfds build {name}` on a "
            "machine with network access and copy the data dir here (--data-dir)"
        )
    info = builder.info
    val_split = next((s for s in ("validation", "test") if s in info.splits), None)
    if val_split is None or "train" not in info.splits:
        raise GreenkdError(f"tfds:{name} has no train and validation/test splits")
    names = {"train": "train", "val": val_split}
    flip = name.split("/")[0].split(":")[0] not in TFDS_NO_FLIP

    def make(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=names[split], as_supervised=True, shuffle_files=False)
        return ds.map(_ops(lambda x, y: (_fit_image(x, image_size), tf.cast(y, tf.int32))))

    return Source(
        f"tfds:{name}",
        info.features["label"].num_classes,
        image_size,
        {s: int(info.splits[n].num_examples) for s, n in names.items()},
        make,
        in_memory=False,
        flip=flip,
    )


def _fit_image(x: tf.Tensor, size: int) -> tf.Tensor:
    if x.shape.rank == 3 and x.shape[-1] == 1:
        x = tf.image.grayscale_to_rgb(x)
    x = tf.image.resize(x, (size, size))
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


# --------------------------------------------------------------------------- registry


DATASETS = ("synthetic", "digits", "cifar10", "cifar100", "<image folder>", "tfds:NAME")


def load(
    name: str,
    *,
    data_dir: str | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    image_size: int = 32,
    seed: int = 0,
) -> Source:
    """Open a dataset by name: a registered name, `tfds:NAME`, or a path to an image folder."""
    if name == "synthetic":
        return _synthetic(n_train, n_val, image_size, seed)
    if name == "digits":
        return _digits(n_train, n_val, image_size, seed)
    if name in CIFAR:
        return _cifar(name, data_dir, n_train, n_val, image_size)
    if name.startswith("tfds:"):
        return _tfds(name[5:], data_dir, image_size)
    path = Path(name).expanduser()
    if path.is_dir():
        return _image_folder(path, image_size, seed)
    raise unknown_dataset(name)


def load_for(cfg) -> Source:
    """The dataset of a run, as its RunConfig names and sizes it."""
    return load(
        cfg.dataset,
        data_dir=cfg.data_dir,
        n_train=cfg.n_train,
        n_val=cfg.n_val,
        image_size=cfg.image_size,
        seed=cfg.seed,
    )


# --------------------------------------------------------------------------- pipelines


def preprocess(images: tf.Tensor, mode: str) -> tf.Tensor:
    """The model's input preprocessing on a batch in 0..255 (keras.applications modes): a tensor of
    the framework's, or a numpy array (the non-TensorFlow input path converts on the host)."""
    if mode not in PREPROCESS_MODES:
        raise GreenkdError(
            f"unknown preprocessing {mode!r}: use one of {', '.join(PREPROCESS_MODES)}"
        )
    if isinstance(images, np.ndarray):
        return preprocess_array(images, mode)
    images = tf.cast(images, tf.float32)
    if mode == "none":
        return images
    if mode == "scale":
        return images / 255.0
    if mode in ("caffe", "tf", "torch"):
        from keras.applications import imagenet_utils

        return imagenet_utils.preprocess_input(images, data_format="channels_last", mode=mode)
    raise GreenkdError(f"unknown preprocessing {mode!r}: use one of {', '.join(PREPROCESS_MODES)}")


def thread_options(threads: DataThreads) -> tf.data.Options:
    """tf.data options for the paper's thread settings (§4.3).

    "autotune" in a process confined to one core runs without tf.data's autotuning model: on
    one core there is no parallelism to tune, and the model cost each iterator its deletion:
    deleting an autotuned iterator there waits for tf.data's autotuning thread, whose sleep
    doubles up to a minute (a one-core worker's fused pass waited 19 s after its `fit` ended,
    on passes of 27-29 s). The AUTOTUNE settings then take tf.data's defaults for one core.
    """
    opts = tf.data.Options()
    opts.deterministic = True
    if threads.parallel_calls is None and len(os.sched_getaffinity(0)) == 1:
        opts.autotune.enabled = False
    if threads.max_intra_op_parallelism is not None:
        opts.threading.max_intra_op_parallelism = threads.max_intra_op_parallelism
    if threads.private_threadpool_size is not None:
        opts.threading.private_threadpool_size = threads.private_threadpool_size
    return opts


def without_autotune_model(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` without tf.data's autotuning model (its AUTOTUNE settings fall back to tf.data's
    defaults; the elements and their order are the same).

    For a stream a loop of greenkd's own drops mid-way: on a one-core worker, deleting an
    autotuned iterator waits for tf.data's autotuning thread, whose sleep doubles up to a minute
    (a data-parallel fine-tune's stream took 5-18 s to delete, 0.03 s without the model; its
    whole job 22 s against 16 s of work). Keras's `fit` streams keep their autotuning: the
    paper's thread settings are a sweep dimension.
    """
    if FRAMEWORK != "tensorflow":
        return ds  # greenkd.batches: no tf.data
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _ops(fn: Callable) -> Callable:
    """A tf.data function used as written: its body is TensorFlow ops with no Python branch on a
    tensor, so autograph's conversion (parsing the function's source: ~0.7 s a process for the
    pipelines' functions, in the run's process and in every worker) has nothing to do."""
    return tf.autograph.experimental.do_not_convert(fn)


def _augment(image: tf.Tensor, seed: tf.Tensor, size: int, *, flip: bool = True) -> tf.Tensor:
    """A random horizontal flip (if `flip`), then a random crop after zero padding by size/8."""
    pad = max(1, size // 8)
    flip_seed = tf.stack([seed[0], seed[1]])
    crop_seed = tf.stack([seed[0] + 1, seed[1]])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(image, (size, size, 3), crop_seed)


def pipeline(
    source: Source,
    split: str,
    *,
    batch_size: int,
    preprocess_mode: str,
    threads: DataThreads = DataThreads(),
    augment: bool = False,
    seed: int = 0,
    repeat: bool = False,
    labels: bool = True,
    skip: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """Batches of preprocessed images (and labels), deterministic for a given seed.

    Training pipelines shuffle with `seed` and draw each image's crop (and flip,
    where the source allows flips) from a stateless seed (seed, running image
    index), so the data order and augmentation are the same in every process,
    whatever the thread settings.
    With `repeat=True` the stream is endless (use `steps_per_epoch`) and each
    epoch sees a fresh order and fresh crops. `skip` images are passed over first
    (their running indices kept), so a stream restarted after k batches goes on
    with exactly the batches an unbroken one would give.
    `shard=(rank, size)` yields only rows rank, rank + size, ... of each batch (a data-parallel
    worker's share), picked before augmentation and preprocessing, so a worker spends nothing
    on the other workers' rows and still gets exactly those rows of the whole batch.
    """
    rank, size = shard
    if not 0 <= rank < size:
        raise ValueError(f"shard {shard} is not (rank, size) with 0 <= rank < size")
    if preprocess_mode not in PREPROCESS_MODES:
        raise GreenkdError(
            f"unknown preprocessing {preprocess_mode!r}: use one of {', '.join(PREPROCESS_MODES)}"
        )
    if FRAMEWORK != "tensorflow":
        return Batches(source, split, batch_size=batch_size, preprocess_mode=preprocess_mode,
                       threads=threads, augment=augment, seed=seed, repeat=repeat,
                       labels=labels, skip=skip, shard=shard)  # fmt: skip
    parallel = threads.parallel_calls or tf.data.AUTOTUNE
    # elements as (running image index, (image, label)) where augmentation or the shard needs it
    indexed = augment or size > 1 or (source.in_memory and split == "train")
    if source.in_memory and split == "train":  # this shard's rows only, picked per epoch
        ds = _shuffled(source, split, seed, repeat, rows=(skip, batch_size, rank, size))
    else:
        ds = source.split(split)
        if repeat:
            ds = ds.repeat()
        if indexed:
            ds = ds.enumerate().skip(skip)  # running image indices, kept past the skip
            if size > 1:  # image i's row in its batch: (i - skip) % batch_size
                ds = ds.filter(_ops(lambda i, xy: ((i - skip) % batch_size) % size == rank))
        elif skip:
            ds = ds.skip(skip)
    if augment:
        image_size, flip = source.image_size, source.flip
        ds = ds.map(
            _ops(
                lambda i, xy: (
                    _augment(
                        xy[0], tf.stack([tf.constant(seed, tf.int64), i]), image_size, flip=flip
                    ),
                    xy[1],
                )
            ),
            num_parallel_calls=parallel,
            deterministic=True,
        )
    elif indexed:
        ds = ds.map(_ops(lambda i, xy: xy))
    ds = ds.batch(len(range(rank, batch_size, size)))
    ds = ds.map(
        _ops(
            (lambda x, y: (preprocess(x, preprocess_mode), y))
            if labels
            else (lambda x, y: preprocess(x, preprocess_mode))
        ),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(thread_options(threads))


def _shuffled(
    source: Source, split: str, seed: int, repeat: bool, *, rows: tuple[int, int, int, int]
) -> tf.data.Dataset:
    """An in-memory split read in `epoch_order` (endless with `repeat`, one epoch without), as
    (running index, (image, label)).

    `rows=(skip, batch, rank, size)`: only the running indices i >= skip whose row in their batch,
    (i - skip) % batch, is rank, rank + size, ... Picked per epoch in numpy, before any image is
    read, so a worker's stream spends nothing per element on another worker's rows (a
    per-element filter after the gather cost a one-core worker ~1 ms a batch of 64).
    """
    x, y = source.arrays[split]
    n = len(y)
    skip, batch, rank, size = rows
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)

    def draw(e: np.int64) -> tuple[np.ndarray, np.ndarray]:
        running = np.arange(int(e) * n, (int(e) + 1) * n, dtype=np.int64)
        keep = (running >= skip) & (((running - skip) % batch) % size == rank)
        return running[keep], epoch_order(seed, int(e), n).astype(np.int64)[keep]

    def order(epoch: tf.Tensor):
        running, index = tf.numpy_function(draw, [epoch], (tf.int64, tf.int64), stateful=False)
        return tf.data.Dataset.from_tensor_slices(
            (tf.ensure_shape(running, [None]), tf.ensure_shape(index, [None]))
        )

    images, labels = tf.constant(x), tf.constant(y)
    return epochs.flat_map(_ops(order)).map(
        _ops(lambda i, j: (i, (tf.gather(images, j), tf.gather(labels, j))))
    )


def training_batches(
    source: Source,
    cfg,
    preprocess_mode: str,
    *,
    seed_offset: int = 0,
    labels: bool = True,
    skip_batches: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """A run's endless training stream: its batch size, augmentation, threads and seed
    (from its `skip_batches`-th batch on; only a worker's rows of each batch with `shard`)."""
    return pipeline(
        source,
        "train",
        batch_size=cfg.batch_size,
        preprocess_mode=preprocess_mode,
        threads=cfg.data_threads,
        augment=cfg.augment,
        seed=cfg.seed + seed_offset,
        repeat=True,
        labels=labels,
        skip=skip_batches * cfg.batch_size,
        shard=shard,
    )


VAL_BATCH = 256


def validation_batches(source: Source, cfg, preprocess_mode: str) -> tf.data.Dataset:
    """The validation split as (images, labels, weights) in batches of one shape, for top-1.

    Batches of 256 (the whole split when smaller). **Decision: pad, not drop.** The last batch
    is filled up with copies of the first images weighted 0, so that a compiled evaluation step
    is traced once (a ragged last batch retraces it, and under XLA recompiles it) while every
    validation image counts once and the padding not at all (weighted metrics; see
    `greenkd.distill.train.evaluate_accuracy` and `branch_accuracies`).
    """
    if preprocess_mode not in PREPROCESS_MODES:
        raise GreenkdError(
            f"unknown preprocessing {preprocess_mode!r}: use one of {', '.join(PREPROCESS_MODES)}"
        )
    if FRAMEWORK != "tensorflow":
        return ValidationBatches(source, preprocess_mode, cfg.data_threads, VAL_BATCH)
    n = source.sizes["val"]
    batch = max(1, min(VAL_BATCH, n))
    pad = (-n) % batch
    ds = source.split("val").map(_ops(lambda x, y: (x, y, tf.constant(1.0))))
    if pad:
        fill = source.split("val").repeat().take(pad)
        ds = ds.concatenate(fill.map(_ops(lambda x, y: (x, y, tf.constant(0.0)))))
    parallel = cfg.data_threads.parallel_calls or tf.data.AUTOTUNE
    ds = ds.batch(batch).map(
        _ops(lambda x, y, w: (preprocess(x, preprocess_mode), y, w)),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(thread_options(cfg.data_threads))


def first_batches(batches, n: int) -> list:
    """The first `n` batches of a pipeline (tf.data or `greenkd.batches`), kept in memory."""
    if FRAMEWORK == "tensorflow":
        return list(batches.take(n))
    return [batches[i] for i in range(n)]


def images_only(val):
    """Validation batches of (images, labels, weights) as batches of images, for predict()."""
    if FRAMEWORK == "tensorflow":
        return val.map(_ops(lambda x, y, w: x))
    return val.images_only()

"""The input path of frameworks other than TensorFlow: Keras `PyDataset`s over numpy.

The same datasets, data order and preprocessing as the tf.data path (`greenkd.data`, which
builds these for frameworks other than TensorFlow): a training split is read in
`epoch_order(seed, epoch, n)` (defined here, used by both paths), an endless stream runs across
epoch boundaries exactly as tf.data's `repeat().batch()` does, and `skip` passes over a
stream's first images, so a stream restarted after k batches goes on with the batches an
unbroken one gives. Images stay uint8 until a batch is formed; then the batch is augmented
(a horizontal flip where the source allows one, a crop after zero padding by size/8: index
operations on uint8) and converted and preprocessed as one array.

**Augmentation is seeded per batch**: batch b of a stream draws its flips and crop offsets from
`numpy.random.default_rng([seed, first image's position in the stream, AUGMENT_KEY])`, so it is
the same in every process and whatever the worker count, but not the draw TensorFlow's
stateless image ops make (those are Philox streams of TensorFlow's own).

**Decision: Keras `PyDataset` workers (threads), not grain.** The in-memory splits are numpy
arrays; a batch is a fancy-index gather plus a few vectorised numpy operations, which release
the GIL, so threads overlap them with training without copying the splits into worker
processes; `PyDataset` is part of Keras (nothing more to install, on the GPU machine either),
and its enqueuer returns batches in index order whatever the worker count. grain would add a
dependency and a per-record transform model built for file-backed records. The worker count is
this path's "data threads": `--data-threads N` gives N workers; autotune gives one per core of
the process, at most 4.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from greenkd.config import DataThreads
from greenkd.errors import GreenkdError
from greenkd.framework import keras

AUGMENT_KEY = 0xA06
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras's folder loader reads


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which a shuffled split's `n` images are read in `epoch` (0-based): the same
    for every framework, every process and every thread setting."""
    return np.random.default_rng([seed, epoch, 0x0DE4]).permutation(n)


def preprocess_array(images: np.ndarray, mode: str) -> np.ndarray:
    """The model's input preprocessing (keras.applications modes) on a uint8 batch, in numpy."""
    x = images.astype(np.float32)
    if mode == "none":
        return x
    if mode == "scale":
        return x / np.float32(255.0)
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(x, data_format="channels_last", mode=mode)


def workers_for(threads: DataThreads) -> int:
    """PyDataset workers for a thread setting: N parallel calls, or one per core (at most 4)."""
    if threads.parallel_calls:
        return threads.parallel_calls
    return max(1, min(4, len(os.sched_getaffinity(0))))


def augment_batch(images: np.ndarray, rng: np.random.Generator, *, flip: bool) -> np.ndarray:
    """A random horizontal flip per image (if `flip`), then a random crop after zero padding by
    size/8 (the paper's augmentation, §4.1.5), on a uint8 batch [N, H, W, C]."""
    n, size = images.shape[0], images.shape[1]
    pad = max(1, size // 8)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(size)[None, :]  # [N, size] rows of the padded image
    cols = dx[:, None] + np.arange(size)[None, :]
    cols = np.where(flips[:, None], cols[:, ::-1], cols)  # a flip reads the window mirrored
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class Batches(keras.utils.PyDataset):
    """Batches of preprocessed images (and labels) of a split, as `data.pipeline` gives them."""

    def __init__(self, source: Any, split: str, *, batch_size: int, preprocess_mode: str,
                 threads: DataThreads = DataThreads(), augment: bool = False, seed: int = 0,
                 repeat: bool = False, labels: bool = True, skip: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> None:  # fmt: skip
        workers = workers_for(threads)
        # workers=1 fetches in the training loop's own thread; more run a thread pool
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.source, self.split = source, split
        self.batch_size, self.preprocess_mode = batch_size, preprocess_mode
        self.augment, self.seed, self.repeat = augment, seed, repeat
        self.labels, self.skip = labels, skip
        self.rank, self.size = shard  # rows rank, rank + size, ... of each batch (data.pipeline)
        self.n = source.sizes[split]
        self.shuffle = source.arrays is not None and split == "train"

    @property
    def num_batches(self) -> int | None:
        if self.repeat:
            return None  # endless: fit() takes steps_per_epoch batches per epoch
        return max(0, -(-(self.n - self.skip) // self.batch_size))

    def __len__(self) -> int:
        count = self.num_batches
        if count is None:
            raise TypeError("an endless stream of batches has no length")
        return count

    def positions(self, index: int) -> np.ndarray:
        """Stream positions of batch `index`: running image numbers across epochs."""
        start = self.skip + index * self.batch_size
        stop = start + self.batch_size
        if not self.repeat:
            stop = min(stop, self.n)
        return np.arange(start, stop)

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """The split's image indices at these stream positions."""
        epochs, within = np.divmod(positions, self.n)
        if not self.shuffle:
            return within
        out = np.empty_like(within)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            out[here] = _order(self.seed, int(epoch), self.n)[within[here]]
        return out

    def __getitem__(self, index: int):
        positions = self.positions(index)
        if len(positions) == 0:
            raise IndexError(index)
        images, labels = self.source_images(self.indices(positions))
        if self.augment:
            rng = np.random.default_rng([self.seed, int(positions[0]), AUGMENT_KEY])
            images = augment_batch(images, rng, flip=self.source.flip)
        # a shard's rows after the whole batch's augmentation, whose draws go image by image
        images, labels = images[self.rank :: self.size], labels[self.rank :: self.size]
        x = preprocess_array(images, self.preprocess_mode)
        return (x, labels) if self.labels else x

    def source_images(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _gather(self.source, self.split, idx)


class ValidationBatches(keras.utils.PyDataset):
    """The validation split as (images, labels, weights) in batches of one shape: the last
    batch is filled with copies of the first images weighted 0 (data.validation_batches)."""

    def __init__(self, source: Any, preprocess_mode: str, threads: DataThreads,
                 batch: int, *, with_labels: bool = True) -> None:  # fmt: skip
        workers = workers_for(threads)
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.source, self.preprocess_mode, self.threads = source, preprocess_mode, threads
        self.n = source.sizes["val"]
        self.batch = max(1, min(batch, self.n))
        self.with_labels = with_labels

    @property
    def num_batches(self) -> int:
        return -(-self.n // self.batch)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        positions = np.arange(index * self.batch, (index + 1) * self.batch)
        images, labels = _gather(self.source, "val", positions % self.n)
        x = preprocess_array(images, self.preprocess_mode)
        if not self.with_labels:
            return x
        return x, labels, (positions < self.n).astype(np.float32)

    def images_only(self) -> ValidationBatches:
        """The same batches without labels and weights (what predict() takes)."""
        return ValidationBatches(
            self.source, self.preprocess_mode, self.threads, self.batch, with_labels=False
        )


@lru_cache(maxsize=4)
def _order(seed: int, epoch: int, n: int) -> np.ndarray:
    return epoch_order(seed, epoch, n)


def _gather(source: Any, split: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if source.arrays is not None:
        x, y = source.arrays[split]
        return x[idx], y[idx]
    files, labels = source.files[split]
    return np.stack([_read_image(files[i], source.image_size) for i in idx]), labels[idx]


# --------------------------------------------------------------------------- image folders


def require_image_decoder(path: Path) -> None:
    """Decoding images without TensorFlow goes through Keras's loader, which needs pillow."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise GreenkdError(
            f"image folder {path}: decoding images without TensorFlow needs pillow: "
            "pip install 'greenkd[jax]'"
        ) from None


def folder_splits(path: Path) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]]]:
    """Class names and per-split (files, labels) of an image folder: `train/` and `val/` inside
    it, else the last 10% of its files (in class, then file order) held out for validation."""
    if (path / "train").is_dir() and any((path / v).is_dir() for v in ("val", "validation")):
        val_dir = path / "val" if (path / "val").is_dir() else path / "validation"
        classes = _classes(path / "train")
        return classes, {"train": _index(path / "train", classes), "val": _index(val_dir, classes)}
    classes = _classes(path)
    files, labels = _index(path, classes)
    cut = len(files) - int(0.1 * len(files))
    return classes, {"train": (files[:cut], labels[:cut]), "val": (files[cut:], labels[cut:])}


def _classes(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def _index(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for k, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [k] * len(found)
    return files, np.asarray(labels, np.int32)


def _read_image(path: Path, size: int) -> np.ndarray:
    image = keras.utils.load_img(path, color_mode="rgb", target_size=(size, size),
                                 interpolation="bilinear")  # fmt: skip
    return np.asarray(image, np.uint8)

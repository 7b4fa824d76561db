"""Datasets and tf.data pipelines: real loaders on real-format files, real pipelines."""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest

from greenkd import data
from greenkd.config import DataThreads
from greenkd.errors import GreenkdError
from greenkd.framework import tf


def test_synthetic_is_deterministic_by_seed_and_prefix_stable():
    x1, y1 = data.synthetic_images(700, seed=3)
    x2, y2 = data.synthetic_images(700, seed=3)
    x_small, y_small = data.synthetic_images(100, seed=3)
    x_other, _ = data.synthetic_images(100, seed=4)
    assert x1.shape == (700, 32, 32, 3) and x1.dtype == np.uint8
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(x1[:100], x_small) and np.array_equal(y1[:100], y_small)
    assert not np.array_equal(x_small, x_other)
    counts = np.bincount(y1, minlength=10)
    assert counts.min() > 40  # every one of the ten classes is well represented


def test_synthetic_images_are_the_ones_every_cached_teacher_and_recorded_result_used():
    """The bytes of the first 600 images of seed 0, as drawn when the teachers in users' caches
    and BENCHMARKS.md's runs were made: a faster drawing must draw the same images."""
    x, y = data.synthetic_images(600, seed=0)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    assert digest == "275291bf7f0b109c1ae4473de5bc7e61b7a23613f854d476d5b658a98aeadf15"


def test_synthetic_any_size_and_resolution():
    x, _y = data.synthetic_images(5, seed=0, image_size=64)
    assert x.shape == (5, 64, 64, 3)
    src = data.load("synthetic", n_train=50, n_val=20, image_size=48)
    assert src.sizes == {"train": 50, "val": 20}
    image, label = next(iter(src.split("val")))
    assert image.shape == (48, 48, 3) and image.dtype == tf.uint8 and label.dtype == tf.int32


def test_synthetic_classes_differ_in_shape_not_colour():
    # the mean colour of a class must not give the label away: classes share one colour law
    x, y = data.synthetic_images(3000, seed=1)
    means = np.array([x[y == c].mean() for c in range(10)])
    assert means.max() - means.min() < 25


def test_digits_loader_upscales_to_rgb_32():
    pytest.importorskip("sklearn")
    src = data.load("digits", seed=0)
    assert src.num_classes == 10
    assert src.sizes["train"] + src.sizes["val"] == 1797
    image, label = next(iter(src.split("train")))
    assert image.shape == (32, 32, 3)
    assert int(label) in range(10)
    # grey: the three channels are equal
    img = image.numpy()
    assert np.array_equal(img[..., 0], img[..., 2])


def _write_cifar10(root, n_per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = list(rng.integers(0, 10, n_per_batch))
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": y}))
        written[name] = (x, y)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c"] * 10}))
    return written


def test_cifar10_reads_the_python_pickle_format(tmp_path):
    written = _write_cifar10(tmp_path)
    src = data.load("cifar10", data_dir=str(tmp_path))
    assert src.num_classes == 10 and src.sizes == {"train": 30, "val": 6}
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in src.split("val")], strict=True)
    x, y = written["test_batch"]
    # CIFAR stores each image as 1024 red, 1024 green, 1024 blue values, row-major
    expected0 = x[0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(images[0], expected0)
    assert list(labels) == [int(v) for v in y]
    first_train = next(iter(src.split("train")))[0].numpy()
    assert np.array_equal(
        first_train, written["data_batch_1"][0][0].reshape(3, 32, 32).transpose(1, 2, 0)
    )


def test_cifar10_reads_the_tarball_too(tmp_path):
    _write_cifar10(tmp_path / "staging")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    src = data.load("cifar10", data_dir=str(tmp_path))
    assert src.sizes == {"train": 30, "val": 6}


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 8), ("test", 4)):
        blob = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": [97] * n,
            b"coarse_labels": [3] * n,
        }
        (folder / name).write_bytes(pickle.dumps(blob))
    src = data.load("cifar100", data_dir=str(tmp_path))
    assert src.num_classes == 100
    assert {int(y) for _, y in src.split("train")} == {97}


def test_missing_cifar_names_the_files_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(GreenkdError) as err:
        data.load("cifar10", data_dir=str(tmp_path))
    message = str(err.value)
    assert "data_batch_1" in message and "test_batch" in message
    assert str(tmp_path / "cifar-10-batches-py") in message


def test_image_folder_one_subfolder_per_class(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "emu"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / cls / f"{i}.png"), tf.io.encode_png(img))
    src = data.load(str(tmp_path), image_size=32, seed=0)
    assert src.num_classes == 3
    assert src.sizes["train"] + src.sizes["val"] == 12
    image, _label = next(iter(src.split("train")))
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8


def test_unknown_dataset_and_tfds_without_the_package_are_user_errors():
    with pytest.raises(GreenkdError, match="unknown dataset"):
        data.load("imagenet-please")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(GreenkdError, match="tensorflow-datasets"):
            data.load("tfds:mnist")


def _parallel_calls(ds) -> list[int]:
    """num_parallel_calls of every parallel map in the dataset's real graph."""
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(ds._as_serialized_graph().numpy())
    consts = {n.name: n for n in graph.node if n.op == "Const"}
    found = []
    for node in graph.node:
        if node.op.startswith("ParallelMapDataset"):
            const = consts[node.input[-1].split(":")[0]]
            found.append(int(tf.make_ndarray(const.attr["value"].tensor)))
    return found


def test_thread_settings_are_really_set_on_the_dataset():
    src = data.load("synthetic", n_train=64, n_val=32)
    fixed = DataThreads(parallel_calls=4, max_intra_op_parallelism=1, private_threadpool_size=6)
    ds = data.pipeline(
        src, "train", batch_size=8, preprocess_mode="caffe", threads=fixed, augment=True
    )
    opts = ds.options()
    assert opts.threading.max_intra_op_parallelism == 1
    assert opts.threading.private_threadpool_size == 6
    assert _parallel_calls(ds) == [4, 4]  # augmentation map and preprocessing map
    auto = data.pipeline(
        src,
        "train",
        batch_size=8,
        preprocess_mode="caffe",
        threads=DataThreads.parse("autotune"),
        augment=True,
    )
    assert _parallel_calls(auto) == [tf.data.AUTOTUNE] * 2
    assert DataThreads.parse("4") == DataThreads(4, 1, None)


def test_augmentation_is_seeded_and_really_changes_images():
    src = data.load("synthetic", n_train=64, n_val=32)
    kw = dict(batch_size=64, preprocess_mode="none")
    a = next(iter(data.pipeline(src, "train", augment=True, seed=5, **kw)))[0].numpy()
    b = next(iter(data.pipeline(src, "train", augment=True, seed=5, **kw)))[0].numpy()
    c = next(iter(data.pipeline(src, "train", augment=True, seed=6, **kw)))[0].numpy()
    plain = next(iter(data.pipeline(src, "train", augment=False, seed=5, **kw)))[0].numpy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, plain)
    # a random crop of a zero-padded image leaves black borders on some images
    assert (a.reshape(64, -1).min(axis=1) == 0).sum() > (
        plain.reshape(64, -1).min(axis=1) == 0
    ).sum()


def _crop_of(image: np.ndarray, original: np.ndarray, pad: int) -> bool:
    """Whether `image` is one of the crops the augmentation can cut from the padded original."""
    size = original.shape[0]
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    return any(
        np.array_equal(image, padded[y : y + size, x : x + size])
        for y in range(2 * pad + 1)
        for x in range(2 * pad + 1)
    )


def _flipped_and_not(src: data.Source) -> tuple[int, int]:
    """Of one augmented batch: how many images are only a mirrored crop, only a plain crop."""
    kw = dict(batch_size=64, preprocess_mode="none", seed=3)
    # the same seed shuffles the same way, so image i of both batches is the same original
    plain = next(iter(data.pipeline(src, "train", augment=False, **kw)))[0].numpy()
    augmented = next(iter(data.pipeline(src, "train", augment=True, **kw)))[0].numpy()
    pad = src.image_size // 8
    only_flipped = only_plain = 0
    for image, original in zip(augmented.astype(np.uint8), plain.astype(np.uint8), strict=True):
        as_is = _crop_of(image, original, pad)
        mirrored = _crop_of(image, original[:, ::-1], pad)
        assert as_is or mirrored  # every augmented image is a crop of its original
        only_flipped += mirrored and not as_is
        only_plain += as_is and not mirrored
    return only_flipped, only_plain


def test_digits_are_never_flipped_synthetic_shapes_are():
    pytest.importorskip("sklearn")
    digits = data.load("digits", n_train=64, seed=0)
    assert not digits.flip  # a mirrored 2, 3 or 7 is no digit
    only_flipped, only_plain = _flipped_and_not(digits)
    assert only_flipped == 0
    assert only_plain > 32  # most digits are asymmetric, so a flip would have shown
    synthetic = data.load("synthetic", n_train=64, n_val=8)
    assert synthetic.flip  # its classes are symmetric under a horizontal flip
    only_flipped, only_plain = _flipped_and_not(synthetic)
    assert only_flipped > 16 and only_plain > 16  # about half of them, each way


def test_every_epoch_sees_a_new_order_with_repeat():
    src = data.load("synthetic", n_train=16, n_val=8)
    ds = data.pipeline(src, "train", batch_size=16, preprocess_mode="none", repeat=True, seed=1)
    it = iter(ds)
    first, second = next(it)[1].numpy(), next(it)[1].numpy()
    assert sorted(first) == sorted(second)  # same images
    assert not np.array_equal(first, second)  # in a new order


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("augment", [True, False])
def test_a_shard_is_exactly_its_rows_of_every_batch(size, augment):
    """A data-parallel worker's stream (`shard`) gives rows rank, rank + size, ... of the whole
    stream's batches: the same images, crops and flips, across epochs and after a skip, also
    when the batch does not split evenly (10 rows on 3 workers: 4, 3, 3); and a stream started
    after 2 batches gives the unbroken stream's batches from its third on."""
    src = data.load("synthetic", n_train=24, n_val=8)
    kw = dict(batch_size=10, preprocess_mode="scale", augment=augment, seed=3, repeat=True,
              skip=20)  # fmt: skip
    whole = [(x.numpy(), y.numpy()) for x, y in data.pipeline(src, "train", **kw).take(6)]
    unbroken = data.pipeline(src, "train", **{**kw, "skip": 0}).take(8)
    for (x, y), (wx, wy) in zip(list(unbroken)[2:], whole, strict=True):  # skip 20 = 2 batches
        np.testing.assert_array_equal(y.numpy(), wy)
        np.testing.assert_array_equal(x.numpy(), wx)
    for rank in range(size):
        shard = data.pipeline(src, "train", shard=(rank, size), **kw).take(6)
        for (x, y), (wx, wy) in zip(shard, whole, strict=True):
            np.testing.assert_array_equal(y.numpy(), wy[rank::size])
            np.testing.assert_array_equal(x.numpy(), wx[rank::size])
    with pytest.raises(ValueError, match="rank"):
        data.pipeline(src, "train", shard=(2, 2), **kw)


def test_preprocessing_modes_match_keras_applications():
    batch = tf.constant(np.full((1, 2, 2, 3), 255, np.uint8))
    assert float(tf.reduce_max(data.preprocess(batch, "scale"))) == 1.0
    assert float(tf.reduce_max(data.preprocess(batch, "tf"))) == 1.0
    caffe = data.preprocess(batch, "caffe").numpy()
    # caffe: RGB -> BGR, then minus the ImageNet means (B 103.939, G 116.779, R 123.68)
    np.testing.assert_allclose(
        caffe[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5
    )
    with pytest.raises(GreenkdError):
        data.preprocess(batch, "zca")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell apart")
def test_autotune_runs_without_its_model_in_a_one_core_process_and_fixed_threads_keep_theirs():
    """On one core tf.data's autotuning model has nothing to tune and cost each iterator's
    deletion a wait for its thread (greenkd.data.thread_options): off there, on elsewhere."""
    from greenkd.data import thread_options

    cores = os.sched_getaffinity(0)
    assert thread_options(DataThreads()).autotune.enabled is not False
    os.sched_setaffinity(0, {min(cores)})
    try:
        assert thread_options(DataThreads()).autotune.enabled is False
        fixed = thread_options(DataThreads.parse("4"))
        assert fixed.autotune.enabled is not False
        assert fixed.threading.max_intra_op_parallelism == 1
    finally:
        os.sched_setaffinity(0, cores)

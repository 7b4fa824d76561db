"""The input path of frameworks other than TensorFlow (greenkd.batches) against tf.data's.

Both run here in one process: Keras PyDatasets work on any backend, so the non-TensorFlow path
is compared batch by batch with the tf.data pipeline of the same source and seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from greenkd import data
from greenkd.batches import Batches, ValidationBatches, augment_batch
from greenkd.config import DataThreads, RunConfig


@pytest.fixture(scope="module")
def shapes():
    # 100 images: batches of 16 cross the epoch boundary (100 = 6 x 16 + 4)
    return data.load("synthetic", n_train=100, n_val=40, seed=3)


def _tf_batches(source, count, **kw):
    ds = data.pipeline(source, "train", batch_size=16, repeat=True, **kw)
    return [tuple(np.asarray(t) for t in batch) for batch in ds.take(count)]


def test_non_tf_path_gives_tf_datas_images_labels_and_order_for_a_seed(shapes):
    reference = _tf_batches(shapes, 14, preprocess_mode="caffe", seed=7)
    ours = Batches(shapes, "train", batch_size=16, preprocess_mode="caffe", seed=7, repeat=True)
    for k, (x, y) in enumerate(reference):
        mine_x, mine_y = ours[k]
        np.testing.assert_array_equal(mine_y, y, err_msg=f"labels of batch {k}")
        np.testing.assert_allclose(mine_x, x, atol=1e-4, err_msg=f"images of batch {k}")
    # a fresh order every epoch, not the first one again: epoch 2 starts at image 200
    first, second = (np.concatenate([b[1] for b in reference])[s : s + 100] for s in (0, 100))
    assert not np.array_equal(first, second)
    assert sorted(first) == sorted(second) == sorted(shapes.arrays["train"][1])
    # a stream restarted after 9 batches goes on with the batches an unbroken one gives
    resumed = Batches(shapes, "train", batch_size=16, preprocess_mode="caffe", seed=7,
                      repeat=True, skip=9 * 16)  # fmt: skip
    for k in range(5):
        np.testing.assert_array_equal(resumed[k][1], reference[9 + k][1])
    # another seed, another order
    other = Batches(shapes, "train", batch_size=16, preprocess_mode="none", seed=8, repeat=True)
    assert not np.array_equal(other[0][1], reference[0][1])


def test_non_tf_validation_batches_match_tf_datas_padding_and_weights(shapes):
    cfg = RunConfig(n_train=100, n_val=40)
    reference = list(data.validation_batches(shapes, cfg, "scale"))
    ours = ValidationBatches(shapes, "scale", cfg.data_threads, 16)  # 40 = 16 + 16 + 8 real
    ref16 = ValidationBatches(shapes, "scale", cfg.data_threads, data.VAL_BATCH)
    assert len(reference) == len(ref16) == 1  # 40 images: one batch of the whole split
    x, y, w = (np.asarray(t) for t in reference[0])
    mx, my, mw = ref16[0]
    np.testing.assert_allclose(mx, x, atol=1e-6)
    np.testing.assert_array_equal(my, y)
    np.testing.assert_array_equal(mw, w)
    # padded batches of one shape: the last one filled with the first images, weighted 0
    assert [b[0].shape[0] for b in (ours[i] for i in range(len(ours)))] == [16, 16, 16]
    last = ours[2]
    np.testing.assert_array_equal(last[2], [1.0] * 8 + [0.0] * 8)
    np.testing.assert_array_equal(last[1][8:], shapes.arrays["val"][1][:8])
    np.testing.assert_allclose(ours.images_only()[1], ours[1][0])


def test_non_tf_augmentation_is_seeded_flips_and_crops(shapes):
    def batches(seed, **kw):
        b = Batches(shapes, "train", batch_size=16, preprocess_mode="none", seed=seed,
                    repeat=True, augment=True, **kw)  # fmt: skip
        return [b[k] for k in range(8)]

    once, again, other = batches(5), batches(5), batches(6)
    plain = Batches(shapes, "train", batch_size=16, preprocess_mode="none", seed=5, repeat=True)
    for k in range(8):
        np.testing.assert_array_equal(once[k][0], again[k][0])  # seeded
        np.testing.assert_array_equal(once[k][1], plain[k][1])  # augmenting keeps the order
    assert any(not np.array_equal(once[k][0], plain[k][0]) for k in range(8))
    assert any(not np.array_equal(once[k][0], other[k][0]) for k in range(8))
    # a data-parallel worker's shard: its rows of the same augmented batches
    for k, (x, y) in enumerate(batches(5, shard=(1, 3))):
        np.testing.assert_array_equal(x, once[k][0][1::3])
        np.testing.assert_array_equal(y, once[k][1][1::3])
    # the worker count ("data threads") changes nothing: 3 worker threads, through the
    # enqueuer Keras's fit() reads them with
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    threaded = Batches(shapes, "train", batch_size=16, preprocess_mode="none", seed=5,
                       repeat=True, augment=True, threads=DataThreads(parallel_calls=3))  # fmt: skip
    assert threaded.workers == 3
    adapter = PyDatasetAdapter(threaded, shuffle=False)
    adapter.on_epoch_begin()
    stream = adapter.get_numpy_iterator()
    for k in range(8):
        np.testing.assert_array_equal(next(stream)[0], once[k][0])
    adapter.on_epoch_end()


def test_augment_batch_is_a_flip_and_a_crop_of_the_zero_padded_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    out = augment_batch(images, np.random.default_rng(1), flip=True)
    assert out.dtype == np.uint8 and out.shape == images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    flipped = 0
    for i in range(len(images)):
        windows = {
            (dy, dx, mirrored)
            for dy in range(9)
            for dx in range(9)
            for mirrored in (False, True)
            if np.array_equal(
                out[i], padded[i, dy : dy + 32, dx : dx + 32][:, :: -1 if mirrored else 1]
            )
        }
        assert windows, f"image {i} is no crop of its padded image"
        flipped += all(m for _, _, m in windows)
    assert 16 < flipped < 48  # about half the images flipped
    never = augment_batch(images, np.random.default_rng(1), flip=False)
    for i in range(len(images)):
        assert any(
            np.array_equal(never[i], padded[i, dy : dy + 32, dx : dx + 32])
            for dy in range(9)
            for dx in range(9)
        )


def test_non_tf_path_reads_an_image_folder_as_tf_datas_loader_does(tmp_path):
    import tensorflow as tf

    from greenkd.batches import _gather, folder_splits

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "emu"):
        (tmp_path / cls).mkdir()
        for i in range(7):  # already 32x32: no resize, so the pixels must agree exactly
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / cls / f"{i}.png"), tf.io.encode_png(img))
    reference = data.load(str(tmp_path), image_size=32, seed=0)  # tf.data (this process's)
    classes, files = folder_splits(tmp_path)
    assert classes == ["cat", "dog", "emu"]
    source = data.Source("folder", 3, 32, {s: len(f) for s, (f, _) in files.items()}, None,
                         in_memory=False, files=files)  # fmt: skip
    for split in ("train", "val"):
        pairs = list(reference.split(split))
        assert source.sizes[split] == len(pairs) == reference.sizes[split]
        images, labels = _gather(source, split, np.arange(len(pairs)))
        np.testing.assert_array_equal(labels, [int(y) for _, y in pairs])
        np.testing.assert_array_equal(images, np.stack([np.asarray(x) for x, _ in pairs]))

"""MNIST IDX parser and tf.data pipeline, on the real files in ../shared and on corrupted copies."""

import gzip
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

from handgrad.pipelines import mnist

TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def arrays(mnist_dir):
    return mnist.load_arrays(mnist_dir)


def test_real_files_counts_and_test_histogram(arrays):
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    assert train_x.shape == (60_000, 28, 28) and train_y.shape == (60_000,)
    assert test_x.shape == (10_000, 28, 28) and test_y.shape == (10_000,)
    assert np.bincount(test_y, minlength=10).tolist() == TEST_HISTOGRAM
    # The first ten test digits of the official file, and its pixel range.
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert test_x.dtype == np.uint8 and test_x.min() == 0 and test_x.max() == 255


def test_gzipped_and_plain_files_read_the_same(mnist_dir, tmp_path):
    src = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    np.testing.assert_array_equal(mnist.read_idx(plain), mnist.read_idx(src))
    header = struct.unpack(">IIIIII", gzip.decompress(
        (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())[:24])
    # Pixel bytes straight after the 16-byte header: first image, row 7, columns 6..9.
    assert header[:4] == (0x803, 10_000, 28, 28)
    images = mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert images[0, 7, 6:10].tolist() == list(raw[16 + 7 * 28 + 6:16 + 7 * 28 + 10])


def _idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def _split_dir(tmp_path, images, labels, gz=True):
    """Writes a test split as IDX files (payload bytes given) into tmp_path."""
    for stem, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            (tmp_path / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (tmp_path / stem).write_bytes(data)
    return tmp_path


GOOD_IMAGES = _idx(0x803, (3, 28, 28), bytes(range(256)) * 9 + bytes(3 * 784 - 2304))
GOOD_LABELS = _idx(0x801, (3,), bytes([3, 1, 4]))


def test_small_valid_split(tmp_path):
    images, labels = mnist.load_idx_split(_split_dir(tmp_path, GOOD_IMAGES, GOOD_LABELS, False),
                                          "test")
    assert labels.tolist() == [3, 1, 4]
    assert images[0, 0, :3].tolist() == [0, 1, 2] and images[0, 9, 4].tolist() == 0  # 256 = 9*28+4


@pytest.mark.parametrize("images, labels, message", [
    (GOOD_IMAGES, b"\x08\x00\x08\x01" + GOOD_LABELS[4:],
     r"t10k-labels-idx1-ubyte.gz: bad magic number 0x08000801"),
    (b"\x00\x00\x0d\x03" + GOOD_IMAGES[4:], GOOD_LABELS,
     r"t10k-images-idx3-ubyte.gz: bad magic number 0x00000d03"),
    (GOOD_LABELS, GOOD_LABELS,
     r"t10k-images-idx3-ubyte.gz: bad magic number 0x00000801: the header names 1 dimensions, "
     r"expected 3"),
    (GOOD_IMAGES[:-100], GOOD_LABELS,
     r"t10k-images-idx3-ubyte.gz: truncated file: the header says shape \(3, 28, 28\), i\.e\. "
     r"2368 bytes, but the file has 2268"),
    (GOOD_IMAGES[:10], GOOD_LABELS, r"t10k-images-idx3-ubyte.gz: truncated file: 10 bytes"),
    (GOOD_IMAGES, GOOD_LABELS + b"\x05",
     r"t10k-labels-idx1-ubyte.gz: 1 unexpected trailing bytes"),
    (GOOD_IMAGES, _idx(0x801, (2,), bytes([3, 1])),
     r"label/image count mismatch: 3 images but 2 labels"),
    (GOOD_IMAGES, _idx(0x801, (3,), bytes([3, 1, 12])), r"labels must be digits 0..9"),
    (_idx(0x803, (1, 32, 32), bytes(1024)), _idx(0x801, (1,), b"\x01"),
     r"images must be 28 x 28"),
], ids=["bad_magic_labels", "bad_magic_type_byte", "wrong_ndim", "truncated_data",
        "truncated_header", "trailing_bytes", "count_mismatch", "label_out_of_range",
        "wrong_image_size"])
def test_corrupted_files_give_their_own_error(tmp_path, images, labels, message):
    with pytest.raises(mnist.IdxFormatError, match=message):
        mnist.load_idx_split(_split_dir(tmp_path, images, labels), "test")


def test_truncated_gzip_stream(tmp_path, mnist_dir):
    broken = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(mnist.IdxFormatError, match=r"labels-idx1-ubyte.gz: corrupt or truncated"):
        mnist.read_idx(broken)


def test_missing_file_names_the_expected_files(tmp_path, mnist_dir):
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found"):
        mnist.load_idx_split(tmp_path, "test")


def test_datasets_match_the_arrays(mnist_dir, arrays):
    train, test = mnist.make_datasets(mnist_dir, batch_size=100, train_limit=1000,
                                      test_limit=1200, eval_batch_size=500)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in test])
    assert [len(y) for y in ys] == [500, 500, 200]
    test_x, test_y = arrays["test"]
    np.testing.assert_array_equal(np.concatenate(ys), test_y[:1200])
    np.testing.assert_allclose(np.concatenate(xs)[..., 0], test_x[:1200] / 255.0, rtol=1e-6)
    epochs = [np.concatenate([y.numpy() for _, y in train]) for _ in range(2)]
    train_y = arrays["train"][1][:1000]
    for labels in epochs:  # every example once per epoch, in a new order each epoch
        assert np.bincount(labels, minlength=10).tolist() == np.bincount(train_y,
                                                                         minlength=10).tolist()
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], train_y)


def test_random_shift_is_an_exact_integer_translation():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 255, size=(64, 9, 9, 1)).astype(np.float32)
    shifted = mnist.random_shift(tf.constant(images), 2, seed=3).numpy()
    seen = set()
    for src, out in zip(images[..., 0], shifted[..., 0]):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = np.zeros_like(src)  # NumPy shift with zero fill
                ref[max(dy, 0):9 + min(dy, 0), max(dx, 0):9 + min(dx, 0)] = \
                    src[max(-dy, 0):9 + min(-dy, 0), max(-dx, 0):9 + min(-dx, 0)]
                if np.array_equal(ref, out):
                    matches.append((dy, dx))
        assert len(matches) == 1, "each output must be exactly one shift of its input"
        seen.add(matches[0])
    assert len(seen) > 10  # the offsets vary over [-2, 2]^2


def test_augmented_training_batches(mnist_dir):
    train, _ = mnist.make_datasets(mnist_dir, batch_size=50, augment_shift=2, train_limit=200)
    x, y = next(iter(train))
    assert x.dtype == tf.float32 and y.dtype == tf.int32 and x.shape == (50, 28, 28, 1)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0

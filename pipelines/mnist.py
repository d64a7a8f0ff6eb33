"""MNIST input pipeline: the official IDX files (or TFDS) -> batched `tf.data.Dataset`s.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/), big-endian:
    bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte), byte 3 the number of
    dimensions n, then n uint32 sizes, then prod(sizes) elements.
    images: magic 0x00000803, sizes (N, 28, 28); labels: magic 0x00000801, sizes (N,).
Files may be gzipped (`*.gz`, detected by their first two bytes) or not.

Images come out as NHWC float32 in [0, 1], `(batch, 28, 28, 1)`; labels as int32 `(batch,)`.
"""

import contextlib
import functools
import gzip
import os
import shutil
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import tensorflow as tf

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_EXAMPLES = {"train": 60_000, "test": 10_000}
TFDS_HOST = ("storage.googleapis.com", 443)  # where TFDS' `mnist` builder downloads from
CONNECT_TIMEOUT_S = 3.0
_UBYTE = 0x08


class IdxFormatError(ValueError):
    """An IDX file is malformed: the message names the file and what is wrong."""


def read_idx(path, expected_ndim=None):
    """Reads one IDX file (gzipped or not) into a uint8 NumPy array.

    Args:
        path: file path. expected_ndim: if given, the number of dimensions the header must name
            (3 for images, 1 for labels).
    Returns: `np.ndarray` of dtype uint8 and the shape named in the header.
    Raises: FileNotFoundError; IdxFormatError on a bad magic number, a wrong number of
        dimensions, or a file shorter or longer than its header says.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip stream ({e}).") from e
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: truncated file: {len(raw)} bytes, the header alone "
                             "needs at least 4.")
    zero, dtype, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype != _UBYTE or ndim == 0:
        raise IdxFormatError(
            f"{path}: bad magic number 0x{int.from_bytes(raw[:4], 'big'):08x}; expected "
            "0x00000801 (labels) or 0x00000803 (images): two zero bytes, type 0x08 (uint8), "
            "then the number of dimensions."
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise IdxFormatError(
            f"{path}: bad magic number 0x{int.from_bytes(raw[:4], 'big'):08x}: the header "
            f"names {ndim} dimensions, expected {expected_ndim} "
            f"(magic 0x{0x800 + expected_ndim:08x})."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated file: {len(raw)} bytes, the header of a "
                             f"{ndim}-D IDX file needs {header}.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) < expected:
        raise IdxFormatError(
            f"{path}: truncated file: the header says shape {shape}, i.e. {expected} bytes, "
            f"but the file has {len(raw)}."
        )
    if len(raw) > expected:
        raise IdxFormatError(
            f"{path}: {len(raw) - expected} unexpected trailing bytes after the {shape} data "
            f"named in the header ({expected} bytes expected, {len(raw)} found)."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(data_dir, stem):
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise FileNotFoundError(f"data_dir={data_dir} {what}: expected the folder holding the "
                                "four official MNIST IDX files (train-images-idx3-ubyte[.gz], "
                                "...).")
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {data_dir}. Expected the four official IDX files: "
        + ", ".join(f"{s}[.gz]" for pair in SPLITS.values() for s in pair)
    )


def load_idx_split(data_dir, split):
    """Returns `(images, labels)` of one split ("train" or "test") from a folder of IDX files.

    images: uint8 `(N, 28, 28)`; labels: uint8 `(N,)`. Raises IdxFormatError when the image and
    label counts differ, when the split holds no image, when the images are not 28 x 28, or when
    a label is not in 0..9.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}. Received: split={split!r}")
    data_dir = Path(data_dir)
    image_path, label_path = (_find(data_dir, stem) for stem in SPLITS[split])
    images = read_idx(image_path, expected_ndim=3)
    labels = read_idx(label_path, expected_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{image_path} / {label_path}: label/image count mismatch: {images.shape[0]} images "
            f"but {labels.shape[0]} labels."
        )
    if images.shape[0] == 0:
        raise IdxFormatError(f"{image_path}: holds 0 images: the {split} split is empty (the "
                             f"official file holds {NUM_EXAMPLES[split]}).")
    if images.shape[1:] != (28, 28):
        raise IdxFormatError(f"{image_path}: images must be 28 x 28. Received shape "
                             f"{images.shape}.")
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{label_path}: labels must be digits 0..9. Received a label "
                             f"{int(labels.max())}.")
    return images, labels


@functools.lru_cache(maxsize=2)
def _load_idx_dir(data_dir):
    # Cached: training and evaluation in one process read the files once. The arrays are
    # read-only views of the decompressed bytes, so sharing them is safe.
    return {split: load_idx_split(data_dir, split) for split in SPLITS}


def _unreachable(host, port, timeout):
    """None when a TCP connection to `host:port` (or to the HTTPS proxy, when one is set) opens
    within `timeout` seconds, else why not (one line)."""
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname, parts.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} unreachable within {timeout:g} s ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def _removed_on_failure(root):
    """Removes what the block added to the TFDS folder `root` (its `mnist/` and `downloads/`)
    when it fails, so a cut download leaves no half-written data dir behind."""
    watched = (root, root / "mnist", root / "downloads")
    before = {p: set(p.iterdir()) if p.is_dir() else None for p in watched}
    try:
        yield
    except BaseException:
        if before[root] is None:
            shutil.rmtree(root, ignore_errors=True)
        for folder, old in before.items():
            if old is not None and folder.is_dir():
                for path in set(folder.iterdir()) - old:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
        raise


def _load_tfds(tfds_data_dir):
    """The TFDS `mnist` splits as arrays; downloads only after a quick check that the download
    host answers (offline, TFDS would retry for minutes and leave an incomplete folder)."""
    import tensorflow_datasets as tfds

    root = Path(tfds_data_dir or tfds.core.constants.DATA_DIR).expanduser()
    builder = tfds.builder("mnist", data_dir=str(root))
    if not builder.is_prepared():
        reason = _unreachable(*TFDS_HOST, timeout=CONNECT_TIMEOUT_S)
        if reason is not None:
            raise ConnectionError(f"offline? `mnist` is not prepared in {root} and the download "
                                  f"host is {reason}")
        with _removed_on_failure(root):
            builder.download_and_prepare()
    out = {}
    for split in SPLITS:
        images, labels = tfds.as_numpy(
            builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        out[split] = (images[..., 0], labels.astype(np.uint8))  # (N, 28, 28), (N,)
    return out


def load_arrays(data_dir=None, *, tfds_data_dir=None):
    """Returns `{"train": (images, labels), "test": (images, labels)}` as uint8 NumPy arrays.

    Source: the IDX files in `data_dir`; with `data_dir=None`, TFDS `mnist` from
    `tfds_data_dir` (default: TFDS' own, `~/tensorflow_datasets` or $TFDS_DATA_DIR), downloaded
    there when `TFDS_HOST` answers within `CONNECT_TIMEOUT_S` (a failed download leaves nothing
    behind). If TFDS fails, the folder named by the environment variable HANDGRAD_MNIST_DIR is
    used, and otherwise a one-line RuntimeError says to pass data_dir.
    """
    if data_dir is not None:
        return _load_idx_dir(str(Path(data_dir).resolve()))
    try:
        return _load_tfds(tfds_data_dir)
    except Exception as e:  # TFDS raises many kinds: no network, bad cache, missing package
        fallback = os.environ.get("HANDGRAD_MNIST_DIR")
        if fallback:
            return {split: load_idx_split(fallback, split) for split in SPLITS}
        cause = (str(e).strip().splitlines() or [""])[0]  # the whole chain: --verbose
        raise RuntimeError(
            "pipelines/mnist.py: TFDS could not load `mnist` "
            f"({type(e).__name__}: {cause}). Pass data_dir (--data_dir=...) naming a folder with "
            "the official IDX files, or set HANDGRAD_MNIST_DIR."
        ) from e


def random_shift(images, max_shift, seed=None):
    """Shifts each image of a batch by an integer offset in [-max_shift, max_shift] on each axis.

    Args: images `(R, H, W, C)` float. Returns the same shape; uncovered pixels are 0.
    """
    r = tf.shape(images)[0]
    shifts = tf.random.uniform([r, 2], -max_shift, max_shift + 1, dtype=tf.int32, seed=seed)
    shifts = tf.cast(shifts, tf.float32)  # (R, 2): dx, dy
    one, zero = tf.ones([r, 1]), tf.zeros([r, 1])
    # Projective transform rows [a0 a1 a2 b0 b1 b2 c0 c1]: output (x, y) reads input
    # (x - dx, y - dy), i.e. a pure translation; nearest interpolation keeps pixels exact.
    transforms = tf.concat([one, zero, -shifts[:, :1], zero, one, -shifts[:, 1:], zero, zero],
                           axis=1)  # (R, 8)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")


def make_datasets(data_dir=None, batch_size=50, augment_shift=0, shuffle_seed=0,
                  train_limit=None, test_limit=None, eval_batch_size=500, shuffle=True):
    """The MNIST train and test `tf.data.Dataset`s.

    Args:
        data_dir: folder with the official IDX files (gzipped or not); None: TFDS (see
            `load_arrays`).
        batch_size: training batch size. eval_batch_size: test batch size.
        augment_shift: if > 0, each training image is shifted by up to this many pixels.
        shuffle_seed: seed of the per-epoch shuffle of all training examples.
        shuffle: False keeps the file order (tests that compare runs batch by batch: under a
            tf.distribute strategy, `experimental_distribute_dataset` rewrites the pipeline and
            the shuffle draws a different permutation than on one device).
        train_limit, test_limit: use only the first N examples (tests, quick runs).
    Returns: `(train_ds, test_ds)`, elements `(images (B, 28, 28, 1) float32 in [0, 1],
        labels (B,) int32)`. The training set reshuffles every epoch and drops the last
        partial batch; both are cached (uint8) and prefetched.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    arrays = load_arrays(data_dir)

    def to_dataset(split, limit):
        images, labels = arrays[split]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return tf.data.Dataset.from_tensor_slices(
            (images[..., None], labels.astype(np.int32))).cache()  # (28, 28, 1) uint8, ()

    def to_float(images, labels):
        return tf.cast(images, tf.float32) / 255.0, labels

    train = to_dataset("train", train_limit)
    if shuffle:
        train = train.shuffle(len(train), seed=shuffle_seed, reshuffle_each_iteration=True)
    train = train.batch(batch_size, drop_remainder=True)
    train = train.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment_shift:
        train = train.map(lambda x, y: (random_shift(x, augment_shift), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)
    test = to_dataset("test", test_limit).batch(eval_batch_size).map(to_float).cache()
    return train, test.prefetch(tf.data.AUTOTUNE)

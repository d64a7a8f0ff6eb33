"""WIDER FACE input: the annotation parser and the tf.data pipeline for the face detector.

Layout read (the official one, also written by `pipelines.synthetic_faces`):
```
<data_dir>/WIDER_{train,val}/images/<event>/<name>.jpg
<data_dir>/wider_face_split/wider_face_{train,val}_bbx_gt.txt
```
The annotation text has, per image, a path line, a count line, then one line per face:
`x1 y1 w h blur expression illumination invalid occlusion pose`. An image with 0 faces still
has one line of ten zeros, which is not a face. The parser converts `x y w h` once to the
package's `[ymin, xmin, ymax, xmax] = [y1, x1, y1 + h, x1 + w]` in pixels; `zoo.wider_results`
converts back when writing result files.

`make_dataset` yields batches for training (random size per batch, random flips) or evaluation
(one fixed size, no flip, plus the image path and scale to map predictions back).
"""

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from handgrad.pipelines import augment
from handgrad.pipelines.wider_format import xywh_to_yxyx

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
SPLITS = ("train", "val")


@dataclasses.dataclass
class WiderRecord:
    """One annotated image.

    Attributes:
        path: image path relative to `WIDER_<split>/images`, e.g. `0--Parade/0_Parade_x_465.jpg`.
        boxes: (N, 4) float32 `[ymin, xmin, ymax, xmax]` in pixels, N >= 0.
        attributes: (N, 6) int32, columns in the order of `ATTRIBUTES`.
    """

    path: str
    boxes: np.ndarray
    attributes: np.ndarray


@dataclasses.dataclass
class ParseStats:
    """Counts from one parse: images, face lines read, and why boxes were dropped."""

    images: int = 0
    face_lines: int = 0  # lines after count lines, including the ten-zero lines of 0-face images
    empty_images: int = 0  # images whose count line is 0
    invalid: int = 0  # dropped: invalid flag set
    degenerate: int = 0  # dropped: w <= 0 or h <= 0 (and not invalid)
    kept: int = 0


def _error(path, lineno, expected, line):
    return ValueError(f"{path}:{lineno}: expected {expected}. Received: {line!r}")


def parse_annotations(path, *, drop_invalid=True, return_stats=False):
    """Parses a `wider_face_*_bbx_gt.txt` file.

    Args:
        path: the annotation file.
        drop_invalid: drop faces flagged invalid and faces with w <= 0 or h <= 0 (logged).
        return_stats: also return a `ParseStats`.

    Returns:
        A list of `WiderRecord` in file order (and the `ParseStats` if asked).

    Raises:
        ValueError naming the file and 1-based line number when the file is malformed.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    stats = ParseStats()
    records = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # tolerate blank lines between records / at the end
            i += 1
            continue
        image_path = lines[i].strip()
        if not image_path.lower().endswith((".jpg", ".jpeg", ".png")):
            raise _error(path, i + 1, "an image path ending in .jpg/.png", lines[i])
        if i + 1 >= len(lines):
            raise _error(path, i + 2, "a face count line", "<end of file>")
        try:
            count = int(lines[i + 1].strip())
        except ValueError:
            raise _error(path, i + 2, "an integer face count", lines[i + 1]) from None
        if count < 0:
            raise _error(path, i + 2, "a face count >= 0", lines[i + 1])
        # A 0-face image is followed by one line of ten zeros (always in the official files).
        n_lines = max(count, 1) if count or _is_face_line(lines, i + 2) else 0
        rows = []
        for k in range(n_lines):
            lineno = i + 3 + k
            if lineno > len(lines):
                raise _error(path, lineno, f"face line {k + 1} of {count}", "<end of file>")
            fields = lines[lineno - 1].split()
            try:
                values = [int(float(v)) for v in fields]
            except ValueError:
                values = []
            if len(values) != 10:
                raise _error(path, lineno, "10 numbers: x y w h + 6 attribute flags",
                             lines[lineno - 1])
            rows.append(values)
        stats.images += 1
        stats.face_lines += n_lines
        rows = np.asarray(rows, np.int64).reshape(-1, 10)[:count]  # (count, 10)
        if count == 0:
            stats.empty_images += 1
        w, h = rows[:, 2], rows[:, 3]
        attributes = rows[:, 4:].astype(np.int32)  # (count, 6)
        keep = np.ones(count, bool)
        if drop_invalid:
            invalid = attributes[:, 3] != 0
            degenerate = ~invalid & ((w <= 0) | (h <= 0))
            stats.invalid += int(invalid.sum())
            stats.degenerate += int(degenerate.sum())
            keep = ~invalid & ~degenerate
        boxes = xywh_to_yxyx(rows[:, :4]).astype(np.float32)[keep]  # (N, 4)
        stats.kept += int(keep.sum())
        records.append(WiderRecord(image_path, boxes.reshape(-1, 4), attributes[keep]))
        i += 2 + n_lines
    logging.info(
        "%s: %d images, %d boxes kept, dropped %d invalid and %d with w or h <= 0.",
        path, stats.images, stats.kept, stats.invalid, stats.degenerate,
    )
    return (records, stats) if return_stats else records


def _is_face_line(lines, index):
    """True when `lines[index]` exists and holds ten numbers (the 0-face placeholder)."""
    if index >= len(lines):
        return False
    fields = lines[index].split()
    return len(fields) == 10 and all(f.lstrip("-").replace(".", "", 1).isdigit() for f in fields)


def find_annotation_file(data_dir, split):
    """Returns the `wider_face_<split>_bbx_gt.txt` under `data_dir` (official or flat layout)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    name = f"wider_face_{split}_bbx_gt.txt"
    candidates = [Path(data_dir) / "wider_face_split" / name, Path(data_dir) / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No {name} under {data_dir}. Expected one of: {', '.join(map(str, candidates))}"
    )


def images_dir(data_dir, split):
    """Returns `<data_dir>/WIDER_<split>/images`."""
    return Path(data_dir) / f"WIDER_{split}" / "images"


class SkipCounter:
    """Counts images that failed to decode and were skipped by `make_dataset`.

    Exact once the dataset has been iterated to the end (elements in flight are not yet counted).
    """

    def __init__(self):
        self.attempted = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.decoded = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def skipped(self):
        return int(self.attempted.numpy() - self.decoded.numpy())


def decode_image(contents):
    """Decodes JPEG / PNG / BMP / GIF bytes to (H, W, 3) uint8 (grey and CMYK become RGB)."""
    image = tf.image.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _file_source(data_dir, split):
    """(image uint8 (H, W, 3), boxes (N, 4), path) from the official layout; skips bad images."""
    records = parse_annotations(find_annotation_file(data_dir, split))
    root = images_dir(data_dir, split)
    paths = [r.path for r in records]
    full = [str(root / p) for p in paths]
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)]),
        [len(r.boxes) for r in records],
    )  # (num_images, None, 4)
    ds = tf.data.Dataset.from_tensor_slices((full, boxes, paths))
    return ds, len(records)


def _load(counter):
    def load(full_path, boxes, rel_path):
        counter.attempted.assign_add(1)
        return decode_image(tf.io.read_file(full_path)), boxes, rel_path

    def count(image, boxes, rel_path):
        counter.decoded.assign_add(1)
        return image, boxes, rel_path

    return load, count


def from_tfds_example(example):
    """Converts a TFDS `wider_face` example to (image, boxes in pixels, path); drops invalid."""
    image = example["image"]
    shape = tf.cast(tf.shape(image), tf.float32)
    faces = example["faces"]
    bbox = tf.reshape(tf.cast(faces["bbox"], tf.float32), [-1, 4])  # (N, 4) normalised yxyx
    boxes = bbox * tf.stack([shape[0], shape[1], shape[0], shape[1]])[tf.newaxis, :]
    valid = tf.logical_and(
        tf.equal(tf.cast(faces["invalid"], tf.int32), 0),
        tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1]),
    )
    return image, tf.boolean_mask(boxes, valid), example["image/filename"]


def _tfds_source(split, tfds_data_dir):
    import tensorflow_datasets as tfds

    tfds_split = {"train": "train", "val": "validation"}[split]
    ds, info = tfds.load("wider_face", split=tfds_split, data_dir=tfds_data_dir,
                         download=False, with_info=True)
    return ds.map(from_tfds_example, num_parallel_calls=tf.data.AUTOTUNE), \
        info.splits[tfds_split].num_examples


def _pad_boxes(boxes, max_boxes):
    """Pads (N, 4) boxes with rows of -1 to (max_boxes, 4); keeps the first max_boxes."""
    boxes = boxes[:max_boxes]
    num = tf.shape(boxes)[0]
    padded = tf.pad(boxes, [[0, max_boxes - num], [0, 0]], constant_values=-1.0)
    padded.set_shape([max_boxes, 4])
    return padded, num


def make_dataset(data_dir, split, *, batch_size, image_sizes=(512, 576, 640), flip=True,
                 training=True, target_fn=None, max_boxes=1000, shuffle_buffer=None, seed=None,
                 eval_size=None, source="files", tfds_data_dir=None, skip_counter=None):
    """Builds the batched WIDER FACE `tf.data.Dataset` (files or TFDS) for the face detector.

    Args:
        data_dir: root of the official layout (see module docstring).
        split: "train" or "val".
        batch_size: images per batch.
        image_sizes: square sizes to draw from in training, one per batch (seed: 512/576/640).
        flip: in training, flip each image horizontally with p = 0.5.
        training: training mode (shuffle, random size, flips) or evaluation mode.
        target_fn: optional `f(image (S,S,3), boxes (max_boxes,4), num_boxes ()) -> dict`,
            applied per example in a parallel map (AUTOTUNE) to encode anchor targets. `boxes`
            are padded with -1 rows; slice `boxes[:num_boxes]` for the real ones.
        max_boxes: boxes per image after padding; images with more keep their first max_boxes.
        shuffle_buffer: training shuffle buffer (default: the whole file list, which is cheap
            because only paths and boxes are shuffled, before decoding).
        seed: makes shuffling, sizes and flips deterministic (each epoch still differs).
        eval_size: the single size used when `training=False` (default: max(image_sizes)).
        source: "files" (official layout under data_dir), "tfds" (`wider_face`, already
            prepared in `tfds_data_dir`; never downloads) or "auto" (files when the annotation
            file is found under data_dir, else TFDS).
        skip_counter: an optional `SkipCounter` that counts images skipped as undecodable.

    Returns:
        A dataset of `(images (B, S, S, 3) float32 in [0, 1], labels)`. Without `target_fn`
        labels are `{"boxes": (B, max_boxes, 4) float32 padded with -1, "num_boxes": (B,)
        int32}`; with it, the dict `target_fn` returns. In evaluation mode labels also hold
        `"image_path"` (B,) string relative to `WIDER_<split>/images`, `"scale"` (B, 2)
        `[sy, sx]` (original pixel = model pixel / scale) and `"original_size"` (B, 2) [H, W].

    How the random size per batch works: a stream of random size indices, each repeated
    `batch_size` times, is zipped with the decoded examples, so the `batch_size` consecutive
    examples that form one batch share one size while resizing still runs in a parallel map.
    Undecodable images are dropped (`ignore_errors`) before that zip so batches stay aligned.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    sizes = tf.constant(list(image_sizes), tf.int32)
    counter = skip_counter or SkipCounter()
    if source == "auto":
        try:
            find_annotation_file(data_dir, split)
            source = "files"
        except FileNotFoundError:
            source = "tfds"
    if source == "files":
        ds, num = _file_source(data_dir, split)
        if training:
            ds = ds.shuffle(shuffle_buffer or num, seed=seed, reshuffle_each_iteration=True)
        load, count = _load(counter)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors(log_warning=True).map(count)
    elif source == "tfds":
        ds, num = _tfds_source(split, tfds_data_dir)
        if training:
            ds = ds.shuffle(shuffle_buffer or 1024, seed=seed, reshuffle_each_iteration=True)
    else:
        raise ValueError(f"source must be 'files', 'tfds' or 'auto'. Received: source={source!r}")

    if training:
        size_ids = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(r % len(image_sizes), tf.int32))
        size_ids = size_ids.flat_map(lambda s: tf.data.Dataset.from_tensors(s).repeat(batch_size))
        flip_seed = None if seed is None else seed + 1
        flips = tf.data.Dataset.random(seed=flip_seed, rerandomize_each_iteration=True).map(
            lambda r: tf.logical_and(tf.constant(flip), r % 2 == 1))
    else:
        fixed = eval_size or max(image_sizes)
        sizes = tf.constant([fixed], tf.int32)
        size_ids = tf.data.Dataset.from_tensors(0).repeat()
        flips = tf.data.Dataset.from_tensors(False).repeat()

    def geometry(example, size_id, do_flip):
        image, boxes, path = example
        original_size = tf.shape(image)[:2]
        image, boxes, scale = augment.resize_and_pad(image, boxes, sizes[size_id], flip=do_flip)
        # Clipping can leave boxes that lie outside the image with no area: drop them.
        keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
        boxes, num_boxes = _pad_boxes(tf.boolean_mask(boxes, keep), max_boxes)
        if target_fn is not None:
            labels = dict(target_fn(image, boxes, num_boxes))
        else:
            labels = {"boxes": boxes, "num_boxes": num_boxes}
        if not training:
            labels.update(image_path=path, scale=scale, original_size=original_size)
        return image, labels

    ds = tf.data.Dataset.zip((ds, size_ids, flips))
    ds = ds.map(geometry, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE)

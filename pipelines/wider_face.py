"""WIDER FACE input: the annotation parser and the tf.data pipeline for the face detector.

Layout read (the official one, also written by `pipelines.synthetic_faces`):
```
<data_dir>/WIDER_{train,val}/images/<event>/<name>.jpg
<data_dir>/wider_face_split/wider_face_{train,val}_bbx_gt.txt
```
or, for a partial copy (what `../shared/widerface` holds), the annotation file at the top and the
photos under `real_{train,val}/<event>/<name>.jpg`. Either may be partial: the annotation file
lists every image of the split (12 880 train, 3 226 val) and only the photos present are read;
how many were listed but absent is logged once (`present_records`), not an error.
The annotation text has, per image, a path line, a count line, then one line per face:
`x1 y1 w h blur expression illumination invalid occlusion pose`. An image with 0 faces still
has one line of ten zeros, which is not a face. Some copies of the train file (the one in
`../shared/widerface`) carry 7 numbers per face, `x y w h blur invalid occlusion`: read with
expression, illumination and pose -1 (unknown). That the 6th number is the invalid flag is
inferred from the data: 1.50 % of the faces carry it, mean area 38 px^2, against 1.47 % and
42 px^2 for the invalid flag of the 10-number val file (its expression flag: 1.0 %,
10 764 px^2). The parser converts `x y w h` once to the package's
`[ymin, xmin, ymax, xmax] = [y1, x1, y1 + h, x1 + w]` in pixels; `pipelines.wider_format` converts
back when writing result files.

`load_examples` is the WIDER source (official files or TFDS): decoded `(image, boxes, path)`
examples. Files are decoded as a viewer shows them (`images.decode_image` applies the EXIF
Orientation of a rotated phone photo), since annotators drew the boxes on the displayed photo.
`make_dataset` hands them to the generic detection parser (`pipelines.detection`) with
the seed's augmentation policy (`pipelines.augment`): batches for training (random size per
batch, random flips) or evaluation (one fixed size, no flip, plus the image path and scale to map
predictions back).
"""

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from handgrad.pipelines import augment, detection
from handgrad.pipelines.boxes import xywh_to_yxyx
from handgrad.pipelines.images import decode_image
from handgrad.pipelines.wider_format import read_utf8_text

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
SPLITS = ("train", "val")


@dataclasses.dataclass
class WiderRecord:
    """One annotated image.

    Attributes:
        path: image path relative to `WIDER_<split>/images`, e.g. `0--Parade/0_Parade_x_465.jpg`.
        boxes: (N, 4) float32 `[ymin, xmin, ymax, xmax]` in pixels, N >= 0.
        attributes: (N, 6) int32, columns in the order of `ATTRIBUTES` (-1: not in the file).
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


def _read_faces(path, lines, i):
    """(count, face rows of 10 ints) of the record whose path line is `lines[i]`."""
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
        try:
            values = [int(float(v)) for v in lines[lineno - 1].split()]
        except ValueError:
            values = []
        if len(values) == 7:  # x y w h blur invalid occlusion; the other flags unknown (-1)
            values = values[:5] + [-1, -1, values[5], values[6], -1]
        if len(values) != 10 and _is_image_path(lines[lineno - 1]):
            raise _error(path, lineno, f"face line {k + 1} of {count}: line {i + 2} says "
                         f"{count} faces, but only {k} follow before the next image path",
                         lines[lineno - 1])
        if len(values) != 10:
            raise _error(path, lineno, "10 numbers: x y w h + 6 attribute flags (or 7: x y w "
                         "h blur invalid occlusion)", lines[lineno - 1])
        rows.append(values)
    return count, rows


def _record(image_path, rows, drop_invalid, stats):
    """A `WiderRecord` from (count, 10) face rows; drops and counts invalid / empty boxes."""
    count = len(rows)
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
    return WiderRecord(image_path, boxes.reshape(-1, 4), attributes[keep])


def parse_annotations(path, *, drop_invalid=True, return_stats=False):
    """Parses a `wider_face_*_bbx_gt.txt` file.

    Args:
        path: the annotation file.
        drop_invalid: drop faces flagged invalid and faces with w <= 0 or h <= 0 (logged).
        return_stats: also return a `ParseStats`.

    Returns:
        A list of `WiderRecord` in file order (and the `ParseStats` if asked).

    Raises:
        ValueError naming the file and 1-based line number when the file is malformed (and the
        byte offset when it is not UTF-8).
    """
    path = Path(path)
    lines = read_utf8_text(path).splitlines()
    stats = ParseStats()
    records, first_line = [], {}
    i = 0
    while i < len(lines):
        if not lines[i].strip():  # tolerate blank lines between records / at the end
            i += 1
            continue
        image_path = lines[i].strip()
        if not _is_image_path(image_path):
            raise _error(path, i + 1, "an image path ending in .jpg/.png", lines[i])
        if image_path in first_line:  # its faces would be split over two training examples
            raise _error(path, i + 1, f"each image listed once; {image_path} is already listed "
                         f"on line {first_line[image_path]}: merge its faces into one record",
                         lines[i])
        first_line[image_path] = i + 1
        count, rows = _read_faces(path, lines, i)
        stats.images += 1
        stats.face_lines += len(rows)
        records.append(_record(image_path, np.asarray(rows, np.int64).reshape(-1, 10)[:count],
                               drop_invalid, stats))
        i += 2 + len(rows)
    logging.info(
        "%s: %d images, %d boxes kept, dropped %d invalid and %d with w or h <= 0.",
        path, stats.images, stats.kept, stats.invalid, stats.degenerate,
    )
    return (records, stats) if return_stats else records


def _is_image_path(line):
    return line.strip().lower().endswith((".jpg", ".jpeg", ".png"))


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


IMAGE_DIRS = ("WIDER_{split}/images", "real_{split}")  # official layout first


def images_dir(data_dir, split):
    """Returns the folder holding `<event>/<name>.jpg`: the first of `IMAGE_DIRS` under `data_dir`
    that exists (`<data_dir>/WIDER_<split>/images` when none does)."""
    candidates = [Path(data_dir) / d.format(split=split) for d in IMAGE_DIRS]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def present_records(records, root, annotation_file=None):
    """The records whose image file is under `root`, and how many are listed but absent.

    A partial copy of WIDER FACE (some photos of a split whose annotation file lists all of them)
    reads the photos present; the absent ones are counted in one log line.

    Returns:
        (records present, in file order; number of records whose file is absent).
    """
    root = Path(root)
    present = [r for r in records if (root / r.path).is_file()]
    absent = len(records) - len(present)
    if absent:
        logging.info("%s lists %d images; %d are present under %s, %d absent (not read).",
                     annotation_file or "the annotation file", len(records), len(present), root,
                     absent)
    return present, absent


class SkipCounter:
    """Counts images that failed to decode and were skipped by `make_dataset`.

    `skipped` is exact once the dataset has been iterated to the end. `skipped_so_far` is exact
    at any time for the files up to the newest decoded one, which is what a training stream that
    never ends can report: each file gets a sequence number in stream order (a sequential map)
    before the parallel, order-keeping decode, and `last` is the number of the newest decoded
    one, so every earlier number was either decoded or skipped (files in flight count in
    neither; a failure after the newest decoded file counts once the next file decodes).
    """

    def __init__(self):
        self.attempted = tf.Variable(0, dtype=tf.int64, trainable=False)  # numbers handed out
        self.last = tf.Variable(0, dtype=tf.int64, trainable=False)  # newest decoded number
        self.decoded = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def skipped(self):
        return int(self.attempted.numpy() - self.decoded.numpy())

    @property
    def skipped_so_far(self):
        return int(self.last.numpy() - self.decoded.numpy())


def _file_source(data_dir, split):
    """(image uint8 (H, W, 3), boxes (N, 4), path) of the photos present (`present_records`);
    images that fail to decode are skipped later."""
    annotation_file = find_annotation_file(data_dir, split)
    root = images_dir(data_dir, split)
    records, _ = present_records(parse_annotations(annotation_file), root, annotation_file)
    if not records:
        raise FileNotFoundError(
            f"None of the images listed in {annotation_file} is under {root} (looked for "
            f"<event>/<name>.jpg under {' or '.join(d.format(split=split) for d in IMAGE_DIRS)})")
    paths = [r.path for r in records]
    full = [str(root / p) for p in paths]
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)]),
        [len(r.boxes) for r in records],
    )  # (num_images, None, 4)
    ds = tf.data.Dataset.from_tensor_slices((full, boxes, paths))
    return ds, len(records)


def _load(counter):
    """(number, load, count): the sequential numbering, the parallel decode and the sequential
    count of `SkipCounter`."""
    def number(full_path, boxes, rel_path):
        return full_path, boxes, rel_path, counter.attempted.assign_add(1)

    def load(full_path, boxes, rel_path, seq):
        return decode_image(tf.io.read_file(full_path)), boxes, rel_path, seq

    def count(image, boxes, rel_path, seq):
        with tf.control_dependencies([counter.last.assign(seq), counter.decoded.assign_add(1)]):
            return tf.identity(image), boxes, rel_path

    return number, load, count


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


def load_examples(data_dir, split, *, training=True, shuffle_buffer=None, seed=None,
                  source="files", tfds_data_dir=None, skip_counter=None):
    """Decoded WIDER FACE examples `(image uint8 (H, W, 3), boxes (N, 4) px, path)`.

    Args:
        data_dir: root of the official layout (see module docstring).
        split: "train" or "val".
        training: shuffle (paths and boxes only, before decoding, so the whole file list is a
            cheap buffer).
        shuffle_buffer: default: the whole file list (TFDS: 1024).
        seed: of the shuffle (each epoch still differs).
        source: "files" (official layout under data_dir), "tfds" (`wider_face`, already
            prepared in `tfds_data_dir`; never downloads) or "auto" (files when the annotation
            file is found under data_dir, else TFDS).
        skip_counter: an optional `SkipCounter` that counts images skipped as undecodable.
    """
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
        number, load, count = _load(counter)
        ds = ds.map(number)  # sequential: numbers in stream order
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Undecodable images are dropped here, before the parser pairs examples with their
        # per-batch parameters, so batches stay aligned.
        return ds.ignore_errors(log_warning=True).map(count)
    if source == "tfds":
        ds, _ = _tfds_source(split, tfds_data_dir)
        if training:
            ds = ds.shuffle(shuffle_buffer or 1024, seed=seed, reshuffle_each_iteration=True)
        return ds
    raise ValueError(f"source must be 'files', 'tfds' or 'auto'. Received: source={source!r}")


def make_dataset(data_dir, split, *, batch_size, image_sizes=(512, 576, 640), flip=True,
                 training=True, target_fn=None, max_boxes=1000, shuffle_buffer=None, seed=None,
                 eval_size=None, source="files", tfds_data_dir=None, skip_counter=None,
                 policy=None, counter=None):
    """The batched WIDER FACE dataset: `load_examples` -> `detection.parse_examples`.

    Args: as `load_examples` and `detection.parse_examples` (`counter`: boxes dropped by the
        max_boxes cap or for having no area); `policy` is the augmentation policy (default: the
        seed's `augment.ResizeFlipPolicy(image_sizes, flip, eval_size)`).
    Returns: `(images (B, S, S, 3) float32 in [0, 1], labels)` batches (see
        `detection.parse_examples`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    policy = policy or augment.ResizeFlipPolicy(image_sizes, flip, eval_size)
    examples = load_examples(data_dir, split, training=training, shuffle_buffer=shuffle_buffer,
                             seed=seed, source=source, tfds_data_dir=tfds_data_dir,
                             skip_counter=skip_counter)
    return detection.parse_examples(examples, policy, batch_size=batch_size, training=training,
                                    target_fn=target_fn, max_boxes=max_boxes, seed=seed,
                                    counter=counter)

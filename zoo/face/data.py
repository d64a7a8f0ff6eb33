"""The face detector's data: which WIDER-format source a `DataConfig` names, and its datasets.

`dataset="synthetic"` generates the synthetic WIDER-format set (`pipelines.synthetic_faces`)
into `data_dir` (default: `<tmp>/handgrad_synthetic_faces_<seed>_<train>_<val>`) when it is not
there yet, so a fresh machine trains with no download; only into an absent or empty folder or
an unfinished set of its own (`pipelines.generated`): a folder of other files is refused.
`dataset="wider_geometry"` likewise generates the WIDER-geometry set
(`pipelines.wider_geometry`: real WIDER validation layouts, split by event) from the real ground
truth in `data.geometry_source`; its `ground_truth/` holds the real
`wider_{easy,medium,hard}_val.mat` restricted to its validation images, so AP easy / medium /
hard mean what they mean on WIDER. `dataset="wider"` reads the official layout under `data_dir`, or
TFDS' prepared `wider_face` when `data_dir` is None.

Training policy (`data.augment`): "seed" = `augment.ResizeFlipPolicy`, "crop_photometric" =
`augment.CropPhotometricPolicy`. Evaluation policy (`data.eval_mode`): "original" =
`augment.OriginalSizePolicy` (no resize, pad to the detector's largest stride, batch 1),
"resize" = the keep-aspect resize to `data.eval_size`.
"""

import logging
import math
import tempfile
from pathlib import Path

from handgrad.pipelines import (
    augment,
    detection,
    generated,
    synthetic_faces,
    wider_face,
    wider_geometry,
)

DATASETS = ("synthetic", "wider", "wider_geometry")
AUGMENTS = ("seed", "crop_photometric")
EVAL_MODES = ("original", "resize")


def _default_dir(name):
    return Path(tempfile.gettempdir()) / name


def _geometry_options(data):
    return {"seed": int(data.data_seed), "train_renders": int(data.train_renders),
            "max_images_per_split": data.max_layouts}


def resolve_geometry(data, data_dir):
    """The WIDER-geometry set of `data` in `data_dir`, generated there when absent or unfinished.

    A finished set made with other options is an error (nothing is overwritten); a non-empty
    folder that is not a generated set is refused by the generator.
    """
    options = _geometry_options(data)
    if data_dir is None:
        data_dir = _default_dir("handgrad_wider_geometry_{seed}_{train_renders}_"
                                "{max_images_per_split}".format(**options))
    data_dir = Path(data_dir)
    if generated.is_finished(wider_geometry.read_marker(data_dir), options, data_dir,
                             "WIDER-geometry"):
        return data_dir
    if data.geometry_source is None:
        raise ValueError("data.geometry_source must name the folder of the real "
                         "wider_face_val.mat and wider_{easy,medium,hard}_val.mat to generate "
                         f"the WIDER-geometry set into {data_dir}. Received: None")
    logging.info("Generating the WIDER-geometry set into %s", data_dir)
    wider_geometry.generate(data_dir, source=data.geometry_source, progress=False, **options)
    return data_dir


def resolve(data, data_dir):
    """(data_dir, source) for a `DataConfig`; generates the synthetic / WIDER-geometry set when
    it is absent."""
    if data.dataset == "wider":
        return (None, "tfds") if data_dir is None else (Path(data_dir), "files")
    if data.dataset == "wider_geometry":
        return resolve_geometry(data, data_dir), "files"
    if data.dataset != "synthetic":
        raise ValueError(f"data.dataset must be one of {DATASETS}. Received: {data.dataset!r}")
    return resolve_synthetic(data, data_dir), "files"


def resolve_synthetic(data, data_dir):
    """The synthetic set of `data` in `data_dir`, generated there when absent or unfinished.

    A finished set made with other options is an error (nothing is overwritten), as is a
    non-empty folder that is not a synthetic set (refused by the generator: a user's folder is
    never written into); a complete set from before the marker existed is used as it is.
    """
    options = synthetic_faces.generation_options(num_train=data.num_train,
                                                 num_val=data.num_val, seed=data.data_seed)
    if data_dir is None:
        data_dir = _default_dir(
            f"handgrad_synthetic_faces_{data.data_seed}_{data.num_train}_{data.num_val}")
    data_dir = Path(data_dir)
    marker = synthetic_faces.read_marker(data_dir)
    if generated.is_finished(marker, options, data_dir, "synthetic face"):
        return data_dir
    if marker is None and synthetic_faces.is_unmarked_set(data_dir):
        logging.info("Using the synthetic face set in %s (written before %s existed)", data_dir,
                     synthetic_faces.MARKER)
        return data_dir
    logging.info("Generating the synthetic face set into %s", data_dir)
    synthetic_faces.generate(data_dir, **options)
    return data_dir


def policy(data):
    """The training augmentation policy of a `DataConfig` (`data.augment`)."""
    if data.augment == "seed":
        return augment.ResizeFlipPolicy(data.image_sizes, data.flip, data.eval_size)
    if data.augment == "crop_photometric":
        return augment.CropPhotometricPolicy(
            image_sizes=data.image_sizes, flip=data.flip,
            crop_scales=(data.crop_min, data.crop_max), eval_size=data.eval_size)
    raise ValueError(f"data.augment must be one of {AUGMENTS}. Received: {data.augment!r}")


def eval_policy(data, multiple):
    """The evaluation policy of a `DataConfig` (`data.eval_mode`) and its batch size limit
    (1 for original sizes, None otherwise); `multiple`: the detector's largest stride."""
    if data.eval_mode == "original":
        return augment.OriginalSizePolicy(multiple), 1
    if data.eval_mode == "resize":
        return augment.ResizeFlipPolicy(data.image_sizes, False, data.eval_size), None
    raise ValueError(f"data.eval_mode must be one of {EVAL_MODES}. Received: {data.eval_mode!r}")


def eval_dataset(data, batch_size, data_dir, target_fn=None, multiple=64):
    """The validation split under `data.eval_mode` (labels carry paths, scales and original
    sizes), or its first `data.val_limit` images. Original sizes force batch 1."""
    data_dir, source = resolve(data, data_dir)
    eval_policy_, batch_limit = eval_policy(data, multiple)
    batch_size = min(batch_size, batch_limit or batch_size)
    ds = wider_face.make_dataset(data_dir, "val", batch_size=batch_size, training=False,
                                 target_fn=target_fn, max_boxes=data.max_boxes, source=source,
                                 policy=eval_policy_)
    if data.val_limit:
        ds = ds.take(math.ceil(data.val_limit / batch_size))
    return ds


class DataCounts:
    """What the training pipeline read and dropped, as epoch-log values (cumulative, counted as
    batches are produced, so prefetched ones are included): images skipped as undecodable,
    faces dropped by the crop (`augment.CropPhotometricPolicy`), by the `max_boxes` cap, and
    boxes left with no area by the resize. No face leaves the data unlogged."""

    def __init__(self):
        self.skipped = wider_face.SkipCounter()
        self.boxes = detection.FaceCounter("boxes", "dropped_empty", "dropped_by_cap")
        self.policy = None  # the training policy's own FaceCounter, where it has one

    def logs(self):
        """{"data_images", "data_images_skipped", "data_faces_dropped_by_cap",
        "data_faces_dropped_empty"[, "data_faces", "data_faces_dropped_by_crop"]}: ints."""
        boxes = self.boxes.counts()
        out = {"data_images": int(self.skipped.decoded.numpy()),
               "data_images_skipped": self.skipped.skipped_so_far,
               "data_faces_dropped_by_cap": boxes["dropped_by_cap"],
               "data_faces_dropped_empty": boxes["dropped_empty"]}
        if self.policy is not None:
            crops = self.policy.counts()
            out.update(data_faces=crops["faces"],
                       data_faces_dropped_by_crop=crops["dropped_by_crop"])
        return out


def datasets(config, data_dir, target_fn, counts=None):
    """(train, val) datasets of a `FaceConfig`; val labels keep only the loss targets (the val
    split is read at the training policy's evaluation size, so that its batches stack).
    `counts`: an optional `DataCounts` that the training pipeline counts into."""
    data, training = config.data, config.training
    resolved, source = resolve(data, data_dir)
    train_policy = policy(data)
    if counts is not None:
        counts.policy = getattr(train_policy, "counter", None)
    train = wider_face.make_dataset(resolved, "train", batch_size=training.batch_size,
                                    training=True, target_fn=target_fn,
                                    max_boxes=data.max_boxes, source=source,
                                    seed=training.seed, policy=train_policy,
                                    skip_counter=counts and counts.skipped,
                                    counter=counts and counts.boxes)
    if training.steps_per_epoch:
        train = train.repeat()  # epochs are steps_per_epoch batches, not passes
    val = wider_face.make_dataset(resolved, "val", batch_size=training.batch_size,
                                  training=False, target_fn=target_fn, max_boxes=data.max_boxes,
                                  source=source, policy=augment.ResizeFlipPolicy(
                                      data.image_sizes, False, data.eval_size))
    if data.val_limit:
        val = val.take(math.ceil(data.val_limit / training.batch_size))
    # the evaluation labels carry strings (image paths) that the loss does not use
    val = val.map(lambda x, y: (x, {k: y[k] for k in ("cls_targets", "box_targets")}))
    return train, val

"""The face detectors' data: where a `DataConfig`'s WIDER-format set is, and its datasets.

`resolve` is the one place that finds a data folder, or generates it:
- `dataset="wider"` reads the official layout under `data_dir`, or TFDS' prepared `wider_face`
  when `data_dir` is None;
- `dataset="synthetic"` is the synthetic WIDER-format set (`pipelines.generators.synthetic_faces`),
  default folder `<tmp>/handgrad_synthetic_faces_<seed>_<train>_<val>`;
- `dataset="wider_geometry"` is the WIDER-geometry set (`pipelines.generators.wider_geometry`: real
  WIDER validation layouts, split by event) from the real ground truth in `data.geometry_source`;
  its `ground_truth/` holds the real `wider_{easy,medium,hard}_val.mat` restricted to its
  validation images, so AP easy / medium / hard mean what they mean on WIDER.
A generated set is used when its marker says it is finished and made with the config's options
(a finished set of other options is an error); otherwise training generates it, into an absent
or empty folder or an unfinished set of its own only (a folder of other files is refused).
Evaluation never writes a data set: it asks with `generate=False` and gets an error naming the
folder and the command that makes it.

Training policy (`data.augment`): "seed" = `augment.ResizeFlipPolicy`, "crop_photometric" =
`augment.CropPhotometricPolicy`. Evaluation policy (`data.eval_mode`): "original" =
`augment.OriginalSizePolicy` (no resize, pad to the detector's largest stride, batch 1),
"resize" = the keep-aspect resize to `data.eval_size`.
"""

import logging
import math
import tempfile
from pathlib import Path

from handgrad.pipelines import augment, detection, wider_face
from handgrad.pipelines.generators import synthetic_faces, wider_geometry

DATASETS = ("synthetic", "wider", "wider_geometry")
AUGMENTS = ("seed", "crop_photometric")
EVAL_MODES = ("original", "resize")


def _generated_set(data):
    """(generator module, its options for `data`, default folder name, generate()'s other
    arguments) of a generated data set."""
    if data.dataset == "synthetic":
        options = synthetic_faces.generation_options(num_train=data.num_train,
                                                     num_val=data.num_val, seed=data.data_seed)
        name = f"handgrad_synthetic_faces_{data.data_seed}_{data.num_train}_{data.num_val}"
        return synthetic_faces, options, name, {}
    options = {"seed": int(data.data_seed), "train_renders": int(data.train_renders),
               "max_images_per_split": data.max_layouts}
    name = "handgrad_wider_geometry_{seed}_{train_renders}_{max_images_per_split}".format(**options)
    return wider_geometry, options, name, {"source": data.geometry_source, "progress": False}


def resolve(data, data_dir, generate=True):
    """(data_dir, source) of a `DataConfig`: source "tfds" or "files".

    A synthetic or WIDER-geometry set absent or unfinished in `data_dir` (default: a folder
    named after its options in the system's temporary folder) is generated there when
    `generate`, else FileNotFoundError (evaluation never writes a data set).
    """
    if data.dataset == "wider":
        return (None, "tfds") if data_dir is None else (Path(data_dir), "files")
    if data.dataset not in DATASETS:
        raise ValueError(f"data.dataset must be one of {DATASETS}. Received: {data.dataset!r}")
    generator, options, default_name, arguments = _generated_set(data)
    data_dir = Path(tempfile.gettempdir()) / default_name if data_dir is None else Path(data_dir)
    if generator.is_ready(data_dir, options):
        return data_dir, "files"
    if not generate:
        raise FileNotFoundError(
            f"data_dir={data_dir} holds no finished {generator.KIND} set made with {options}; "
            "evaluation never writes a data set: run handgrad-train with this config and "
            "data_dir first (it generates the set), or pass the data_dir that training used.")
    if data.dataset == "wider_geometry" and data.geometry_source is None:
        raise ValueError("data.geometry_source must name the folder of the real "
                         "wider_face_val.mat and wider_{easy,medium,hard}_val.mat to generate "
                         f"the WIDER-geometry set into {data_dir}. Received: None")
    logging.info("Generating the %s set into %s", generator.KIND, data_dir)
    generator.generate(data_dir, **options, **arguments)
    return data_dir, "files"


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
    data_dir, source = resolve(data, data_dir, generate=False)
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

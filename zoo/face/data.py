"""The face detector's data: which WIDER-format source a `DataConfig` names, and its datasets.

`dataset="synthetic"` generates the synthetic WIDER-format set (`pipelines.synthetic_faces`)
into `data_dir` (default: `<tmp>/handgrad_synthetic_faces_<seed>_<train>_<val>`) when it is not
there yet, so a fresh machine trains with no download. `dataset="wider"` reads the official
layout under `data_dir`, or TFDS' prepared `wider_face` when `data_dir` is None.
"""

import logging
import math
import tempfile
from pathlib import Path

from handgrad.pipelines import augment, synthetic_faces, wider_face

DATASETS = ("synthetic", "wider")


def resolve(data, data_dir):
    """(data_dir, source) for a `DataConfig`; generates the synthetic set when it is absent."""
    if data.dataset == "wider":
        return (None, "tfds") if data_dir is None else (Path(data_dir), "files")
    if data.dataset != "synthetic":
        raise ValueError(f"data.dataset must be one of {DATASETS}. Received: {data.dataset!r}")
    if data_dir is None:
        data_dir = Path(tempfile.gettempdir()) / (
            f"handgrad_synthetic_faces_{data.data_seed}_{data.num_train}_{data.num_val}")
    data_dir = Path(data_dir)
    marker = data_dir / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    if not marker.is_file():
        logging.info("Generating the synthetic face set into %s", data_dir)
        synthetic_faces.generate(data_dir, num_train=data.num_train, num_val=data.num_val,
                                 seed=data.data_seed)
    return data_dir, "files"


def policy(data):
    """The training augmentation policy of a `DataConfig`."""
    return augment.ResizeFlipPolicy(data.image_sizes, data.flip, data.eval_size)


def eval_dataset(data, batch_size, data_dir, target_fn=None):
    """The validation split at `data.eval_size` (labels carry paths and scales), or its first
    `data.val_limit` images."""
    data_dir, source = resolve(data, data_dir)
    ds = wider_face.make_dataset(data_dir, "val", batch_size=batch_size, training=False,
                                 target_fn=target_fn, max_boxes=data.max_boxes, source=source,
                                 policy=policy(data))
    if data.val_limit:
        ds = ds.take(math.ceil(data.val_limit / batch_size))
    return ds


def datasets(config, data_dir, target_fn):
    """(train, val) datasets of a `FaceConfig`; val labels keep only the loss targets."""
    data, training = config.data, config.training
    resolved, source = resolve(data, data_dir)
    train = wider_face.make_dataset(resolved, "train", batch_size=training.batch_size,
                                    training=True, target_fn=target_fn,
                                    max_boxes=data.max_boxes, source=source,
                                    seed=training.seed, policy=policy(data))
    if training.steps_per_epoch:
        train = train.repeat()  # epochs are steps_per_epoch batches, not passes
    val = eval_dataset(data, training.batch_size, data_dir, target_fn)
    # the evaluation labels carry strings (image paths) that the loss does not use
    val = val.map(lambda x, y: (x, {k: y[k] for k in ("cls_targets", "box_targets")}))
    return train, val

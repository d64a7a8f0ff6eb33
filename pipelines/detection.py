"""The generic detection example parser: decoded examples -> augment -> targets -> batches.

As TF Model Garden separates its decoder from its `Parser`, the sources (`wider_face`: official
files or TFDS; the synthetic and WIDER-geometry sets are official files too) only produce
examples `(image uint8 (H, W, 3), boxes (N, 4) float32 px [ymin, xmin, ymax, xmax], path)`, and
this module turns any such dataset into model batches:

    (image, boxes, path)  --policy-->  (image (S, S, 3) in [0, 1], boxes px of S)
        --drop empty boxes, pad to max_boxes-->  --target_fn-->  labels  --batch-->

The augmentation policy (`pipelines.augment`) draws per-example parameters from its own random
stream (training) or uses fixed evaluation parameters; `target_fn` (the detector's
`Anchors.encode`) runs per example in a parallel map.

No face is lost silently: boxes beyond `max_boxes` are logged (a warning naming the image) and,
like boxes left with no area by the policy, counted in an optional `FaceCounter`; policies that
drop faces (the crop of `augment.CropPhotometricPolicy`) count them in their own.
"""

import tensorflow as tf
from absl import logging


class FaceCounter:
    """Named int64 counts (`tf.Variable`s) that `tf.data` maps add to, e.g. faces dropped.

    Exact once the dataset has been iterated to the end; elements in flight (prefetched) are
    counted when they are produced.
    """

    def __init__(self, *names):
        self.variables = {n: tf.Variable(0, dtype=tf.int64, trainable=False) for n in names}

    def add(self, **counts):
        """Adds each `name=value` (scalar int or bool tensors) to its count."""
        for name, value in counts.items():
            self.variables[name].assign_add(tf.cast(value, tf.int64))

    def counts(self):
        """{name: int}."""
        return {name: int(v.numpy()) for name, v in self.variables.items()}

    def log(self, what):
        """Logs the counts at INFO level, prefixed by `what`."""
        logging.info("%s: %s", what, ", ".join(f"{k} {v}" for k, v in self.counts().items()))


def pad_boxes(boxes, max_boxes):
    """Pads (N, 4) boxes with rows of -1 to (max_boxes, 4); keeps the first max_boxes.

    Returns (padded boxes, number of real rows).
    """
    boxes = boxes[:max_boxes]
    num = tf.shape(boxes)[0]
    padded = tf.pad(boxes, [[0, max_boxes - num], [0, 0]], constant_values=-1.0)
    padded.set_shape([max_boxes, 4])
    return padded, num


def parse_examples(examples, policy, *, batch_size, training, target_fn=None, max_boxes=1000,
                   seed=None, counter=None):
    """Batches of `(images (B, S, S, 3) float32 in [0, 1], labels)` from decoded examples.

    Args:
        examples: a dataset of `(image uint8 (H, W, 3), boxes (N, 4) px, path)`.
        policy: the augmentation policy (e.g. `augment.ResizeFlipPolicy`): `random_params`,
            `eval_params` and `policy(image, boxes, params) -> (image, boxes, scale)`.
        batch_size: images per batch. training: random parameters, or evaluation ones.
        target_fn: optional `f(image (S, S, 3), boxes (max_boxes, 4), num_boxes ()) -> dict`;
            `boxes` are padded with -1 rows.
        max_boxes: boxes per image after padding; images with more keep their first max_boxes
            (and a warning names the image and the number of boxes dropped).
        seed: of the policy's random stream.
        counter: an optional `FaceCounter("boxes", "dropped_empty", "dropped_by_cap")` that
            counts the boxes the policy returned, those dropped for having no area, and those
            beyond max_boxes.
    Returns: the batched dataset. Labels are the dict `target_fn` returns, or {"boxes",
        "num_boxes"} without it; in evaluation mode they also hold "image_path" (B,),
        "scale" (B, 2) `[sy, sx]` (original pixel = model pixel / scale) and "original_size"
        (B, 2) `[H, W]`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    params = policy.random_params(batch_size, seed) if training else policy.eval_params()

    def parse(example, example_params):
        image, boxes, path = example
        original_size = tf.shape(image)[:2]
        image, boxes, scale = policy(image, boxes, example_params)
        # Clipping can leave boxes that lie outside the image with no area: drop them.
        keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
        boxes = tf.boolean_mask(boxes, keep)
        over = tf.maximum(tf.shape(boxes)[0] - max_boxes, 0)
        if tf.greater(over, 0):
            tf.print("WARNING: detection.parse_examples: max_boxes =", max_boxes, "drops", over,
                     "faces of", path, output_stream=logging.warning, end="")
        if counter is not None:
            counter.add(boxes=tf.size(keep), dropped_empty=tf.size(keep) - tf.shape(boxes)[0],
                        dropped_by_cap=over)
        boxes, num_boxes = pad_boxes(boxes, max_boxes)
        if target_fn is not None:
            labels = dict(target_fn(image, boxes, num_boxes))
        else:
            labels = {"boxes": boxes, "num_boxes": num_boxes}
        if not training:
            labels.update(image_path=path, scale=scale, original_size=original_size)
        return image, labels

    ds = tf.data.Dataset.zip((examples, params))
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE)

"""Box primitives, the one module of them: areas, pairwise IoU, clipping to an image, the
horizontal mirror, and the WIDER `x y w h` <-> `[ymin, xmin, ymax, xmax]` conversions.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels everywhere inside the package (TF Model Garden
convention); a box covers the continuous region `ymin <= y < ymax`, `xmin <= x < xmax`, so an
image of width W spans `x` in `[0, W]`. WIDER FACE writes `x y w h` (`w = xmax - xmin`,
`h = ymax - ymin`): converted once when read, back once when written. The TensorFlow functions run
eagerly and inside `tf.data` maps; the conversions are NumPy (files are read outside the graph).

IoU (seed eq. 58): |A n B| / |A u B|.
"""

import numpy as np
import tensorflow as tf

__all__ = ["area", "clip_boxes", "flip_boxes_left_right", "iou", "xywh_to_yxyx", "yxyx_to_xywh"]


def area(boxes):
    """Areas of `(..., 4)` boxes: `(...,)`."""
    return (tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
            * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0))


def iou(boxes_a, boxes_b):
    """Pairwise IoU (eq. 58) of `(N, 4)` and `(M, 4)` boxes: `(N, M)`; 0 where a union is 0."""
    a = boxes_a[:, None, :]  # (N, 1, 4)
    b = boxes_b[None, :, :]  # (1, M, 4)
    h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = h * w  # (N, M)
    union = area(a) + area(b) - inter  # (N, M)
    return tf.math.divide_no_nan(inter, union)


def clip_boxes(boxes, height, width):
    """Clips `(..., 4)` `[ymin, xmin, ymax, xmax]` boxes to the image `[0, height] x [0, width]`."""
    boxes = tf.convert_to_tensor(boxes)
    lo = tf.zeros([4], boxes.dtype)
    hi = tf.cast(tf.stack([height, width, height, width]), boxes.dtype)
    return tf.minimum(tf.maximum(boxes, lo), hi)


def flip_boxes_left_right(boxes, width):
    """Mirrors `[ymin, xmin, ymax, xmax]` boxes in an image of `width` pixels: x -> width - x.

    The new xmin is `width - xmax` and the new xmax is `width - xmin`, so flipping twice gives the
    original boxes back.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    width = tf.cast(width, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)  # (N, 4)


def yxyx_to_xywh(boxes):
    """(N, 4) `[ymin, xmin, ymax, xmax]` -> (N, 4) `[x, y, w, h]`."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1], b[:, 0], b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], axis=1)


def xywh_to_yxyx(boxes):
    """(N, 4) `[x, y, w, h]` -> (N, 4) `[ymin, xmin, ymax, xmax]`."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1], b[:, 0], b[:, 1] + b[:, 3], b[:, 0] + b[:, 2]], axis=1)

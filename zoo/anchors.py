"""Anchor boxes for the face detector's feature pyramid P3-P6 (seed section 3.5.2).

Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input (TF Model Garden convention),
everywhere in this file.

The seed spreads anchor areas from 14^2 to 220^2 px over the pyramid levels P3-P6 (RetinaNet:
32^2 .. 512^2 over P3-P7). Here the `num_levels * scales_per_level` anchor sizes (square roots of
the areas) are spaced geometrically from `min_size` to `max_size`:

    size_i = min_size * (max_size / min_size)^(i / (L S - 1)),   i = 0 .. L S - 1

and level k (stride 2^(k+3)) takes sizes i = k S .. k S + S - 1. With the defaults (14, 220, 4
levels, 3 scales) the ratio between consecutive sizes is 1.284 (~2^(1/3), RetinaNet's octave
scales) and level P3 holds 14.0, 18.0, 23.1 px; P6 holds 132.2, 169.7, 220.0 px.

Each size s and aspect ratio r = height / width gives an anchor of height s sqrt(r) and width
s / sqrt(r) (area s^2; faces are slightly taller than wide, so r = 1.25 is a sensible second
ratio). Anchor centres sit at the centre of each feature-map cell, ((y + 0.5) stride,
(x + 0.5) stride), as in Model Garden's `anchor.py`.

Order, which the detector heads follow when they flatten their outputs: level, then row y, then
column x, then anchor (sizes outer, ratios inner): index = offset_k + (y W_k + x) A + a.
Feature-map sizes are ceil(side / stride), what "same"-padded stride-2 convolutions give.
"""

import math

import numpy as np
import tensorflow as tf

DEFAULT_STRIDES = (8, 16, 32, 64)


def anchor_sizes(min_size=14.0, max_size=220.0, num_levels=4, scales_per_level=3):
    """Anchor side lengths per level, geometrically spaced from `min_size` to `max_size`.

    Returns: a list of `num_levels` tuples of `scales_per_level` floats (pixels).
    """
    if not 0 < min_size <= max_size:
        raise ValueError(f"Expected 0 < min_size <= max_size. Received: min_size={min_size}, "
                         f"max_size={max_size}")
    if num_levels < 1 or scales_per_level < 1:
        raise ValueError(f"Expected num_levels >= 1 and scales_per_level >= 1. Received: "
                         f"num_levels={num_levels}, scales_per_level={scales_per_level}")
    n = num_levels * scales_per_level
    sizes = [min_size * (max_size / min_size) ** (i / max(n - 1, 1)) for i in range(n)]
    return [tuple(sizes[k * scales_per_level:(k + 1) * scales_per_level])
            for k in range(num_levels)]


def cell_anchor_shapes(sizes, aspect_ratios):
    """(height, width) of the anchors of one cell: sizes outer, ratios inner. Returns (A, 2)."""
    shapes = [(s * math.sqrt(r), s / math.sqrt(r)) for s in sizes for r in aspect_ratios]
    return np.asarray(shapes, np.float32)  # (A, 2)


def _height_width(image_size):
    """`image_size` (a side, or a (height, width) pair) -> (height, width)."""
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width). "
                             f"Received: image_size={image_size}")
        return tuple(image_size)
    image_size = tf.convert_to_tensor(image_size, tf.int32)
    if image_size.shape.rank == 0:
        return image_size, image_size
    return image_size[0], image_size[1]


def feature_sizes(image_size, strides=DEFAULT_STRIDES):
    """(H_k, W_k) per level: ceil(side / stride). Python ints in, ints out; tensors work too.

    `image_size`: a side (square input), or a (height, width) pair.
    """
    h, w = _height_width(image_size)
    return [((h + s - 1) // s, (w + s - 1) // s) for s in strides]


def anchors_per_level(image_size, sizes_per_level, aspect_ratios, strides=DEFAULT_STRIDES):
    """Number of anchors on each level, H_k W_k A (ints, or scalar tensors for tensor sizes)."""
    per_cell = [len(sizes) * len(aspect_ratios) for sizes in sizes_per_level]
    return [h * w * a for (h, w), a in zip(feature_sizes(image_size, strides), per_cell,
                                           strict=True)]


def level_anchors(feature_h, feature_w, stride, sizes, aspect_ratios):
    """Anchors of one level, `(H W A, 4)` float32, `[ymin, xmin, ymax, xmax]` pixels.

    `feature_h`, `feature_w` may be python ints or scalar int tensors (dynamic image sizes).
    """
    shapes = tf.constant(cell_anchor_shapes(sizes, aspect_ratios))  # (A, 2)
    cy = (tf.cast(tf.range(feature_h), tf.float32) + 0.5) * stride  # (H,)
    cx = (tf.cast(tf.range(feature_w), tf.float32) + 0.5) * stride  # (W,)
    cy, cx = tf.meshgrid(cy, cx, indexing="ij")  # (H, W), (H, W)
    centers = tf.stack([cy, cx], axis=-1)[:, :, None, :]  # (H, W, 1, 2)
    half = shapes[None, None, :, :] / 2.0  # (1, 1, A, 2)
    boxes = tf.concat([centers - half, centers + half], axis=-1)  # (H, W, A, 4)
    return tf.reshape(boxes, [-1, 4])  # (H*W*A, 4)


def generate_anchors(image_size, sizes_per_level=None, aspect_ratios=(1.0,),
                     strides=DEFAULT_STRIDES):
    """All anchors of an input image, levels concatenated: `(A_total, 4)` float32.

    Args:
        image_size: side of a square model input in pixels, or a (height, width) pair; python
            ints or int tensors.
        sizes_per_level: one tuple of anchor sizes per level (default: `anchor_sizes()`).
        aspect_ratios: height / width ratios, shared by every level.
        strides: the pyramid strides (P3-P6: 8, 16, 32, 64).
    Returns: `(A_total, 4)` float32 `[ymin, xmin, ymax, xmax]` pixels, in the heads' order.
    """
    if sizes_per_level is None:
        sizes_per_level = anchor_sizes(num_levels=len(strides))
    if len(sizes_per_level) != len(strides):
        raise ValueError(f"Expected one tuple of sizes per stride. Received: "
                         f"{len(sizes_per_level)} tuples for strides={strides}")
    levels = [level_anchors(h, w, s, sizes, aspect_ratios)
              for (h, w), s, sizes in zip(feature_sizes(image_size, strides), strides,
                                          sizes_per_level, strict=True)]
    return tf.concat(levels, axis=0)  # (A_total, 4)


def level_ids(image_size, sizes_per_level, aspect_ratios, strides=DEFAULT_STRIDES):
    """Pyramid level index (0 = P3) of every anchor: `(A_total,)` int32, for eq. 61 per level."""
    counts = anchors_per_level(image_size, sizes_per_level, aspect_ratios, strides)
    return tf.repeat(tf.range(len(strides), dtype=tf.int32), tf.stack(counts))  # (A_total,)

"""Anchor boxes for the face detector's feature pyramid (seed section 3.5.2: P3-P6), and `Anchors`,
the one object that owns the anchor sizes, the strides (= the pyramid levels), the level ids and
the target encoding.

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

from handgrad.zoo.face import box_coder as box_ops

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


class Anchors:
    """The detector's anchors: sizes, strides, counts, level ids and target encoding in one place.

    Built from an `AnchorConfig` (`Anchors(**dataclasses.asdict(config.anchors))`). The pyramid,
    the heads, the loss, the post-processing and the input pipeline all read the levels from
    here: stride 2^k is pyramid level P_k, so `strides=(4, 8, 16, 32, 64)` adds a P2 level.

    Args:
        min_size, max_size, scales_per_level: anchor sizes (`anchor_sizes`), px.
        aspect_ratios: height / width ratios shared by every level.
        strides: one per pyramid level, powers of two, increasing by 2x (8, 16, 32, 64).
        variances: of the box encoding (`boxes.encode_boxes`).
        positive_iou, negative_iou: matching thresholds (`boxes.match_anchors`).
    """

    def __init__(self, min_size=14.0, max_size=220.0, scales_per_level=3, aspect_ratios=(1.0,),
                 strides=DEFAULT_STRIDES, variances=box_ops.DEFAULT_VARIANCES, positive_iou=0.5,
                 negative_iou=0.4):
        strides = tuple(int(s) for s in strides)
        levels = [int(round(math.log2(s))) for s in strides]
        if (not strides or any(2**k != s for k, s in zip(levels, strides, strict=True))
                or any(b != a + 1 for a, b in zip(levels, levels[1:]))):
            raise ValueError(f"strides must be consecutive powers of two, e.g. (8, 16, 32, 64). "
                             f"Received: strides={strides}")
        if not negative_iou <= positive_iou:
            raise ValueError(f"Expected negative_iou <= positive_iou. Received: "
                             f"negative_iou={negative_iou}, positive_iou={positive_iou}")
        self.strides = strides
        self.levels = tuple(levels)  # pyramid levels k of P_k, e.g. (3, 4, 5, 6)
        self.sizes_per_level = anchor_sizes(min_size, max_size, len(strides), scales_per_level)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.variances = tuple(float(v) for v in variances)
        self.positive_iou, self.negative_iou = positive_iou, negative_iou
        self.num_per_cell = scales_per_level * len(self.aspect_ratios)

    def generate(self, image_hw):
        """`(A, 4)` anchors px for an input of (height, width) (ints or int tensors)."""
        return generate_anchors(image_hw, self.sizes_per_level, self.aspect_ratios, self.strides)

    def counts(self, image_hw):
        """Anchors on each level, H_k W_k A."""
        return anchors_per_level(image_hw, self.sizes_per_level, self.aspect_ratios, self.strides)

    def level_ids(self, image_hw):
        """`(A,)` int32 level index (0 = the finest level) of every anchor."""
        return level_ids(image_hw, self.sizes_per_level, self.aspect_ratios, self.strides)

    def encode(self, image, boxes, num_boxes):
        """Targets of one example, for tf.data (the detection parser's `target_fn`).

        Args: image `(H, W, 3)`; boxes `(M, 4)` px of the model input, padded; num_boxes ().
        Returns: {"cls_targets": `(A,)` 1 face / 0 background / -1 ignored, "box_targets":
            `(A, 4)`} (`boxes.encode_targets`), with the anchors of the image's own size.
        """
        anchors = self.generate(tf.shape(image)[0:2])
        return box_ops.encode_targets(boxes, num_boxes, anchors, self.variances,
                                      self.positive_iou, self.negative_iou)

    def decode(self, deltas, anchors):
        """Encoded `(..., 4)` deltas -> boxes px (`boxes.decode_boxes`)."""
        return box_ops.decode_boxes(deltas, anchors, self.variances)

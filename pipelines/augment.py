"""Image + box geometry for the face pipeline: keep-aspect resize, horizontal flip, square padding.

Every function takes one image (H, W, C) and its boxes (N, 4) and returns both transformed
together, so a box always describes the same pixels before and after. Boxes are
`[ymin, xmin, ymax, xmax]` in pixels of the image they come with (the package
convention); a box covers the continuous region `ymin <= y < ymax`, `xmin <= x < xmax`, so an
image of width W spans `x` in `[0, W]` and a box whose `xmax == W` touches the right border.

The seed's augmentation (SEED_NOTES, application 2) is: resize to 512^2, 576^2 or 640^2 and flip
horizontally with p = 0.5. A plain resize to a square would squash faces, so the image is resized
keeping its aspect ratio until its longer side equals the target size, then padded with zeros at
the bottom and the right to the square (`resize_and_pad`). Padding at the bottom/right leaves the
origin in place, so boxes need no shift and `box / scale` maps predictions back to the original.

All functions are plain TensorFlow ops and work eagerly and inside `tf.data` maps.
"""

import tensorflow as tf

__all__ = ["clip_boxes", "flip_boxes_left_right", "flip_left_right", "keep_aspect_size",
           "pad_to_square", "resize_and_pad", "resize_keep_aspect"]


def clip_boxes(boxes, height, width):
    """Clips `(..., 4)` `[ymin, xmin, ymax, xmax]` boxes to the image `[0, height] x [0, width]`.

    The one box clipper of the package: the detector's post-processing uses it too.
    """
    boxes = tf.convert_to_tensor(boxes)
    lo = tf.zeros([4], boxes.dtype)
    hi = tf.cast(tf.stack([height, width, height, width]), boxes.dtype)
    return tf.minimum(tf.maximum(boxes, lo), hi)


def keep_aspect_size(height, width, size):
    """Returns the `(new_height, new_width)` int32 of an image resized so its longer side is `size`.

    Args:
        height, width: scalar int tensors, the original image size (both >= 1).
        size: scalar int, the target length of the longer side.

    The shorter side is rounded to the nearest integer and kept >= 1.
    """
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    scale = tf.cast(size, tf.float32) / tf.maximum(height, width)
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), 1)
    return new_h, new_w


def resize_keep_aspect(image, boxes, size, method="bilinear"):
    """Resizes `image` so its longer side is `size`, keeping the aspect ratio; scales the boxes.

    Args:
        image: (H, W, C) tensor, any dtype; returned as float32.
        boxes: (N, 4) float32 `[ymin, xmin, ymax, xmax]` in pixels of `image`.
        size: scalar int, the target length of the longer side.
        method: a `tf.image.ResizeMethod` name.

    Returns:
        image: (h', w', C) float32 with `max(h', w') == size`.
        boxes: (N, 4) float32 in pixels of the resized image.
        scale: (2,) float32 `[h'/H, w'/W]`; the two differ slightly because h', w' are rounded,
            and using each axis' own factor keeps the box on the same pixels exactly.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    new_h, new_w = keep_aspect_size(height, width, size)
    image = tf.image.resize(image, tf.stack([new_h, new_w]), method=method)  # (h', w', C)
    scale = tf.stack(
        [
            tf.cast(new_h, tf.float32) / tf.cast(height, tf.float32),
            tf.cast(new_w, tf.float32) / tf.cast(width, tf.float32),
        ]
    )  # (2,)
    boxes = tf.convert_to_tensor(boxes, tf.float32) * tf.tile(scale, [2])[tf.newaxis, :]  # (N, 4)
    return image, boxes, scale


def flip_boxes_left_right(boxes, width):
    """Mirrors `[ymin, xmin, ymax, xmax]` boxes in an image of `width` pixels: x -> width - x.

    The new xmin is `width - xmax` and the new xmax is `width - xmin`, so flipping twice gives the
    original boxes back.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    width = tf.cast(width, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)  # (N, 4)


def flip_left_right(image, boxes):
    """Flips `image` (H, W, C) horizontally and its boxes (N, 4) with it."""
    width = tf.shape(image)[1]
    return tf.image.flip_left_right(image), flip_boxes_left_right(boxes, width)


def pad_to_square(image, size):
    """Pads `image` (h, w, C) with zeros at the bottom and right to (size, size, C).

    Boxes are unchanged by this padding (the origin stays at the top-left corner).
    """
    return tf.image.pad_to_bounding_box(image, 0, 0, size, size)


def resize_and_pad(image, boxes, size, flip=False):
    """The full per-example geometry: keep-aspect resize to `size`, optional flip, square pad.

    Args:
        image: (H, W, C) tensor, uint8 in [0, 255] or float in [0, 1].
        boxes: (N, 4) float32 `[ymin, xmin, ymax, xmax]` in pixels of `image`.
        size: scalar int, the side of the square output.
        flip: scalar bool (Python or tensor); flip the resized image before padding.

    Returns:
        image: (size, size, C) float32 in the input's value range (uint8 input is scaled to
            [0, 1]), the resized image in the top-left corner, zeros elsewhere.
        boxes: (N, 4) float32 in pixels of the output, clipped to the resized image.
        scale: (2,) float32 `[sy, sx]`; original pixel = output pixel / scale (before a flip).
    """
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    image, boxes, scale = resize_keep_aspect(image, boxes, size)
    # Bilinear interpolation can overshoot by float round-off; the model expects [0, 1].
    image = tf.clip_by_value(image, 0.0, 1.0)
    shape = tf.shape(image)
    boxes = clip_boxes(boxes, shape[0], shape[1])
    image, boxes = tf.cond(
        tf.convert_to_tensor(flip, tf.bool),
        lambda: flip_left_right(image, boxes),
        lambda: (image, boxes),
    )
    return pad_to_square(image, size), boxes, scale


class ResizeFlipPolicy:
    """The seed's training augmentation: one random size per batch, keep-aspect resize + pad to
    that square, horizontal flip with p = 0.5 (SEED_NOTES, application 2).

    Args:
        image_sizes: square sizes to draw from, one per batch (seed: 512 / 576 / 640).
        flip: flip each training image with p = 0.5.
        eval_size: the single size of evaluation (default: max(image_sizes)), never flipped.
    """

    def __init__(self, image_sizes=(512, 576, 640), flip=True, eval_size=None):
        if not image_sizes:
            raise ValueError("image_sizes must hold at least one size. Received: ()")
        self.image_sizes = tuple(int(s) for s in image_sizes)
        self.flip = bool(flip)
        self.eval_size = int(eval_size or max(self.image_sizes))

    def random_params(self, batch_size, seed=None):
        """An endless dataset of per-example parameters `(size, flip)` for training.

        A stream of random size indices, each repeated `batch_size` times, so the `batch_size`
        consecutive examples that form one batch share one size while resizing still runs in a
        parallel map.
        """
        sizes = tf.constant(self.image_sizes, tf.int32)
        size_ids = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(r % len(self.image_sizes), tf.int32))
        size_ids = size_ids.flat_map(lambda s: tf.data.Dataset.from_tensors(s).repeat(batch_size))
        flip_seed = None if seed is None else seed + 1
        flips = tf.data.Dataset.random(seed=flip_seed, rerandomize_each_iteration=True).map(
            lambda r: tf.logical_and(tf.constant(self.flip), r % 2 == 1))
        return tf.data.Dataset.zip((size_ids.map(lambda i: sizes[i]), flips))

    def eval_params(self):
        """An endless dataset of the evaluation parameters `(eval_size, False)`."""
        return tf.data.Dataset.from_tensors((tf.constant(self.eval_size, tf.int32),
                                             tf.constant(False))).repeat()

    def __call__(self, image, boxes, params):
        """image uint8 (H, W, 3), boxes (N, 4) px, params -> (image (S, S, 3) in [0, 1],
        boxes (N, 4) px of the output, scale [sy, sx])."""
        size, do_flip = params
        return resize_and_pad(image, boxes, size, flip=do_flip)


class OriginalSizePolicy:
    """Evaluation at original resolution: the image is never resized, only padded with zeros at
    the bottom and right to the next multiples of `multiple` (the detector's largest stride), so
    `scale` is 1 and boxes come back in original pixels unchanged. Sizes differ between images:
    batch 1 (or images of one size).

    Args:
        multiple: the side multiple the detector needs (`FaceDetector.input_multiple`).
    """

    def __init__(self, multiple=64):
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1. Received: multiple={multiple}")
        self.multiple = int(multiple)

    def random_params(self, batch_size, seed=None):
        raise NotImplementedError("OriginalSizePolicy is an evaluation policy: training=False.")

    def eval_params(self):
        """An endless dataset of the (unused) evaluation parameter."""
        return tf.data.Dataset.from_tensors(tf.constant(0, tf.int32)).repeat()

    def __call__(self, image, boxes, params):
        """image uint8 (H, W, 3), boxes (N, 4) px -> (image (H', W', 3) in [0, 1] with H', W'
        the multiples of `multiple` >= H, W; boxes unchanged; scale [1, 1])."""
        del params
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        shape = tf.shape(image)
        m = self.multiple
        padded_h = (shape[0] + m - 1) // m * m
        padded_w = (shape[1] + m - 1) // m * m
        image = tf.image.pad_to_bounding_box(image, 0, 0, padded_h, padded_w)
        boxes = clip_boxes(tf.convert_to_tensor(boxes, tf.float32), shape[0], shape[1])
        return image, boxes, tf.ones([2], tf.float32)

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

RetinaFace's recipe (issue 12) is `CropPhotometricPolicy`: a random square crop of 0.3-1.0 of the
short side (faces whose centre leaves it are dropped, and counted), photometric distortion
(brightness, contrast, saturation, hue, as RetinaFace's `_distort`), resize to the training size,
flip.

All functions are plain TensorFlow ops and work eagerly and inside `tf.data` maps.
"""

import tensorflow as tf

from handgrad.pipelines import detection
from handgrad.pipelines.boxes import clip_boxes, flip_boxes_left_right

__all__ = ["CropPhotometricPolicy", "ResizeFlipPolicy", "choose_crop", "crop",
           "flip_left_right", "keep_aspect_size", "pad_to_square",
           "photometric", "resize_and_pad", "resize_keep_aspect"]


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


def crop(image, boxes, offset_yx, side):
    """Cuts the square `[y0, y0 + side) x [x0, x0 + side)` out of `image`; keeps the faces whose
    centre lies strictly inside it (RetinaFace's rule), moved into the crop and clipped to it.

    Args: image (H, W, C), the square inside it; boxes (N, 4) float32 px of `image`;
        offset_yx (2,) int `[y0, x0]`, the crop's top-left corner; side, a scalar int.
    Returns: image (side, side, C), same dtype; boxes (K, 4) float32 px of the crop; keep (N,)
        bool, which input faces are in `boxes` (in their input order).
    """
    y0, x0 = offset_yx[0], offset_yx[1]
    image = tf.convert_to_tensor(image)[y0:y0 + side, x0:x0 + side]  # (side, side, C)
    origin = tf.cast(tf.stack([y0, x0, y0, x0]), tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32) - origin  # (N, 4) px of the crop
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # (N, 2)
    keep = tf.reduce_all((centre > 0.0) & (centre < tf.cast(side, tf.float32)), axis=1)  # (N,)
    return image, clip_boxes(tf.boolean_mask(boxes, keep), side, side), keep


def choose_crop(boxes, height, width, scales, offsets):
    """The first of T candidate square crops that holds at least one whole face (RetinaFace
    retries until one does); any candidate when there are no faces.

    Args:
        boxes: (N, 4) px. height, width: of the image (scalar ints).
        scales: (T,) side / short side, in (0, 1]. offsets: (T, 2) in [0, 1): where the crop
            sits in the free range [0, H - side] x [0, W - side].
    Returns: offset_yx (2,) int32, side () int32, found () bool (False: no candidate holds a
        whole face; the caller then does not crop).
    """
    short = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(tf.floor(scales * short), tf.int32), 1)  # (T,)
    free = tf.stack([height - side, width - side], axis=1)  # (T, 2)
    offset = tf.minimum(tf.cast(tf.floor(offsets * tf.cast(free + 1, tf.float32)), tf.int32),
                        free)  # (T, 2)
    lo = tf.cast(offset, tf.float32)[:, None, :]  # (T, 1, 2)
    hi = lo + tf.cast(side, tf.float32)[:, None, None]  # (T, 1, 2)
    inside = tf.reduce_all((boxes[None, :, :2] >= lo) & (boxes[None, :, 2:] <= hi), axis=2)
    holds = tf.logical_or(tf.reduce_any(inside, axis=1), tf.shape(boxes)[0] == 0)  # (T,)
    first = tf.argmax(tf.cast(holds, tf.int32), output_type=tf.int32)
    return offset[first], side[first], holds[first]


_IDENTITY = dict(brightness=0.0, contrast=1.0, saturation=1.0, hue=0.0)
_RANGES = dict(brightness=(-32 / 255, 32 / 255), contrast=(0.5, 1.5), saturation=(0.5, 1.5),
               hue=(-0.1, 0.1))  # RetinaFace's `_distort`: +-32 of 255, hue +-18 of 180


def photometric(image, brightness=0.0, contrast=1.0, saturation=1.0, hue=0.0,
                contrast_first=True):
    """RetinaFace / SSD's `_distort` on a float RGB image in [0, 1], each step clipped to [0, 1]:
    + brightness; x contrast (before the HSV steps, or after them when not `contrast_first`);
    HSV saturation x saturation (clipped to 1); hue + hue (turns, mod 1). Identity values
    (0, 1, 1, 0) skip a step.
    """
    def scale(x):
        return tf.cond(contrast != 1.0, lambda: tf.clip_by_value(x * contrast, 0.0, 1.0),
                       lambda: x)

    image = tf.convert_to_tensor(image, tf.float32)
    brightness, contrast, saturation, hue = (tf.convert_to_tensor(v, tf.float32) for v in (
        brightness, contrast, saturation, hue))
    contrast_first = tf.convert_to_tensor(contrast_first, tf.bool)
    image = tf.cond(brightness != 0.0, lambda: tf.clip_by_value(image + brightness, 0.0, 1.0),
                    lambda: image)
    image = tf.cond(contrast_first, lambda: scale(image), lambda: image)
    # TF's fused HSV kernels: 2x faster at 640^2 than the same formulas in vectorised ops
    image = tf.cond(saturation != 1.0, lambda: tf.clip_by_value(
        tf.image.adjust_saturation(image, saturation), 0.0, 1.0), lambda: image)
    image = tf.cond(hue != 0.0, lambda: tf.clip_by_value(tf.image.adjust_hue(image, hue), 0.0, 1.0),
                    lambda: image)
    return tf.cond(contrast_first, lambda: image, lambda: scale(image))


class CropPhotometricPolicy:
    """RetinaFace's training augmentation: a random square crop of `crop_scales` (min, max) of
    the short side (`crop`: faces whose centre leaves it are dropped), `photometric` distortion,
    resize to the batch's size of `image_sizes` (one per batch, as `ResizeFlipPolicy`; RetinaFace:
    640), horizontal flip with p = 0.5. Evaluation: `resize_and_pad` to `eval_size` (default:
    max(image_sizes)), no crop, distortion or flip, as `ResizeFlipPolicy`.

    Each example draws `crop_tries` candidate crops and uses the first that holds a whole face
    (`choose_crop`); when none does, it is resized and padded, as RetinaFace pads it to a square.
    Each photometric step has p = 0.5 and RetinaFace's ranges (`_RANGES`); contrast comes before
    or after the HSV steps with p = 0.5.

    `counter` (a `detection.FaceCounter`) counts "images", "faces" (given to the policy),
    "dropped_by_crop" and "uncropped" (no candidate held a whole face); `counter.log(what)`.
    """

    def __init__(self, image_sizes=(640,), crop_scales=(0.3, 1.0), flip=True, photometric=True,
                 eval_size=None, crop_tries=32):
        if not (image_sizes and len(crop_scales) == 2
                and 0.0 < crop_scales[0] <= crop_scales[1] <= 1.0):
            raise ValueError(f"Expected image_sizes with >= 1 size and crop_scales (min, max) "
                             f"with 0 < min <= max <= 1. Received: image_sizes={image_sizes}, "
                             f"crop_scales={crop_scales}")
        if crop_tries < 1:
            raise ValueError(f"crop_tries must be >= 1. Received: crop_tries={crop_tries}")
        self.image_sizes = tuple(int(s) for s in image_sizes)
        self.eval_size = int(eval_size or max(self.image_sizes))
        self.crop_scales, self.crop_tries = tuple(crop_scales), int(crop_tries)
        self.flip, self.photometric = bool(flip), bool(photometric)
        self.counter = detection.FaceCounter("images", "faces", "dropped_by_crop", "uncropped")

    def _draw(self, size, seed):
        """The parameters of one example of `size` from one stateless seed (2,)."""
        n, (lo, hi) = self.crop_tries, self.crop_scales
        u = tf.random.stateless_uniform([3 * n + 10], seed)  # (3 T + 10,) in [0, 1)
        params = dict(size=size, crop=tf.constant(True), crop_scales=lo + (hi - lo) * u[:n],
                      crop_offsets=tf.reshape(u[n:3 * n], [n, 2]),
                      flip=tf.logical_and(self.flip, u[3 * n] < 0.5),
                      contrast_first=u[3 * n + 1] < 0.5)
        for i, (name, (lo, hi)) in enumerate(_RANGES.items()):
            on = tf.logical_and(self.photometric, u[3 * n + 2 + 2 * i] < 0.5)
            params[name] = tf.where(on, lo + (hi - lo) * u[3 * n + 3 + 2 * i], _IDENTITY[name])
        return params

    def random_params(self, batch_size, seed=None):
        """An endless dataset of per-example parameters (dicts), deterministic for a `seed`:
        the seed policy's size stream (one size per `batch_size` examples), and a stateless seed
        per example for its crops, flip and distortion."""
        sizes = ResizeFlipPolicy(self.image_sizes, flip=False).random_params(batch_size, seed)
        seeds = tf.data.Dataset.random(seed=None if seed is None else seed + 2,
                                       rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip((sizes.map(lambda size, _: size), seeds)).map(self._draw)

    def eval_params(self):
        """An endless dataset of the evaluation parameters: no crop, flip or distortion."""
        params = dict(self._draw(tf.constant(self.eval_size), tf.constant([0, 0], tf.int64)),
                      crop=tf.constant(False), flip=tf.constant(False),
                      **{k: tf.constant(v) for k, v in _IDENTITY.items()})
        return tf.data.Dataset.from_tensors(params).repeat()

    def __call__(self, image, boxes, params):
        """image (H, W, 3) uint8 or float in [0, 1], boxes (N, 4) px, params -> (image (S, S, 3)
        in [0, 1], boxes (K, 4) px of the output, scale [sy, sx] = output px / input px (without
        a crop: original px = output px / scale))."""
        image, boxes = tf.convert_to_tensor(image), tf.convert_to_tensor(boxes, tf.float32)
        size, shape = params["size"], tf.shape(image)
        full_scale = 255.0 if image.dtype == tf.uint8 else 1.0  # the output is in [0, 1]
        offset, side, found = choose_crop(boxes, shape[0], shape[1], params["crop_scales"],
                                          params["crop_offsets"])

        def cropped():
            patch, kept, _ = crop(image, boxes, offset, side)
            factor = tf.cast(size, tf.float32) / tf.cast(side, tf.float32)
            patch = tf.image.resize(patch, tf.stack([size, size])) / full_scale  # (S, S, 3)
            return tf.clip_by_value(patch, 0.0, 1.0), kept * factor, tf.stack([factor, factor])

        out, kept, scale = tf.cond(tf.logical_and(params["crop"], found), cropped,
                                   lambda: resize_and_pad(image, boxes, size))
        self.counter.add(images=1, faces=tf.shape(boxes)[0],
                         dropped_by_crop=tf.shape(boxes)[0] - tf.shape(kept)[0],
                         uncropped=tf.logical_and(params["crop"], tf.logical_not(found)))
        out = photometric(out, params["brightness"], params["contrast"], params["saturation"],
                          params["hue"], params["contrast_first"])
        out, kept = tf.cond(params["flip"], lambda: flip_left_right(out, kept),
                            lambda: (out, kept))
        return out, kept, scale

"""Whole-image face detection with a BlazeFace model: letterbox, network, post-processing, and the
map back to the original pixels. Everything is TensorFlow, so it traces into a SavedModel.

MediaPipe (ImageToTensorCalculator with keep_aspect_ratio and BORDER_ZERO) warps the whole image,
centred, into the square input with black borders. Here the image is zero-padded to a centred
square of side L = max(H, W), then resized to S x S. A photo is often 10-30x larger than S, and
plain bilinear interpolation (MediaPipe's warp) then samples only 4 of the (L / S)^2 pixels
behind each output; so by default (antialias) a square larger than S is shrunk by area averaging
(each output pixel the mean of the input area it covers, as OpenCV's INTER_AREA), and a smaller
one is enlarged bilinearly. Area averaging reads uint8 directly and took a quarter of the time of
tf.image.resize's antialiased bilinear (a separable triangle filter) on a 512 x 512 photo
(benchmarks/blazeface_latency_bench.py's set-up, 2 threads). A point then maps back exactly:
    original = model_pixel * L / S - (pad_top, pad_left)
BlazeFace sees faces at S / L of their size. MediaPipe documents the short-range model for faces
within ~2 m of the camera (selfies) and the full-range model for faces within ~5 m; a face that
ends up only a few pixels tall in the S x S input is missed, so small faces in large photos need
tiling or a crop.
"""

import tensorflow as tf

from handgrad.zoo.face.blazeface.anchors import ssd_anchors
from handgrad.zoo.face.blazeface.postprocess import postprocess
from handgrad.zoo.face.blazeface.variants import get_variant


def letterbox(images, size, antialias=True):
    """Centred zero-padding to a square, then a resize to `size` x `size`.

    Args: images `(B, H, W, 3)` float in [0, 1], or uint8 in [0, 255] (resized as uint8, so the
        full-size photo is never converted to float); one size per batch; size S; antialias:
        area averaging when shrinking (module docstring), else bilinear only.
    Returns: (squares `(B, S, S, 3)` float32 in [0, 1], scale L / S `()` float32, offset `(2,)`
        float32 = (pad_top, pad_left)), with original = model_pixel * scale - offset.
    """
    images = tf.convert_to_tensor(images)
    unit = 255.0 if images.dtype == tf.uint8 else 1.0
    hw = tf.shape(images)[1:3]  # (2,)
    side = tf.reduce_max(hw)
    pad = (side - hw) // 2  # (2,): top, left
    padded = tf.pad(images, [[0, 0], [pad[0], side - hw[0] - pad[0]],
                             [pad[1], side - hw[1] - pad[1]], [0, 0]])  # (B, L, L, 3)

    def resize(method):
        return lambda: tf.image.resize(padded, [size, size], method=method)

    if antialias:
        squares = tf.cond(side > size, resize("area"), resize("bilinear"))
    else:
        squares = resize("bilinear")()
    scale = tf.cast(side, tf.float32) / float(size)
    return squares / unit, scale, tf.cast(pad, tf.float32)


def to_original(detections, scale, offset, image_hw):
    """Maps post-processed detections from model-input pixels back to the original image.

    Boxes are clipped to the image (as the package's other detectors); keypoints are not.
    Padding rows (past num_detections) stay zero.
    """
    valid = tf.sequence_mask(detections["num_detections"],
                             tf.shape(detections["scores"])[1])  # (B, D)
    hw = tf.cast(image_hw, tf.float32)
    boxes = detections["boxes"] * scale - tf.tile(offset, [2])  # (B, D, 4)
    boxes = tf.clip_by_value(boxes, 0.0, tf.tile(hw, [2]))
    kps = detections["keypoints"] * scale - offset  # (B, D, K, 2)
    return {**detections,
            "boxes": tf.where(valid[..., None], boxes, 0.0),
            "keypoints": tf.where(valid[..., None, None], kps, 0.0)}


def detect_faces(model, images, variant, score_threshold=None, iou_threshold=None,
                 max_detections=100, weighted=True, antialias=True):
    """Faces in `images` `(B, H, W, 3)` float [0, 1] or uint8 (one size per batch).

    Args: model: build_blazeface / import_blazeface output for `variant`; thresholds default to
        MediaPipe's (variants.py); max_detections D; weighted (False: plain greedy NMS);
        antialias: area averaging when shrinking to the model input (letterbox).
    Returns: dict "boxes" `(B, D, 4)` `[ymin, xmin, ymax, xmax]` and "keypoints" `(B, D, 6, 2)`
        `(y, x)` in original pixels, "scores" `(B, D)`, "num_detections" `(B,)` int32.
    """
    spec = get_variant(variant)
    squares, scale, offset = letterbox(images, spec.input_size, antialias)
    outputs = model(squares, training=False)
    detections = postprocess(outputs, ssd_anchors(spec.anchor_options), spec, score_threshold,
                             iou_threshold, max_detections, weighted)
    return to_original(detections, scale, offset, tf.shape(images)[1:3])

"""Box operations: IoU, box encoding/decoding with variances, anchor-to-face matching, targets.

Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input (TF Model Garden convention),
everywhere in this file. All functions are pure TensorFlow, so they run inside `tf.data` maps.

IoU (seed eq. 58): |A n B| / |A u B|.

Encoding (Faster R-CNN / RetinaNet parameterisation, divided by the SSD-style "variances" v so
that the targets have roughly unit scale), for a face box b and its anchor a, both as centre
(y, x) and size (h, w):
    t_y = (y_b - y_a) / h_a / v_0      t_x = (x_b - x_a) / w_a / v_1
    t_h = log(h_b / h_a) / v_2         t_w = log(w_b / w_a) / v_3
Decoding inverts it; t_h, t_w are clipped at log(1000 / 16) first (torchvision's
`bbox_xform_clip`) so an untrained network cannot overflow exp().

Matching (the seed's eq. 58 rule "IoU > 0.5" plus RetinaNet's ignore band):
    positive (1)  if max_face IoU(anchor, face) >= 0.5
    negative (0)  if max_face IoU < 0.4
    ignored (-1)  otherwise
and every face is force-matched to its best anchor (so faces smaller than every anchor still get
one positive): faces, in order of decreasing best IoU, each claim their best anchor not already
claimed by another face. A claimed anchor is positive for the face that claimed it, whatever its
IoU. Non-forced positives go to the face of highest IoU.
"""

import tensorflow as tf

from handgrad.pipelines.augment import clip_boxes

__all__ = ["area", "clip_boxes", "decode_boxes", "encode_boxes", "encode_targets", "iou",
           "match_anchors"]

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)
_BBOX_XFORM_CLIP = 6.907755278982137  # log(1000 / 16)


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


def _center_size(boxes):
    """`[ymin, xmin, ymax, xmax]` -> centre y, centre x, height, width, each `(...,)`."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


def encode_boxes(boxes, anchors, variances=DEFAULT_VARIANCES):
    """Regression targets `[t_y, t_x, t_h, t_w]` of `boxes` w.r.t. `anchors` (both `(..., 4)`)."""
    by, bx, bh, bw = _center_size(boxes)
    ay, ax, ah, aw = _center_size(anchors)
    eps = 1e-8  # degenerate (padding) boxes must not give log(0)
    t = tf.stack([(by - ay) / ah, (bx - ax) / aw,
                  tf.math.log(tf.maximum(bh, eps) / ah),
                  tf.math.log(tf.maximum(bw, eps) / aw)], axis=-1)  # (..., 4)
    return t / tf.constant(variances, t.dtype)


def decode_boxes(deltas, anchors, variances=DEFAULT_VARIANCES):
    """Inverse of `encode_boxes`: `(..., 4)` deltas + anchors -> `[ymin, xmin, ymax, xmax]` px."""
    t = deltas * tf.constant(variances, deltas.dtype)  # (..., 4)
    ay, ax, ah, aw = _center_size(tf.cast(anchors, deltas.dtype))
    cy = t[..., 0] * ah + ay
    cx = t[..., 1] * aw + ax
    h = tf.exp(tf.minimum(t[..., 2], _BBOX_XFORM_CLIP)) * ah
    w = tf.exp(tf.minimum(t[..., 3], _BBOX_XFORM_CLIP)) * aw
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def _force_match(overlaps):
    """Greedy forced matches: `overlaps` `(M, A)` -> claimed face per anchor `(A,)`, -1 if none.

    Faces in order of decreasing best IoU each claim their best not-yet-claimed anchor; a face
    whose IoU with every free anchor is 0 claims nothing.
    """
    num_faces = tf.shape(overlaps)[0]
    num_anchors = tf.shape(overlaps)[1]
    order = tf.argsort(tf.reduce_max(overlaps, axis=1), direction="DESCENDING")  # (M,)

    def body(i, claimed):
        face = order[i]
        free = tf.where(claimed < 0, overlaps[face], -1.0)  # (A,)
        best = tf.argmax(free, output_type=tf.int32)
        take = free[best] > 0.0
        update = tf.where(take, face, claimed[best])
        return i + 1, tf.tensor_scatter_nd_update(claimed, [[best]], [update])

    claimed = -tf.ones([num_anchors], tf.int32)
    _, claimed = tf.while_loop(lambda i, _: i < num_faces, body, [0, claimed])
    return claimed  # (A,)


def match_anchors(anchors, boxes, num_boxes=None, positive_iou=0.5, negative_iou=0.4,
                  force_match=True):
    """Assigns faces to anchors (rules in the module docstring).

    Args:
        anchors: `(A, 4)` float32 `[ymin, xmin, ymax, xmax]` px.
        boxes: `(M, 4)` face boxes, same convention; rows >= `num_boxes` are padding.
        num_boxes: number of valid rows of `boxes` (default: all M).
        positive_iou, negative_iou: the IoU thresholds (>= positive, < negative).
        force_match: give every face its best anchor.
    Returns:
        labels: `(A,)` int32, 1 face, 0 background, -1 ignored.
        matched: `(A,)` int32 index of the matched face (0 where labels != 1).
        max_iou: `(A,)` float32 IoU with the best face.
    """
    if not negative_iou <= positive_iou:
        raise ValueError(f"Expected negative_iou <= positive_iou. Received: "
                         f"negative_iou={negative_iou}, positive_iou={positive_iou}")
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if num_boxes is not None:
        boxes = boxes[:tf.cast(num_boxes, tf.int32)]  # (M', 4)
    num_anchors = tf.shape(anchors)[0]

    overlaps = iou(boxes, anchors)  # (M, A)
    has_faces = tf.shape(boxes)[0] > 0
    max_iou = tf.where(has_faces, tf.reduce_max(
        tf.concat([overlaps, tf.zeros([1, num_anchors])], axis=0), axis=0), 0.0)  # (A,)
    matched = tf.where(has_faces, tf.argmax(
        tf.concat([overlaps, -tf.ones([1, num_anchors])], axis=0), axis=0,
        output_type=tf.int32), 0)  # (A,)

    labels = tf.where(max_iou >= positive_iou, 1, tf.where(max_iou < negative_iou, 0, -1))
    if force_match:
        claimed = _force_match(overlaps)  # (A,)
        forced = claimed >= 0
        labels = tf.where(forced, 1, labels)
        matched = tf.where(forced, claimed, matched)
    matched = tf.where(labels == 1, matched, 0)
    return tf.cast(labels, tf.int32), matched, max_iou


def encode_targets(boxes, num_boxes, anchors, variances=DEFAULT_VARIANCES, positive_iou=0.5,
                   negative_iou=0.4, force_match=True):
    """Training targets of one image, for the detection loss (eq. 61).

    Args:
        boxes: `(M, 4)` faces `[ymin, xmin, ymax, xmax]` px of the model input, padded.
        num_boxes: scalar, number of valid rows in `boxes`.
        anchors: `(A, 4)` from `anchors.generate_anchors` for this image size.
    Returns: a dict
        "cls_targets": `(A,)` float32, 1 face, 0 background, -1 ignored;
        "box_targets": `(A, 4)` float32 encoded `[t_y, t_x, t_h, t_w]`, zeros where not a face.
    """
    labels, matched, _ = match_anchors(anchors, boxes, num_boxes, positive_iou, negative_iou,
                                       force_match)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    padded = tf.concat([boxes, tf.zeros([1, 4])], axis=0)  # (M+1, 4): never empty
    gathered = tf.gather(padded, matched)  # (A, 4)
    positive = labels == 1
    box_targets = tf.where(positive[:, None], encode_boxes(
        tf.where(positive[:, None], gathered, anchors), anchors, variances), 0.0)  # (A, 4)
    return {"cls_targets": tf.cast(labels, tf.float32), "box_targets": box_targets}

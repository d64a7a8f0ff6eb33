"""Box coding: box encoding/decoding with variances, anchor-to-face matching, targets (the
primitives it builds on, IoU and areas, are `pipelines.boxes`).

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
IoU. Non-forced positives go to the face of highest IoU. Ties go to the lower face / anchor index.

Crowds (issue 12: 709 faces x 90 000 anchors at 1024 px): the (faces x anchors) IoU matrix is
never held whole. It is computed a chunk of faces at a time, keeping each anchor's best face and
each face's top-k anchors; the forced matching then walks each face's k candidates (a full IoU row
only when all k are already claimed), with results exactly those of the whole-matrix rule
(tests/test_crowd_encoding.py checks them against a NumPy port of it).
"""

import tensorflow as tf

from handgrad.pipelines.boxes import iou

__all__ = ["decode_boxes", "encode_boxes", "encode_targets", "match_anchors"]

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)
_BBOX_XFORM_CLIP = 6.907755278982137  # log(1000 / 16)


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


_BOXES = tf.TensorSpec([None, 4], tf.float32)


@tf.function(input_signature=[_BOXES, _BOXES, tf.TensorSpec([], tf.int32),
                              tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)])
def _best_faces_and_candidates(boxes, anchors, num_candidates, chunk_elements, positive_iou):
    """IoU statistics of `boxes` `(M, 4)` x `anchors` `(A, 4)`, never holding all M x A IoUs.

    The IoU matrix is computed `chunk_elements // A` faces at a time (a 709-face crowd against
    90 000 anchors would otherwise hold 255 MB per intermediate of `iou`).

    Returns:
        max_iou: `(A,)` the best face's IoU per anchor, 0 without faces.
        best_face: `(A,)` int32 that face, the first one among equals (as `tf.argmax` over the
            whole matrix picks), where max_iou >= positive_iou; 0 elsewhere (never used there:
            an argmax across faces costs 9x a max, so it is taken only over those anchors).
        top_iou, top_anchor: `(M, k)` each face's k = min(num_candidates, A) highest-IoU anchors,
            highest first, the lower anchor index first among equals (`tf.math.top_k`).
    """
    num_faces = tf.shape(boxes)[0]
    num_anchors = tf.shape(anchors)[0]
    chunk = tf.maximum(chunk_elements // tf.maximum(num_anchors, 1), 1)
    k = tf.minimum(num_candidates, num_anchors)

    def body(start, max_iou, best_face, top_iou, top_anchor):
        overlaps = iou(boxes[start:start + chunk], anchors)  # (c, A)
        chunk_max = tf.reduce_max(overlaps, axis=0)  # (A,)
        # strictly better only: on ties the face of an earlier chunk, i.e. the lower index, stays
        better = chunk_max > max_iou
        max_iou = tf.where(better, chunk_max, max_iou)
        columns = tf.where(better & (chunk_max >= positive_iou))  # (P, 1)
        best_face = tf.tensor_scatter_nd_update(best_face, columns, tf.argmax(
            tf.gather(overlaps, columns[:, 0], axis=1), axis=0, output_type=tf.int32) + start)
        values, indices = tf.math.top_k(overlaps, k)  # (c, k)
        return (start + chunk, max_iou, best_face, top_iou.write(top_iou.size(), values),
                top_anchor.write(top_anchor.size(), indices))

    def array(dtype):  # starts with an empty (0, k) block, so that no faces concat to (0, k)
        return tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False,
                              element_shape=[None, None]).write(0, tf.zeros([0, k], dtype))

    # one chunk at a time: by default the loop may run 10 iterations' IoUs at once
    _, max_iou, best_face, top_iou, top_anchor = tf.while_loop(
        lambda start, *_: start < num_faces, body,
        [0, -tf.ones([num_anchors]), tf.zeros([num_anchors], tf.int32), array(tf.float32),
         array(tf.int32)], parallel_iterations=1)
    # IoUs are >= 0, so the -1 start value only survives without faces
    max_iou = tf.maximum(max_iou, 0.0)
    top_iou = tf.reshape(top_iou.concat(), [num_faces, k])  # (M, k)
    top_anchor = tf.reshape(top_anchor.concat(), [num_faces, k])  # (M, k)
    return max_iou, best_face, top_iou, top_anchor


def _first_choices(claimed, top_iou, top_anchor):
    """Each face's first free candidate given the `claimed` (A,) anchors (-1: free).

    Returns choice (R,) int32 anchor, takes (R,) bool (a free candidate with IoU > 0) and
    unknown (R,) bool (every candidate claimed while IoU > 0 may remain beyond them).
    """
    free = tf.gather(claimed, top_anchor) < 0  # (R, k)
    first = tf.argmax(tf.cast(free, tf.int32), axis=1, output_type=tf.int32)  # (R,)
    any_free = tf.reduce_any(free, axis=1)
    choice = tf.gather(top_anchor, first, batch_dims=1)  # (R,)
    takes = any_free & (tf.gather(top_iou, first, batch_dims=1) > 0.0)
    return choice, takes, ~any_free & (top_iou[:, -1] > 0.0)


@tf.function(input_signature=[_BOXES, _BOXES, tf.TensorSpec([None, None], tf.float32),
                              tf.TensorSpec([None, None], tf.int32)])
def _force_match(boxes, anchors, top_iou, top_anchor):
    """Greedy forced matches -> claimed face per anchor `(A,)`, -1 if none.

    Faces in order of decreasing best IoU each claim their best not-yet-claimed anchor (the
    lowest index among equals); a face whose IoU with every free anchor is 0 claims nothing.
    That anchor is the first free one of the face's candidates `top_anchor` (sorted the same
    way) unless all are claimed, so the greedy runs in rounds: every remaining face takes its
    first free candidate at once, up to the first face whose candidates are all claimed or whose
    choice an earlier face of the round takes; that face scans its full IoU row, exactly as the
    rule says, and the next round starts after it. Rounds: 1 + the faces whose candidates are
    taken at their turn (with 1 candidate: 33 of the 708 faces of the densest WIDER layout at 640
    with 8-220 px anchors, instead of 708 sequential steps).
    """
    num_faces = tf.shape(top_iou)[0]
    order = tf.argsort(top_iou[:, 0], direction="DESCENDING")  # (M,) best IoU = first candidate

    def full_row(face, claimed):
        free = tf.where(claimed >= 0, -1.0, iou(boxes[face:face + 1], anchors)[0])  # (A,)
        best = tf.argmax(free, output_type=tf.int32)
        return tf.cond(free[best] > 0.0, lambda: tf.tensor_scatter_nd_update(
            claimed, [[best]], [face]), lambda: claimed)

    def round_(start, claimed):
        rest = order[start:]  # (R,) faces still to place, in order
        choice, takes, unknown = _first_choices(claimed, tf.gather(top_iou, rest),
                                                tf.gather(top_anchor, rest))
        position = tf.range(tf.size(rest))
        key = tf.where(takes, choice, -1 - position)  # faces that take nothing never collide
        _, group = tf.unique(key)
        first_of_group = tf.math.unsorted_segment_min(position, group, tf.size(rest))
        blocked = unknown | (position > tf.gather(first_of_group, group))  # (R,)
        stop = tf.where(tf.reduce_any(blocked),
                        tf.argmax(tf.cast(blocked, tf.int32), output_type=tf.int32),
                        tf.size(rest))
        commit = takes & (position < stop)
        claimed = tf.tensor_scatter_nd_update(claimed, tf.boolean_mask(choice, commit)[:, None],
                                              tf.boolean_mask(rest, commit))
        claimed = tf.cond(stop < tf.size(rest), lambda: full_row(rest[stop], claimed),
                          lambda: claimed)
        return start + stop + 1, claimed

    claimed = -tf.ones([tf.shape(anchors)[0]], tf.int32)  # (A,) face of each anchor, -1: none
    _, claimed = tf.while_loop(lambda start, _: start < num_faces, round_, [0, claimed],
                               parallel_iterations=1)
    return claimed


def match_anchors(anchors, boxes, num_boxes=None, positive_iou=0.5, negative_iou=0.4,
                  force_match=True, num_candidates=1, chunk_elements=2**21):
    """Assigns faces to anchors (rules in the module docstring).

    Args:
        anchors: `(A, 4)` float32 `[ymin, xmin, ymax, xmax]` px.
        boxes: `(M, 4)` face boxes, same convention; rows >= `num_boxes` are padding.
        num_boxes: number of valid rows of `boxes` (default: all M).
        positive_iou, negative_iou: the IoU thresholds (>= positive, < negative).
        force_match: give every face its best anchor.
        num_candidates: anchors kept per face for the forced matching; any value gives the
            same result. More make the full-row fallback rarer but cost more than the fallback
            saves: 1 (an argmax) leaves 32 of the 708 faces of the densest WIDER layout at 640
            to it, 2 leave 1, and `top_k` with k > 1 costs ~7x an argmax.
        chunk_elements: IoU entries computed at once (memory: ~12 float32 temporaries of it).
    Returns:
        labels: `(A,)` int32, 1 face, 0 background, -1 ignored.
        matched: `(A,)` int32 index of the matched face (0 where labels != 1).
        max_iou: `(A,)` float32 IoU with the best face.
    """
    if not negative_iou <= positive_iou:
        raise ValueError(f"Expected negative_iou <= positive_iou. Received: "
                         f"negative_iou={negative_iou}, positive_iou={positive_iou}")
    if num_candidates < 1 or chunk_elements < 1:
        raise ValueError(f"Expected num_candidates >= 1 and chunk_elements >= 1. Received: "
                         f"num_candidates={num_candidates}, chunk_elements={chunk_elements}")
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if num_boxes is not None:
        boxes = boxes[:tf.cast(num_boxes, tf.int32)]  # (M', 4)

    max_iou, matched, top_iou, top_anchor = _best_faces_and_candidates(
        boxes, anchors, num_candidates, chunk_elements, positive_iou)  # (A,), (A,), (M, k) x 2
    labels = tf.where(max_iou >= positive_iou, 1, tf.where(max_iou < negative_iou, 0, -1))
    if force_match:
        claimed = _force_match(boxes, anchors, top_iou, top_anchor)  # (A,)
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

"""BlazeFace post-processing in the graph: MediaPipe's decoding, score sigmoid and weighted NMS.

Decoding (TensorsToDetectionsCalculator::DecodeBoxes, box format XYWH because the graph sets
`reverse_output_order: true`), per anchor a = [y_c, x_c, h, w] (normalised, anchors.py) and raw
coordinates r (model output, input pixels):
    x = r0 / x_scale a_w + a_xc    y = r1 / y_scale a_h + a_yc
    w = r2 / w_scale a_w           h = r3 / h_scale a_h
    box = [y - h/2, x - w/2, y + h/2, x + w/2];  keypoint k: (r[5+2k], r[4+2k]) mapped like (y, x)
    score = sigmoid(clip(logit, -100, 100))
Boxes with a negative width or height are dropped, as MediaPipe does.

Weighted NMS (NonMaxSuppressionCalculator, algorithm WEIGHTED, IoU threshold 0.3): repeatedly take
the best remaining detection above the score threshold; every remaining detection whose IoU with
it exceeds the threshold (the best one included) is removed, and the output box and keypoints are
their score-weighted mean (the score stays the best one's). `weighted=False` keeps the best box
itself (plain greedy NMS). Outputs are padded to `max_detections` with zeros.

Everything is in pixels of the model input, boxes `[ymin, xmin, ymax, xmax]`, keypoints `(y, x)`.
"""

import tensorflow as tf

from handgrad.zoo.face.blazeface.variants import NUM_KEYPOINTS


def decode_detections(regressors, anchors, input_size, box_scale=None):
    """MediaPipe's box and keypoint decoding.

    Args:
        regressors: `(B, A, 16)` raw model output. anchors: `(A, 4)` `[y_c, x_c, h, w]`,
            normalised. input_size: the square input's side S. box_scale: x/y/w/h_scale
            (default S: the raw values are input pixels).
    Returns: boxes `(B, A, 4)` `[ymin, xmin, ymax, xmax]` and keypoints `(B, A, 6, 2)` `(y, x)`,
        both in input pixels.
    """
    scale = float(input_size if box_scale is None else box_scale)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    regressors = tf.cast(regressors, tf.float32)
    a_yx = anchors[:, 0:2]  # (A, 2) centre
    a_hw = anchors[:, 2:4]  # (A, 2)
    raw_yx = tf.reverse(regressors[..., 0:2], axis=[-1])  # (B, A, 2): XYWH -> (y, x)
    raw_hw = tf.reverse(regressors[..., 2:4], axis=[-1])  # (B, A, 2): (h, w)
    centre = raw_yx / scale * a_hw + a_yx  # (B, A, 2) normalised
    size = raw_hw / scale * a_hw  # (B, A, 2)
    boxes = tf.concat([centre - size / 2.0, centre + size / 2.0], axis=-1) * input_size
    kps = tf.reshape(regressors[..., 4:], [tf.shape(regressors)[0], -1, NUM_KEYPOINTS, 2])
    kps = tf.reverse(kps, axis=[-1]) / scale * a_hw[:, None, :] + a_yx[:, None, :]  # (B,A,6,2)
    return boxes, kps * input_size


def detection_scores(classificators, clipping=100.0):
    """sigmoid(clip(logit, -clipping, clipping)): `(B, A, 1)` logits -> `(B, A)` scores."""
    logits = tf.cast(classificators[..., 0], tf.float32)  # (B, A)
    return tf.sigmoid(tf.clip_by_value(logits, -clipping, clipping))


def _iou_with(boxes, box):
    """IoU of `(B, A, 4)` boxes with one `(B, 4)` box each: `(B, A)` (0 when the union is 0)."""
    box = box[:, None, :]  # (B, 1, 4)
    lo = tf.maximum(boxes[..., 0:2], box[..., 0:2])  # (B, A, 2)
    hi = tf.minimum(boxes[..., 2:4], box[..., 2:4])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)  # (B, A)
    area = tf.reduce_prod(boxes[..., 2:4] - boxes[..., 0:2], axis=-1)
    union = area + tf.reduce_prod(box[..., 2:4] - box[..., 0:2], axis=-1) - inter
    return tf.math.divide_no_nan(inter, union)


def _nms_step(boxes, keypoints, scores, remaining, iou_threshold, weighted):
    """One round for every image: returns (box, keypoints, score, found, remaining')."""
    masked = tf.where(remaining, scores, -1.0)  # (B, A), scores are > 0 when kept
    best = tf.argmax(masked, axis=1, output_type=tf.int32)  # (B,)
    found = tf.reduce_any(remaining, axis=1)  # (B,)
    best_box = tf.gather(boxes, best, batch_dims=1)  # (B, 4)
    # the best one always joins its cluster, even if degenerate (IoU 0 with itself)
    cluster = remaining & ((_iou_with(boxes, best_box) > iou_threshold)
                           | tf.one_hot(best, tf.shape(scores)[1], on_value=True,
                                        off_value=False))  # (B, A)
    if weighted:
        w = tf.where(cluster, scores, 0.0)  # (B, A)
        total = tf.reduce_sum(w, axis=1)  # (B,)
        box = tf.math.divide_no_nan(tf.einsum("ba,bac->bc", w, boxes), total[:, None])
        kps = tf.math.divide_no_nan(tf.einsum("ba,bakc->bkc", w, keypoints),
                                    total[:, None, None])
    else:
        box, kps = best_box, tf.gather(keypoints, best, batch_dims=1)
    score = tf.gather(scores, best, batch_dims=1)  # (B,)
    # images with nothing left write zeros
    box = tf.where(found[:, None], box, 0.0)
    kps = tf.where(found[:, None, None], kps, 0.0)
    return box, kps, tf.where(found, score, 0.0), found, remaining & ~cluster


def weighted_nms(boxes, keypoints, scores, score_threshold, iou_threshold=0.3, max_detections=100,
                 weighted=True):
    """MediaPipe's weighted non-maximum suppression, batched, in the graph.

    Args: boxes `(B, A, 4)`, keypoints `(B, A, K, 2)`, scores `(B, A)`; thresholds; the
        output size D = max_detections; weighted (False: plain greedy NMS).
    Returns: dict "boxes" `(B, D, 4)`, "keypoints" `(B, D, K, 2)`, "scores" `(B, D)` (best
        first), "num_detections" `(B,)` int32; rows past num_detections are zero.
    """
    sizes_ok = tf.reduce_all(boxes[..., 2:4] >= boxes[..., 0:2], axis=-1)  # (B, A)
    remaining = (scores >= score_threshold) & sizes_ok
    b, k = tf.shape(scores)[0], keypoints.shape[2]
    out = {"boxes": tf.zeros([b, max_detections, 4]),
           "keypoints": tf.zeros([b, max_detections, k, 2]),
           "scores": tf.zeros([b, max_detections]),
           "num_detections": tf.zeros([b], tf.int32)}

    def cond(i, remaining, out):
        return (i < max_detections) & tf.reduce_any(remaining)

    def body(i, remaining, out):
        box, kps, score, found, remaining = _nms_step(boxes, keypoints, scores, remaining,
                                                       iou_threshold, weighted)
        row = tf.one_hot(i, max_detections)  # (D,): writes round i into row i
        return i + 1, remaining, {
            "boxes": out["boxes"] + row[None, :, None] * box[:, None, :],
            "keypoints": out["keypoints"] + row[None, :, None, None] * kps[:, None],
            "scores": out["scores"] + row[None, :] * score[:, None],
            "num_detections": out["num_detections"] + tf.cast(found, tf.int32)}

    _, _, out = tf.while_loop(cond, body, [tf.constant(0), remaining, out])
    return out


def postprocess(outputs, anchors, variant, score_threshold=None, iou_threshold=None,
                max_detections=100, weighted=True):
    """Model outputs -> faces in input pixels (decode, sigmoid, weighted NMS).

    Args: outputs: the model's dict {"regressors", "classificators"}; anchors `(A, 4)`;
        variant: a variants.BlazeFaceVariant (its thresholds are the defaults).
    Returns: weighted_nms' dict.
    """
    boxes, keypoints = decode_detections(outputs["regressors"], anchors, variant.input_size,
                                         variant.box_scale)
    scores = detection_scores(outputs["classificators"], variant.score_clipping)
    return weighted_nms(
        boxes, keypoints, scores,
        variant.score_threshold if score_threshold is None else score_threshold,
        variant.iou_threshold if iou_threshold is None else iou_threshold,
        max_detections, weighted)

"""In-graph post-processing of the face detector's raw outputs (RetinaNet's recipe).

    p = sigmoid(logit)                          per anchor
    top `pre_nms_top_k` anchors per level       (RetinaNet: 1000)
    decode (`boxes.decode_boxes`), clip to the image
    batched NMS: tf.image.combined_non_max_suppression(iou_threshold, score_threshold,
                 max_detections)
Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input.

With landmarks (RetinaFace), or the authors' "+1" NMS, or without clipping, the NMS runs per image
(`tf.image.non_max_suppression`, which returns the kept indices) so that each kept face brings its
keypoints: L points `(y, x)` px, decoded like box centres,
    y_k = y_a + t_{y,k} v_0 h_a,   x_k = x_a + t_{x,k} v_1 w_a      (a: the anchor)
(biubug6 `decode_landm`; its variance 0.1 = v_0 = v_1).

The "+1" NMS is the IoU of Fast R-CNN's `py_cpu_nms` that RetinaFace's WIDER evaluation runs:
areas and intersections of pixel-inclusive boxes, (x2 - x1 + 1)(y2 - y1 + 1). It equals the plain
IoU of the boxes grown by 1 px at ymax and xmax (min(a + 1, b + 1) - max(c, d) = min(a, b) + 1 -
max(c, d)), so TF's NMS runs on grown boxes and the kept boxes are output ungrown. It raises the
IoU of small boxes: plain NMS keeps more of them (86 against 85, 635 against 601 detections on
two WIDER photos with RetinaFace-MobileNet0.25).
"""

import tensorflow as tf

from handgrad.pipelines.boxes import clip_boxes
from handgrad.zoo.face.box_coder import decode_boxes


def decode_keypoints(deltas, anchors, variances):
    """`(..., 2 L)` deltas 5 x (t_y, t_x) + `(..., 4)` anchors -> `(..., L, 2)` (y, x) px."""
    shape = tf.concat([tf.shape(deltas)[:-1], [-1, 2]], axis=0)
    t = tf.reshape(deltas, shape) * tf.constant(variances[:2], deltas.dtype)  # (..., L, 2)
    anchors = tf.cast(anchors, deltas.dtype)
    center = (anchors[..., :2] + anchors[..., 2:]) / 2.0  # (..., 2) (y, x)
    size = anchors[..., 2:] - anchors[..., :2]  # (..., 2) (h, w)
    return center[..., None, :] + t * size[..., None, :]  # (..., L, 2)


def postprocess(cls_logits, box_deltas, anchors, level_counts, image_hw, variances,
                pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.4, max_detections=750,
                landmark_deltas=None, nms_plus_one=False, clip=True):
    """Sigmoid, top-k per level, decode, clip, batched NMS (see the module docstring).

    Args:
        cls_logits: `(B, A, 1)`. box_deltas: `(B, A, 4)`. anchors: `(A, 4)` px.
        level_counts: anchors per level (ints or scalar tensors), summing to A
            (`Anchors.counts`).
        image_hw: (height, width) of the model input, for clipping.
        variances: of the box encoding (`Anchors.variances`).
        pre_nms_top_k, score_threshold, iou_threshold, max_detections: the detector's
            `PostprocessConfig` (`nms_iou_threshold` is `iou_threshold` here).
        landmark_deltas: `(B, A, 2 L)` or None. nms_plus_one: the "+1" IoU (module docstring).
        clip: clip the boxes to the image (before the NMS, as RetinaNet; RetinaFace does not).
    Returns: dict "boxes" `(B, D, 4)` px, "scores" `(B, D)`, "num_detections" `(B,)` int32,
        D = max_detections, zero-padded; with landmark_deltas also "keypoints" `(B, D, L, 2)`.
    """
    scores = tf.sigmoid(tf.cast(cls_logits[..., 0], tf.float32))  # (B, A)
    box_deltas = tf.cast(box_deltas, tf.float32)
    if landmark_deltas is not None:
        landmark_deltas = tf.cast(landmark_deltas, tf.float32)
    boxes, top_scores, keypoints = [], [], []
    start = 0
    for count in level_counts:
        k = tf.minimum(pre_nms_top_k, count)
        level_scores, idx = tf.math.top_k(scores[:, start:start + count], k)  # (B, k)
        deltas = tf.gather(box_deltas[:, start:start + count], idx, batch_dims=1)  # (B, k, 4)
        level_anchors = tf.gather(anchors[start:start + count], idx)  # (B, k, 4)
        boxes.append(decode_boxes(deltas, level_anchors, variances))
        top_scores.append(level_scores)
        if landmark_deltas is not None:
            marks = tf.gather(landmark_deltas[:, start:start + count], idx,
                              batch_dims=1)  # (B, k, 2 L)
            keypoints.append(decode_keypoints(marks, level_anchors, variances))  # (B, k, L, 2)
        start = start + count
    boxes = tf.concat(boxes, axis=1)  # (B, K, 4)
    if clip:
        boxes = clip_boxes(boxes, *image_hw)
    top_scores = tf.concat(top_scores, axis=1)  # (B, K)
    if landmark_deltas is None and not nms_plus_one:
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], top_scores[:, :, None],  # (B, K, 1, 4), (B, K, 1): one class
            max_output_size_per_class=max_detections, max_total_size=max_detections,
            iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
        return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores,
                "num_detections": nms.valid_detections}
    if landmark_deltas is None:
        keypoints = tf.zeros(tf.concat([tf.shape(boxes)[:2], [0, 2]], axis=0))  # (B, K, 0, 2)
    else:
        keypoints = tf.concat(keypoints, axis=1)  # (B, K, L, 2)
    grow = tf.constant([0.0, 0.0, 1.0, 1.0] if nms_plus_one else [0.0] * 4)

    def one_image(args):
        b, s, kp = args  # (K, 4), (K,), (K, L, 2)
        keep = tf.image.non_max_suppression(b + grow, s, max_detections, iou_threshold,
                                            score_threshold)  # (n,) in decreasing score
        n = tf.size(keep)
        pad = max_detections - n
        return (tf.pad(tf.gather(b, keep), [[0, pad], [0, 0]]),
                tf.pad(tf.gather(s, keep), [[0, pad]]),
                tf.pad(tf.gather(kp, keep), [[0, pad], [0, 0], [0, 0]]), n)

    out_boxes, out_scores, out_keypoints, num = tf.map_fn(
        one_image, (boxes, top_scores, keypoints),
        fn_output_signature=(tf.float32, tf.float32, tf.float32, tf.int32))
    result = {"boxes": out_boxes, "scores": out_scores, "num_detections": num}
    if landmark_deltas is not None:
        result["keypoints"] = out_keypoints
    return result

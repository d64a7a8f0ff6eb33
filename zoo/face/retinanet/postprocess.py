"""In-graph post-processing of the face detector's raw outputs (RetinaNet's recipe).

    p = sigmoid(logit)                          per anchor
    top `pre_nms_top_k` anchors per level       (RetinaNet: 1000)
    decode (`boxes.decode_boxes`), clip to the image
    batched NMS: tf.image.combined_non_max_suppression(iou_threshold, score_threshold,
                 max_detections)
Boxes are `[ymin, xmin, ymax, xmax]` in pixels of the model input.
"""

import tensorflow as tf

from handgrad.pipelines.boxes import clip_boxes
from handgrad.zoo.face.box_coder import decode_boxes


def postprocess(cls_logits, box_deltas, anchors, level_counts, image_hw, variances,
                pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.4, max_detections=750):
    """Sigmoid, top-k per level, decode, clip, batched NMS (see the module docstring).

    Args:
        cls_logits: `(B, A, 1)`. box_deltas: `(B, A, 4)`. anchors: `(A, 4)` px.
        level_counts: anchors per level (ints or scalar tensors), summing to A
            (`Anchors.counts`).
        image_hw: (height, width) of the model input, for clipping.
        variances: of the box encoding (`Anchors.variances`).
        pre_nms_top_k, score_threshold, iou_threshold, max_detections: the detector's
            `PostprocessConfig` (`nms_iou_threshold` is `iou_threshold` here).
    Returns: dict "boxes" `(B, D, 4)` px, "scores" `(B, D)`, "num_detections" `(B,)` int32,
        D = max_detections, zero-padded.
    """
    scores = tf.sigmoid(tf.cast(cls_logits[..., 0], tf.float32))  # (B, A)
    box_deltas = tf.cast(box_deltas, tf.float32)
    boxes, top_scores = [], []
    start = 0
    for count in level_counts:
        k = tf.minimum(pre_nms_top_k, count)
        level_scores, idx = tf.math.top_k(scores[:, start:start + count], k)  # (B, k)
        deltas = tf.gather(box_deltas[:, start:start + count], idx, batch_dims=1)  # (B, k, 4)
        level_anchors = tf.gather(anchors[start:start + count], idx)  # (B, k, 4)
        boxes.append(decode_boxes(deltas, level_anchors, variances))
        top_scores.append(level_scores)
        start = start + count
    boxes = clip_boxes(tf.concat(boxes, axis=1), *image_hw)  # (B, K, 4)
    top_scores = tf.concat(top_scores, axis=1)  # (B, K)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], top_scores[:, :, None],  # (B, K, 1, 4), (B, K, 1): one class
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return {"boxes": nms.nmsed_boxes, "scores": nms.nmsed_scores,
            "num_detections": nms.valid_detections}

"""RetinaFace's test-time recipe (issue 20, item 5), in the graph: two passes and box voting.

Chosen by measuring on the 23 real WIDER val photos (`benchmarks/README.md`; the search and every
recipe tried: `/work/scratch/tta/RECIPE.md` of issue 20), for `retinaface_mobilenetv2`:

    pass k = 0, 1 at factors F = (1.0, 1.5); f = min(F_k, 2560 / long side); pass 1 is skipped
        when f <= 1 (a photo of 2560 px or more gets one pass)
    resize to (max(32, round(H f)), max(32, round(W f))) bilinear (pass 0: the photo itself
        unless f < 1), zero-pad bottom / right to multiples of 32, anchors of the padded size
    per pass: score = sigmoid(face logit) > 0.02, the top 5000 by score (over all levels),
        decode boxes and landmarks; NO per-pass NMS
    pass 1 keeps only boxes with sqrt(h w) <= 256 of its own pixels (faces up to ~171 px of the
        photo; larger ones come from pass 0, where the up-scaled pass fits them badly)
    map back (divide y by H_k / H, x by W_k / W), pool both passes
    box voting ("+1" IoU > 0.4, as the authors' py_cpu_nms): seeds = greedy NMS in score order;
        each candidate joins the first seed it overlaps; a face = the score-weighted mean of its
        cluster's boxes and landmarks, with its seed's score; at most `max_detections` faces

Real WIDER val (23 photos, official protocol): 0.914 / 0.919 / 0.920 (easy / medium / hard)
against 0.901 / 0.909 / 0.844 for one pass with the authors' NMS, at ~3.3x the network's pixels.

Why here and not in `export/`: the recipe is this family's inference (its anchors, its decode,
its network's raw outputs); `handgrad.export` only wraps it into a SavedModel, and an evaluation
can call `detect_tta` on a `FaceDetector` without exporting anything.

The vote's vectorised form (no data-dependent Python loop, so it runs inside a SavedModel) equals
the greedy voting loop: greedy voting removes a candidate at the first seed overlapping it, and
its seeds are exactly the greedy NMS's kept boxes. The per-pass arithmetic runs in float64 (the
sigmoid before its 0.02 threshold, the decode, the vote's IoUs and means), as the NumPy
reference does, so that a candidate at a threshold falls on the same side; TF's NMS (seeds)
runs on float32 boxes.
"""

import tensorflow as tf

from handgrad.pipelines.boxes import area, iou
from handgrad.zoo.face.box_coder import decode_boxes
from handgrad.zoo.face.retinanet.postprocess import decode_keypoints

PASSES = ((1.0, None), (1.5, 256.0))  # (resize factor, max box side in the pass's own pixels)
MAX_SIDE = 2560  # a pass's factor is capped so that its long side stays <= MAX_SIDE
PAD_MULTIPLE = 32  # zero padding bottom / right (RetinaFace-MobileNetV2's authors' protocol)
SCORE_THRESHOLD = 0.02  # per-pass candidates (the authors' WIDER test)
PRE_NMS_TOP_K = 5000
VOTE_IOU = 0.4
_GROW = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64)  # "+1" areas = plain IoU of grown boxes


def pass_size(hw, factor):
    """(resized (h, w) int32, f float64) of a pass over a photo of `hw` (int32 (2,))."""
    hw64 = tf.cast(hw, tf.float64)
    f = tf.minimum(tf.constant(factor, tf.float64), MAX_SIDE / tf.reduce_max(hw64))
    return tf.maximum(tf.cast(tf.round(hw64 * f), tf.int32), 32), f


def pass_candidates(network, image, factor, max_side, anchor_set, pad_multiple=PAD_MULTIPLE):
    """One pass over `image` (H, W, 3) float32 in [0, 1]: boxes (N, 4) float64 original px,
    scores (N,) float64 descending, keypoints (N, L, 2) float64 original px."""
    hw = tf.shape(image)[:2]
    size, _ = pass_size(hw, factor)
    x = tf.cond(tf.reduce_all(tf.equal(size, hw)), lambda: image,
                lambda: tf.image.resize(image, size))  # bilinear, no antialias
    padded = -(-size // pad_multiple) * pad_multiple
    x = tf.pad(x, [[0, padded[0] - size[0]], [0, padded[1] - size[1]], [0, 0]])
    out = network(x[None], training=False)
    logits = tf.cast(out["cls_logits"][0, :, 0], tf.float64)  # (A,)
    scores = tf.sigmoid(logits)
    masked = tf.where(scores > SCORE_THRESHOLD, scores, tf.constant(-1.0, tf.float64))
    top, idx = tf.math.top_k(masked, tf.minimum(PRE_NMS_TOP_K, tf.size(masked)))  # stable
    idx = tf.boolean_mask(idx, top > SCORE_THRESHOLD)
    anchors = tf.gather(tf.cast(anchor_set.generate(padded), tf.float64), idx)
    boxes = decode_boxes(tf.gather(tf.cast(out["box_deltas"][0], tf.float64), idx), anchors,
                         anchor_set.variances)
    keypoints = decode_keypoints(tf.gather(tf.cast(out["landmark_deltas"][0], tf.float64), idx),
                                 anchors, anchor_set.variances)
    scores = tf.gather(scores, idx)
    if max_side is not None:
        ok = tf.sqrt(area(boxes)) <= max_side
        boxes, scores, keypoints = (tf.boolean_mask(t, ok) for t in (boxes, scores, keypoints))
    scale = tf.cast(size, tf.float64) / tf.cast(hw, tf.float64)  # (sy, sx)
    return boxes / tf.tile(scale, [2]), scores, keypoints / scale


def box_vote(boxes, scores, keypoints, max_detections, iou_threshold=VOTE_IOU,
             score_threshold=0.0):
    """Box voting over pooled candidates (module docstring): boxes (N, 4), scores (N,),
    keypoints (N, L, 2), float64 -> boxes (S, 4), scores (S,), keypoints (S, L, 2), S <=
    max_detections faces in descending score, only seeds scoring above `score_threshold` (a
    prefix of the seeds: a lower seed changes no higher face)."""
    grown = boxes + _GROW
    seeds = tf.image.non_max_suppression(
        tf.cast(grown, tf.float32), tf.cast(scores, tf.float32), max_detections, iou_threshold,
        score_threshold)  # (S,) descending score
    overlap = iou(tf.gather(grown, seeds), grown)  # (S, N); grown boxes: unions >= 1 px
    count = tf.size(seeds)
    # a last row that every candidate joins: the "first seed" of a candidate overlapping none
    # (only possible past the max_detections-th seed) is S, a segment that is dropped
    member = tf.concat([overlap > iou_threshold, tf.ones([1, tf.size(scores)], tf.bool)], axis=0)
    first = tf.argmax(tf.cast(member, tf.int32), axis=0, output_type=tf.int32)  # (N,) in [0, S]
    w = scores
    wsum = tf.math.unsorted_segment_sum(w, first, count + 1)[:count]  # >= the seed's score > 0
    voted = (tf.math.unsorted_segment_sum(w[:, None] * boxes, first, count + 1)[:count]
             / wsum[:, None])
    flat = tf.reshape(keypoints, [tf.shape(keypoints)[0], -1])
    marks = (tf.math.unsorted_segment_sum(w[:, None] * flat, first, count + 1)[:count]
             / wsum[:, None])
    return (voted, tf.gather(scores, seeds),
            tf.reshape(marks, [count, tf.shape(keypoints)[1], 2]))


def detect_tta(network, image, anchor_set, num_landmarks, max_detections=750,
               score_threshold=0.0, passes=PASSES, pad_multiple=PAD_MULTIPLE):
    """The recipe on one photo (module docstring).

    Args:
        network: `f(x (1, h, w, 3) float32 in [0, 1], training=False)` -> the raw outputs of a
            RetinaFace `FaceDetector` (cls_logits, box_deltas, landmark_deltas); its `network`,
            or a frozen copy.
        image: (H, W, 3) float32 in [0, 1]. anchor_set: the detector's `Anchors`.
        num_landmarks: L. max_detections: faces kept (D). score_threshold: lowest face score
            output (the per-pass candidates stay at 0.02: the recipe).
    Returns: {"boxes" (D, 4) float32 `[ymin, xmin, ymax, xmax]` original px, "scores" (D,),
        "keypoints" (D, L, 2) (y, x) original px, "num_detections" () int32}, zero-padded.
    """
    hw = tf.shape(image)[:2]
    parts = [pass_candidates(network, image, *passes[0], anchor_set, pad_multiple)]
    for factor, max_side in passes[1:]:
        _, f = pass_size(hw, factor)
        parts.append(tf.cond(
            f > 1.0,
            lambda factor=factor, max_side=max_side: pass_candidates(
                network, image, factor, max_side, anchor_set, pad_multiple),
            lambda: (tf.zeros([0, 4], tf.float64), tf.zeros([0], tf.float64),
                     tf.zeros([0, num_landmarks, 2], tf.float64))))
    boxes, scores, keypoints = (tf.concat(list(t), axis=0) for t in zip(*parts))
    boxes, scores, keypoints = box_vote(boxes, scores, keypoints, max_detections,
                                        score_threshold=score_threshold)
    n = tf.shape(scores)[0]
    pad = max_detections - n
    return {"boxes": tf.pad(tf.cast(boxes, tf.float32), [[0, pad], [0, 0]]),
            "scores": tf.pad(tf.cast(scores, tf.float32), [[0, pad]]),
            "keypoints": tf.pad(tf.cast(keypoints, tf.float32), [[0, pad], [0, 0], [0, 0]]),
            "num_detections": n}

"""BlazeFace training loss: the package's detection loss (losses/detection.py: focal loss on the
face logit, smooth L1 on the box, normalised by the number of positive anchors) on the raw
MediaPipe outputs, plus a masked keypoint term.

The raw regressors are input pixels (targets.py), so a fixed smooth L1 on them would weigh a
1-pixel error on a 6-pixel face like one on a 150-pixel face. Each positive anchor's errors are
divided by its face's size sqrt(w h) (read from its own targets) and by SSD's variances (0.1 for
positions, 0.2 for sizes), which makes them the scale of RetinaNet's encoded deltas:
    box:      smooth_l1((r[0:4] - t[0:4]) / (sqrt(w h) [v_c, v_c, v_s, v_s]))
    keypoint: smooth_l1((r[4:16] - t[4:16]) / (sqrt(w h) v_c)), weighted by keypoint_weights
              (0 when a face's keypoints are unknown, as in WIDER), / max(sum of weights, 1)
The divisors depend on the targets only, so the gradient reaching the network is the detection
loss's derived one, scaled.
"""

import tensorflow as tf

from handgrad.losses.detection import detection_loss, smooth_l1


def blazeface_loss(targets, outputs, alpha=0.25, gamma=2.0, delta=1.0, box_weight=1.0,
                   keypoint_weight=1.0, center_variance=0.1, size_variance=0.2):
    """Loss of a batch.

    Args:
        targets: "cls_targets" `(B, A)`, "box_targets" `(B, A, 4)` raw [x, y, w, h]; optional
            "keypoint_targets" `(B, A, 12)` and "keypoint_weights" `(B, A)` (targets.py).
        outputs: the network's "regressors" `(B, A, 16)`, "classificators" `(B, A, 1)`.
    Returns: dict of scalars "loss", "cls_loss", "box_loss", "keypoint_loss".
    """
    regressors = tf.cast(outputs["regressors"], tf.float32)
    box_targets = tf.cast(targets["box_targets"], tf.float32)
    positive = tf.cast(targets["cls_targets"], tf.float32) > 0.5  # (B, A)
    face = tf.sqrt(tf.maximum(box_targets[..., 2] * box_targets[..., 3], 1e-6))  # (B, A)
    face = tf.where(positive, face, 1.0)[..., None]  # (B, A, 1)
    variances = tf.constant([center_variance, center_variance, size_variance, size_variance])
    norm = face * variances  # (B, A, 4)
    losses = detection_loss(targets["cls_targets"], box_targets / norm,
                            outputs["classificators"], regressors[..., :4] / norm,
                            normalization="positives", alpha=alpha, gamma=gamma,
                            smooth_l1_delta=delta, box_weight=box_weight)
    if "keypoint_targets" in targets:
        weights = tf.cast(targets["keypoint_weights"], tf.float32)  # (B, A)
        error = (regressors[..., 4:] - tf.cast(targets["keypoint_targets"], tf.float32)) / (
            face * center_variance)  # (B, A, 12)
        per_anchor = tf.reduce_sum(smooth_l1(error, delta), -1) * weights  # (B, A)
        kp_loss = keypoint_weight * tf.reduce_sum(per_anchor) / tf.maximum(
            tf.reduce_sum(weights), 1.0)
    else:  # the validation split's labels keep only the box targets
        kp_loss = tf.constant(0.0)
    return {**losses, "loss": losses["loss"] + kp_loss, "keypoint_loss": kp_loss}

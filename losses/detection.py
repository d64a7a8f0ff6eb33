"""Detection losses with hand-derived gradients: sigmoid focal loss (eq. 60), smooth L1 (eq. 59)
and the detection loss of eq. 61.

Focal loss (eq. 60, written with the names un-swapped, see SEED_NOTES), for a logit x and a
binary label y (1 face, 0 background), p = sigmoid(x):
    p_t = p if y = 1 else 1 - p,   alpha_t = alpha if y = 1 else 1 - alpha
    FL  = -alpha_t (1 - p_t)^gamma log(p_t)
With z = (2y - 1) x, p_t = sigmoid(z) and log p_t = -softplus(-z) (stable for any x). Derived
gradient (dp_t/dx = (2y - 1) p_t (1 - p_t)):
    dFL/dx = (2y - 1) alpha_t (1 - p_t)^gamma (gamma p_t log(p_t) - (1 - p_t))
Defaults alpha = 0.25, gamma = 2: the seed says it used "the hyper-parameters that gave RetinaNet
its best result", which are these; its text's "alpha = 3" contradicts that (and alpha must lie in
[0, 1] to be a class weight), so 0.25 is the default and both stay configurable.

Smooth L1 (eq. 59, with RetinaNet's optional transition point delta; delta = 1 is eq. 59):
    L(x) = 0.5 x^2 / delta   if |x| < delta,    |x| - 0.5 delta   otherwise
    dL/dx = x / delta        if |x| < delta,    sign(x)           otherwise

Detection loss (eq. 61). The seed's formula swaps its normalisers (N_c^k under the regression sum,
N_c^r under the classification sum); its text defines N_c^k / N_r^k as the number of anchors of
level k taking part in the classification / regression cost, which is what is implemented:
    "per_level" (the seed):
        L = sum_k [ (1 / N_r^k) sum_{a in k, y_a = 1} L_r(a)
                    + (1 / N_c^k) sum_{a in k, y_a != -1} FL(a) ]
    "positives" (RetinaNet):
        L = (1 / N_pos) [ sum_{a positive} L_r(a) + sum_{a, y_a != -1} FL(a) ]
L_r(a) is smooth L1 summed over the 4 encoded coordinates. Counts are taken over the whole batch
and floored at 1. A `box_weight` multiplies the regression term.

The model has one face logit per anchor (the RetinaNet sigmoid form of K = 1 classes), not the
seed's K + 1 softmax probabilities: with a sigmoid the background is p = 0, so the extra
background output is redundant, and the focal loss is defined on it.
"""

import keras
import tensorflow as tf

NORMALIZATIONS = ("positives", "per_level")


def sigmoid_focal_loss(labels, logits, alpha=0.25, gamma=2.0):
    """Element-wise focal loss of eq. 60 (corrected naming) with the derived gradient.

    Args: labels in {0, 1}, logits: same shape (any). alpha in [0, 1], gamma >= 0.
    Returns: the loss, same shape as `logits`. The gradient flows to `logits` only.
    """
    if not 0.0 <= alpha <= 1.0 or gamma < 0.0:
        raise ValueError(f"Expected 0 <= alpha <= 1 and gamma >= 0. Received: alpha={alpha}, "
                         f"gamma={gamma}")
    labels = tf.cast(labels, logits.dtype)
    sign = 2.0 * labels - 1.0  # +1 face, -1 background
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)

    @tf.custom_gradient
    def forward(x):
        z = sign * x
        log_pt = -tf.math.softplus(-z)  # log p_t
        one_minus_pt = tf.sigmoid(-z)  # 1 - p_t
        modulator = tf.pow(one_minus_pt, gamma)  # (1 - p_t)^gamma
        loss = -alpha_t * modulator * log_pt

        def backward(dy):
            pt = tf.sigmoid(z)
            return dy * sign * alpha_t * modulator * (gamma * pt * log_pt - one_minus_pt)

        return loss, backward

    return forward(logits)


def smooth_l1(x, delta=1.0):
    """Element-wise smooth L1 of eq. 59 (transition at `delta`) with the derived gradient."""
    if delta <= 0:
        raise ValueError(f"Expected delta > 0. Received: delta={delta}")

    @tf.custom_gradient
    def forward(x):
        ax = tf.abs(x)
        small = ax < delta
        loss = tf.where(small, 0.5 * x * x / delta, ax - 0.5 * delta)

        def backward(dy):
            return dy * tf.where(small, x / delta, tf.sign(x))

        return loss, backward

    return forward(x)


def detection_loss(cls_targets, box_targets, cls_logits, box_deltas, level_ids=None,
                   num_levels=4, normalization="positives", alpha=0.25, gamma=2.0,
                   smooth_l1_delta=1.0, box_weight=1.0):
    """Detection loss of eq. 61.

    Args:
        cls_targets: `(B, A)` 1 face, 0 background, -1 ignored (from `box_ops.encode_targets`).
        box_targets: `(B, A, 4)` encoded targets of the matched faces.
        cls_logits: `(B, A)` or `(B, A, 1)` face logits. box_deltas: `(B, A, 4)`.
        level_ids: `(A,)` int pyramid level of every anchor; needed for "per_level".
        num_levels: number of pyramid levels (the range of `level_ids`).
        normalization: "positives" (RetinaNet) or "per_level" (the seed, eq. 61).
        alpha, gamma: focal loss parameters. smooth_l1_delta: eq. 59 transition point.
        box_weight: weight of the regression term.
    Returns: dict of scalars "loss", "cls_loss", "box_loss".
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}. "
                         f"Received: normalization={normalization!r}")
    if cls_logits.shape.rank == 3:
        cls_logits = tf.squeeze(cls_logits, -1)  # (B, A)
    # half-precision logits (mixed precision) are summed over ~10^4 anchors: use float32
    dtype = tf.float32 if cls_logits.dtype in (tf.float16, tf.bfloat16) else cls_logits.dtype
    cls_logits = tf.cast(cls_logits, dtype)
    box_deltas = tf.cast(box_deltas, dtype)
    box_targets = tf.cast(box_targets, dtype)
    cls_targets = tf.cast(cls_targets, dtype)
    valid = tf.cast(cls_targets >= 0.0, dtype)  # (B, A)
    positive = tf.cast(cls_targets > 0.5, dtype)  # (B, A)

    fl = sigmoid_focal_loss(positive, cls_logits, alpha, gamma) * valid  # (B, A)
    l1 = tf.reduce_sum(smooth_l1(box_deltas - box_targets, smooth_l1_delta), -1)  # (B, A)
    l1 = l1 * positive

    if normalization == "positives":
        n_pos = tf.maximum(tf.reduce_sum(positive), 1.0)
        cls_loss = tf.reduce_sum(fl) / n_pos
        box_loss = tf.reduce_sum(l1) / n_pos
    else:
        if level_ids is None:
            raise ValueError('normalization="per_level" needs `level_ids` (anchors.level_ids).')

        def per_level_sum(values):  # (B, A) -> (L,)
            return tf.math.unsorted_segment_sum(tf.reduce_sum(values, 0), level_ids, num_levels)

        n_c = tf.maximum(per_level_sum(valid), 1.0)  # (L,)  N_c^k
        n_r = tf.maximum(per_level_sum(positive), 1.0)  # (L,)  N_r^k
        cls_loss = tf.reduce_sum(per_level_sum(fl) / n_c)
        box_loss = tf.reduce_sum(per_level_sum(l1) / n_r)
    box_loss = box_weight * box_loss
    return {"loss": cls_loss + box_loss, "cls_loss": cls_loss, "box_loss": box_loss}


@keras.saving.register_keras_serializable(package="handgrad")
class SigmoidFocalLoss(keras.losses.Loss):
    """Keras loss wrapper of `sigmoid_focal_loss` (eq. 60): mean over the last axis.

    Args: alpha (0.25), gamma (2.0), and `keras.losses.Loss` arguments.
    Call: `y_true` binary labels, `y_pred` logits, same shape.
    """

    def __init__(self, alpha=0.25, gamma=2.0, name="sigmoid_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = alpha
        self.gamma = gamma

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        return tf.reduce_mean(sigmoid_focal_loss(y_true, y_pred, self.alpha, self.gamma), -1)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="handgrad")
class SmoothL1Loss(keras.losses.Loss):
    """Keras loss wrapper of `smooth_l1` (eq. 59) of `y_pred - y_true`: sum over the last axis.

    Args: delta (1.0, eq. 59), and `keras.losses.Loss` arguments.
    """

    def __init__(self, delta=1.0, name="smooth_l1_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.delta = delta

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        return tf.reduce_sum(smooth_l1(y_pred - tf.cast(y_true, y_pred.dtype), self.delta), -1)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}

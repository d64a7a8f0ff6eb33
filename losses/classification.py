"""Classification losses with hand-derived gradients: cross-entropy (eq. 56-57) and L2 (eq. 8, 17).

Per sample r (the class axis is the last one, C classes); `keras.losses.Loss` then averages the
per-sample values over the batch ("sum_over_batch_size"), which is where the 1/R of the batch
mean enters the gradient (SEED_NOTES errata: the layers sum, the loss averages).

Cross-entropy from probabilities p (eq. 56-57), with the same normalisation and clipping as Keras:
    q = p / sum_c p[c]                       # (R, C) renormalised, as keras does
    c = clip(q, eps, 1 - eps)                # numerically safe log
    L = -sum_c y[c] log c[c]                 # (R,)            eq. 56
    dL/dc = -y / c                           # (R, C)          eq. 57
    dL/dq = dL/dc * 1[eps <= q <= 1 - eps]   # clipped entries get no gradient
    dL/dp = (dL/dq - sum_c dL/dq[c] q[c]) / sum_c p[c]   # through the renormalisation
    dL/dy = -log c
Cross-entropy from logits z (stable: log-softmax by max subtraction, never log(0)):
    L = -sum_c y[c] (z[c] - logsumexp(z))    # (R,)
    dL/dz = softmax(z) sum_c y[c] - y        # = softmax(z) - y for one-hot or soft labels
    dL/dy = -log_softmax(z)
    (With the batch mean of the Keras reduction this is the familiar (softmax(z) - y) / R.)
Sparse cross-entropy: integer labels are one-hot encoded and the same two ops are used.
L2 (eq. 8), per sample:
    L = ||y^ - y||^2 = sum_c (y^[c] - y[c])^2
    dL/dy^ = 2 (y^ - y)     (eq. 17 corrected: a vector, not 2 ||y^ - y||)
    dL/dy  = -2 (y^ - y)
"""

import keras
import tensorflow as tf


def _check_same_shape(y_true, y_pred, fn):
    if y_true.shape.rank != y_pred.shape.rank or not y_true.shape.is_compatible_with(
            y_pred.shape):
        raise ValueError(
            f"losses/classification.py {fn}: `y_true` and `y_pred` must have the same shape. "
            f"Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )


def _epsilon(dtype):
    return tf.constant(keras.config.epsilon(), dtype)


def categorical_crossentropy_from_probs(y_true, y_pred):
    """Per-sample cross-entropy of probabilities `y_pred` (eq. 56), gradient eq. 57 (clipped).

    Args: y_true, y_pred: `(..., C)` float tensors of one dtype. Returns: `(...)`.
    """
    _check_same_shape(y_true, y_pred, "categorical_crossentropy_from_probs")

    @tf.custom_gradient
    def forward(y, p):  # (R, C), (R, C)
        eps = _epsilon(p.dtype)
        total = tf.reduce_sum(p, axis=-1, keepdims=True)  # (R, 1)
        q = p / total  # (R, C)
        c = tf.clip_by_value(q, eps, 1 - eps)  # (R, C)
        log_c = tf.math.log(c)  # (R, C)
        loss = -tf.reduce_sum(y * log_c, axis=-1)  # (R,)  eq. 56

        def backward(dloss):  # (R,)
            d = dloss[..., None]  # (R, 1)
            inside = tf.logical_and(q >= eps, q <= 1 - eps)
            dq = tf.where(inside, -y / c, tf.zeros_like(q))  # (R, C)  eq. 57, clip mask
            dp = (dq - tf.reduce_sum(dq * q, axis=-1, keepdims=True)) / total  # (R, C)
            return -log_c * d, dp * d

        return loss, backward

    return forward(y_true, y_pred)


def categorical_crossentropy_from_logits(y_true, logits):
    """Per-sample cross-entropy of `softmax(logits)`; gradient `softmax(z) sum(y) - y`.

    Args: y_true, logits: `(..., C)` float tensors of one dtype. Returns: `(...)`.
    """
    _check_same_shape(y_true, logits, "categorical_crossentropy_from_logits")

    @tf.custom_gradient
    def forward(y, z):  # (R, C), (R, C)
        log_p = tf.nn.log_softmax(z, axis=-1)  # (R, C), max-subtracted
        loss = -tf.reduce_sum(y * log_p, axis=-1)  # (R,)  eq. 56 with p = softmax(z)

        def backward(dloss):  # (R,)
            d = dloss[..., None]  # (R, 1)
            p = tf.exp(log_p)  # (R, C)
            dz = p * tf.reduce_sum(y, axis=-1, keepdims=True) - y  # (R, C)
            return -log_p * d, dz * d

        return loss, backward

    return forward(y_true, logits)


def sparse_labels_to_one_hot(y_true, y_pred):
    """Integer labels `(...)` or `(..., 1)` -> one-hot `(..., C)` in y_pred's dtype."""
    labels = y_true
    if labels.shape.rank == y_pred.shape.rank and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)  # (R, 1) -> (R,)
    if labels.shape.rank != y_pred.shape.rank - 1:
        raise ValueError(
            "losses/classification.py SparseCategoricalCrossentropy: `y_true` must hold integer "
            "labels of shape y_pred.shape[:-1] (or with a trailing 1). Received: "
            f"y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )
    return tf.one_hot(tf.cast(labels, tf.int32), y_pred.shape[-1], dtype=y_pred.dtype)


def l2(y_true, y_pred):
    """Per-sample squared L2 distance `||y^ - y||^2` (eq. 8), gradient `2 (y^ - y)` (eq. 17).

    Args: y_true, y_pred: `(..., D)`. Returns: `(...)`.
    """
    _check_same_shape(y_true, y_pred, "l2")

    @tf.custom_gradient
    def forward(y, y_hat):  # (R, D), (R, D)
        diff = y_hat - y  # (R, D)
        loss = tf.reduce_sum(tf.square(diff), axis=-1)  # (R,)  eq. 8

        def backward(dloss):  # (R,)
            g = 2.0 * diff * dloss[..., None]  # (R, D)  eq. 17 corrected
            return -g, g

        return loss, backward

    return forward(y_true, y_pred)


def _check_smoothing(label_smoothing, cls):
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"losses/classification.py {cls}: label_smoothing must be in [0, 1]. "
                         f"Received: label_smoothing={label_smoothing}")


def _smooth(y, label_smoothing):
    """y (1 - s) + s / C: the labels of label smoothing, `(R, C)`."""
    if not label_smoothing:
        return y
    classes = tf.cast(tf.shape(y)[-1], y.dtype)
    return y * (1.0 - label_smoothing) + label_smoothing / classes


class _HandgradLoss(keras.losses.Loss):
    def __init__(self, name, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self._dtype_policy.name
        return config


@keras.saving.register_keras_serializable(package="handgrad")
class CategoricalCrossentropy(_HandgradLoss):
    """Cross-entropy between one-hot (or soft) labels and predictions, eq. 56-57.

    Args:
        from_logits: whether `y_pred` holds logits (stable log-softmax path) or probabilities
            (renormalised and clipped to [epsilon, 1 - epsilon], as Keras does).
        label_smoothing: in [0, 1]; y <- y (1 - s) + s / C before the loss.
        reduction, name, dtype: as `keras.losses.Loss`.
    Input shapes: y_true, y_pred `(batch, ..., C)`. Output: scalar (or `(batch, ...)` with
        reduction=None).
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        _check_smoothing(label_smoothing, type(self).__name__)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def _one_hot(self, y_true, y_pred):
        return tf.cast(y_true, y_pred.dtype)

    def call(self, y_true, y_pred):
        y_true = _smooth(self._one_hot(y_true, y_pred), self.label_smoothing)
        if self.from_logits:
            return categorical_crossentropy_from_logits(y_true, y_pred)
        return categorical_crossentropy_from_probs(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="handgrad")
class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Cross-entropy with integer labels (eq. 56-57); labels are one-hot encoded internally.

    Args:
        from_logits: as `CategoricalCrossentropy`.
        label_smoothing: as `CategoricalCrossentropy` (an addition to Keras' sparse loss).
        reduction, name, dtype: as `keras.losses.Loss`.
    Input shapes: y_true `(batch, ...)` or `(batch, ..., 1)` integer labels; y_pred
        `(batch, ..., C)`. Output: scalar (or `(batch, ...)` with reduction=None).
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(from_logits, label_smoothing, reduction, name, dtype)

    def _one_hot(self, y_true, y_pred):
        return sparse_labels_to_one_hot(y_true, y_pred)


@keras.saving.register_keras_serializable(package="handgrad")
class L2(_HandgradLoss):
    """Squared L2 distance per sample, `||y^ - y||^2` (eq. 8), gradient `2 (y^ - y)` (eq. 17).

    Note: Keras' `MeanSquaredError` averages over the last axis; this sums (the seed's eq. 8),
    so it equals `D * MeanSquaredError` for D outputs.
    Args: reduction, name, dtype: as `keras.losses.Loss`.
    Input shapes: y_true, y_pred `(batch, ..., D)`. Output: scalar (or `(batch, ...)`).
    """

    def __init__(self, reduction="sum_over_batch_size", name="l2", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return l2(tf.cast(y_true, y_pred.dtype), y_pred)


@keras.saving.register_keras_serializable(package="handgrad")
class SparseL2(_HandgradLoss):
    """`L2` (eq. 8, 17) between the one-hot encoding of integer labels and `y_pred`.

    The seed's section 3.2 trains a classifier with eq. 8 against the one-hot target.
    Input shapes: y_true `(batch,)` or `(batch, 1)` integer labels; y_pred `(batch, C)`.
    """

    def __init__(self, reduction="sum_over_batch_size", name="sparse_l2", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return l2(sparse_labels_to_one_hot(y_true, y_pred), y_pred)

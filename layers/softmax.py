"""Softmax with the hand-derived backward pass (seed section 3.4.9-3.4.10).

Forward (SEED_NOTES, eq. 54):
    X'[r, c] = exp(X[r, c]) / sum_c' exp(X[r, c'])          # (R, C) -> (R, C), along `axis`
Backward (eq. 55, corrected: the seed's last line delta X'(1 - sum X') is identically 0):
    dX[r, c] = X'[r, c] (delta[r, c] - sum_c' delta[r, c'] X'[r, c'])
"""

import keras
import tensorflow as tf


def softmax(x, axis=-1):
    """Softmax along `axis` with the gradient of eq. 55 (corrected)."""

    @tf.custom_gradient
    def forward(x):  # (..., C) -> (..., C)
        y = tf.nn.softmax(x, axis=axis)  # eq. 54, max-subtracted for stability

        def backward(dy):  # (..., C)
            dot = tf.reduce_sum(dy * y, axis=axis, keepdims=True)  # (..., 1)  sum_c' delta X'
            return y * (dy - dot)  # (..., C)  eq. 55

        return y, backward

    return forward(x)


@keras.saving.register_keras_serializable(package="handgrad")
class Softmax(keras.layers.Softmax):
    """Softmax activation with the backward of eq. 55 (corrected).

    Args: those of `keras.layers.Softmax` (`axis`, an int).
    Input shape: any. Output shape: same as input.
    Call args: `mask`, optional, broadcastable to the input: as in Keras, masked-out entries
        are replaced by a large negative number before the softmax and by 0 after it.
    """

    def __init__(self, axis=-1, **kwargs):
        if not isinstance(axis, int):
            raise ValueError(f"handgrad Softmax takes a single int axis. Received: axis={axis!r}")
        super().__init__(axis=axis, **kwargs)

    def call(self, inputs, mask=None):
        if mask is None:
            return softmax(inputs, axis=self.axis)
        # Same masking as keras.layers.Softmax; the where()s route no gradient to masked entries.
        keep = mask if mask.dtype == tf.bool else mask > 0.5
        big_negative = -3e4 if inputs.dtype == tf.float16 else -1e9
        inputs = tf.where(keep, inputs, tf.cast(big_negative, inputs.dtype))
        return tf.where(keep, softmax(inputs, axis=self.axis), tf.zeros_like(inputs))

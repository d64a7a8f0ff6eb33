"""Batch normalisation with the hand-derived backward pass (seed section 3.4.7-3.4.8).

Per channel c (the last axis), over the N = R H W positions of the other axes:
Forward, training (SEED_NOTES, eq. 37-40; eq. 39 keeps epsilon as 002 eq. 54 does):
    mu       = (1/N) sum X                                  # (C,)
    sigma^2  = (1/N) sum (X - mu)^2                          # (C,)  biased, as Keras
    X^       = (X - mu) / sqrt(sigma^2 + eps)                # (R, H, W, C)
    X'       = gamma X^ + beta
    running statistics (eq. 41-42): m <- momentum m + (1 - momentum) mu, likewise sigma^2
Backward, training (eq. 46-53, eq. 51 corrected: (sigma^2+eps)^-1 inside the bracket):
    dX     = gamma / (N sqrt(sigma^2 + eps)) (N delta - sum delta - X^ sum(delta X^))   eq. 51
    dgamma = sum delta X^                                                              eq. 52
    dbeta  = sum delta                                                                 eq. 53
    The code evaluates eq. 51 per channel first (C-sized coefficients) and then applies them
    with two full-size multiply-adds, so it never materialises X^:
        dX = (gamma inv) delta + (X - mu) b + c,  inv = (sigma^2+eps)^-1/2,
        b  = -(gamma inv^2 / N) sum(delta X^),  c = -(gamma inv / N) sum delta
    The batch statistics are outputs too (for the running averages); a gradient that reaches
    them adds d mu / N + d sigma^2 2 (X - mu) / N, folded into b and c the same way.
Forward, inference (the running statistics are constants; one multiply-add per element):
    X' = X a + d,   a = gamma / sqrt(m_var + eps),  d = beta - m_mean a
Backward, inference: dX = delta a, dgamma = sum delta (X - m_mean) / sqrt(m_var + eps),
    dbeta = sum delta (and the exact gradients for m_mean and m_var).
float16/bfloat16 inputs are normalised in float32 (their statistics overflow otherwise), and the
gradient is returned in the input's dtype.
"""

import keras
import tensorflow as tf

from handgrad.layers._common import reduction_dtype


def _reduce_axes(x):
    return list(range(x.shape.rank - 1))


def batch_norm_train(x, gamma, beta, epsilon=1e-3):
    """Training-mode batch norm over all axes but the last; gradient of eq. 46-53 (corrected).

    Args: x `(..., C)`; gamma, beta `(C,)`. Returns `(y, mean, variance)`: y like x, the batch
        statistics `(C,)` in the reduction dtype (float32 for half-precision x).
    """
    axes = _reduce_axes(x)
    dtype = reduction_dtype(x.dtype)

    @tf.custom_gradient
    def forward(x, gamma, beta):
        xf = tf.cast(x, dtype)  # (R, H, W, C)
        mean, var = tf.nn.moments(xf, axes)  # (C,), (C,)     eq. 37-38
        inv = tf.math.rsqrt(var + epsilon)  # (C,)
        scale = gamma * inv  # (C,)
        y = xf * scale + (beta - mean * scale)  # (R, H, W, C)  eq. 39-40
        n = tf.cast(tf.size(xf) // tf.shape(xf)[-1], dtype)  # N = R H W

        def backward(dy, dmean=None, dvar=None):  # dy: (R, H, W, C); dmean, dvar: (C,)
            dyf = tf.cast(dy, dtype)
            sum_dy = tf.reduce_sum(dyf, axes)  # (C,)                 eq. 53
            centered = xf - mean  # (R, H, W, C)
            sum_dy_xhat = tf.reduce_sum(dyf * centered, axes) * inv  # (C,)  eq. 52
            b = -scale * inv * sum_dy_xhat / n  # (C,)  X^ sum(delta X^) term of eq. 51
            c = -scale * sum_dy / n  # (C,)  sum delta term of eq. 51
            if dvar is not None:
                b += 2.0 * dvar / n
            if dmean is not None:
                c += dmean / n
            dx = dyf * scale + centered * b + c  # (R, H, W, C)          eq. 51
            return tf.cast(dx, x.dtype), sum_dy_xhat, sum_dy

        return (tf.cast(y, x.dtype), mean, var), backward

    return forward(x, tf.cast(gamma, dtype), tf.cast(beta, dtype))


def batch_norm_infer(x, gamma, beta, moving_mean, moving_variance, epsilon=1e-3):
    """Inference-mode batch norm, `x a + d` per channel, with its derived gradient.

    Args: x `(..., C)`; gamma, beta, moving_mean, moving_variance `(C,)`. Returns y like x.
    """
    axes = _reduce_axes(x)
    dtype = reduction_dtype(x.dtype)

    @tf.custom_gradient
    def forward(x, gamma, beta, mean, var):
        inv = tf.math.rsqrt(var + epsilon)  # (C,)
        a = gamma * inv  # (C,)
        d = beta - mean * a  # (C,)
        y = x * tf.cast(a, x.dtype) + tf.cast(d, x.dtype)  # (R, H, W, C): one multiply-add

        def backward(dy):  # (R, H, W, C)
            dyf = tf.cast(dy, dtype)
            sum_dy = tf.reduce_sum(dyf, axes)  # (C,)
            sum_dy_xc = tf.reduce_sum(dyf * (tf.cast(x, dtype) - mean), axes)  # (C,)
            dx = dy * tf.cast(a, dy.dtype)  # (R, H, W, C)
            dgamma = sum_dy_xc * inv
            dmean = -a * sum_dy
            dvar = -0.5 * gamma * inv * inv * inv * sum_dy_xc
            return dx, dgamma, sum_dy, dmean, dvar

        return y, backward

    return forward(x, *(tf.cast(t, dtype) for t in (gamma, beta, moving_mean, moving_variance)))


@keras.saving.register_keras_serializable(package="handgrad")
class BatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation with the backward of eq. 46-53 (corrected).

    Args: those of `keras.layers.BatchNormalization` (same weights `gamma`, `beta`,
        `moving_mean`, `moving_variance`, in that order); `axis` must be the last axis
        (channels_last). `renorm` and `synchronized` are not derived here and are refused.
    Input shape: any, `(..., C)`. Output shape: same as input.
    Call args: `training`: batch statistics (and running-average updates, eq. 41-42) when True
        and the layer is trainable; the running statistics otherwise.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(axis=axis, **kwargs)
        if self.renorm:
            raise ValueError("handgrad BatchNormalization does not implement renorm=True.")
        if self.synchronized:
            raise ValueError("handgrad BatchNormalization does not implement synchronized=True.")

    def build(self, input_shape):
        if self.axis not in (-1, len(input_shape) - 1):
            raise ValueError(
                "handgrad BatchNormalization normalises the last (channel) axis only. "
                f"Received: axis={self.axis} for input shape {input_shape}"
            )
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("handgrad BatchNormalization does not support masks.")
        dtype = reduction_dtype(tf.as_dtype(inputs.dtype))
        channels = inputs.shape[-1]
        gamma = tf.ones([channels], dtype) if self.gamma is None else tf.cast(self.gamma, dtype)
        beta = tf.zeros([channels], dtype) if self.beta is None else tf.cast(self.beta, dtype)
        if training and self.trainable:
            y, mean, var = batch_norm_train(inputs, gamma, beta, self.epsilon)
            m = self.momentum
            self.moving_mean.assign(
                tf.cast(self.moving_mean, dtype) * m + mean * (1.0 - m))
            self.moving_variance.assign(
                tf.cast(self.moving_variance, dtype) * m + var * (1.0 - m))
            return y
        return batch_norm_infer(inputs, gamma, beta, tf.cast(self.moving_mean, dtype),
                                tf.cast(self.moving_variance, dtype), self.epsilon)

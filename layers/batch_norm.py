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

Under a tf.distribute strategy with several replicas:
- `synchronized=False` (default, as Keras): each replica normalises with the statistics of its own
  per-replica batch (N = its R H W) and updates the moving averages with them.
- `synchronized=True`: the sums over the batch are taken over all replicas. Forward: one
  all-reduce of (sum X, N), then one of sum (X - mu)^2, so mu and sigma^2 are the global-batch
  moments. Backward: the two channel sums of eq. 51, sum delta and sum delta X^, are
  all-reduced too (and N is the global count), so dX on each replica is exactly the slice of
  the single-device dX on the global batch. dgamma and dbeta are returned as per-replica sums,
  because the optimizer already sums the variable gradients of the replicas.
  Outside a multi-replica context it is the plain layer.
"""

import keras
import tensorflow as tf

from handgrad.layers._common import reduction_dtype


def _reduce_axes(x):
    return list(range(x.shape.rank - 1))


def _replica_sum(synchronized):
    """A function all-reducing (SUM) a nest of tensors over the replicas, or None (1 replica)."""
    if not synchronized:
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None

    def replica_sum(*values):  # one packed all-reduce: the same collective on every replica
        sizes = [tf.size(v) for v in values]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                   tf.concat([tf.reshape(v, [-1]) for v in values], 0))
        return [tf.reshape(t, tf.shape(v)) for t, v in zip(tf.split(total, sizes), values)]

    return replica_sum


def batch_norm_train(x, gamma, beta, epsilon=1e-3, synchronized=False):
    """Training-mode batch norm over all axes but the last; gradient of eq. 46-53 (corrected).

    Args: x `(..., C)`; gamma, beta `(C,)`. synchronized: take the moments (and the backward's
        channel sums) over the global batch of all replicas (see the module docstring).
    Returns `(y, mean, variance)`: y like x, the batch statistics `(C,)` in the reduction dtype
        (float32 for half-precision x).
    """
    axes = _reduce_axes(x)
    dtype = reduction_dtype(x.dtype)
    replica_sum = _replica_sum(synchronized)

    @tf.custom_gradient
    def forward(x, gamma, beta):
        xf = tf.cast(x, dtype)  # (R, H, W, C)
        n = tf.cast(tf.size(xf) // tf.shape(xf)[-1], dtype)  # N = R H W
        if replica_sum is None:
            mean, var = tf.nn.moments(xf, axes)  # (C,), (C,)     eq. 37-38
        else:  # global N and moments over all replicas (two passes, as tf.nn.moments)
            total, n = replica_sum(tf.reduce_sum(xf, axes), n)  # (C,), ()
            mean = total / n  # eq. 37
            var = replica_sum(tf.reduce_sum(tf.square(xf - mean), axes))[0] / n  # eq. 38
        inv = tf.math.rsqrt(var + epsilon)  # (C,)
        scale = gamma * inv  # (C,)
        y = xf * scale + (beta - mean * scale)  # (R, H, W, C)  eq. 39-40

        def backward(dy, dmean=None, dvar=None):  # dy: (R, H, W, C); dmean, dvar: (C,)
            dyf = tf.cast(dy, dtype)
            sum_dy = tf.reduce_sum(dyf, axes)  # (C,)                 eq. 53
            centered = xf - mean  # (R, H, W, C)
            sum_dy_xhat = tf.reduce_sum(dyf * centered, axes) * inv  # (C,)  eq. 52
            dmean = tf.zeros_like(mean) if dmean is None else dmean
            dvar = tf.zeros_like(var) if dvar is None else dvar
            # The statistics depend on every replica's X: dX needs the global channel sums.
            all_dy, all_dy_xhat, dmean, dvar = (sum_dy, sum_dy_xhat, dmean, dvar) \
                if replica_sum is None else replica_sum(sum_dy, sum_dy_xhat, dmean, dvar)
            b = -scale * inv * all_dy_xhat / n + 2.0 * dvar / n  # (C,)  X^ sum(delta X^) term
            c = -scale * all_dy / n + dmean / n  # (C,)  sum delta term of eq. 51
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
        (channels_last). `renorm` is not derived here and is refused. `synchronized=True`
        takes the training statistics over all replicas of a tf.distribute strategy (see the
        module docstring); the default uses each replica's own batch.
    Input shape: any, `(..., C)`. Output shape: same as input.
    Call args: `training`: batch statistics (and running-average updates, eq. 41-42) when True
        and the layer is trainable; the running statistics otherwise.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(axis=axis, **kwargs)
        if self.renorm:
            raise ValueError("handgrad BatchNormalization does not implement renorm=True.")

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
            y, mean, var = batch_norm_train(inputs, gamma, beta, self.epsilon,
                                            synchronized=self.synchronized)
            m = self.momentum
            self.moving_mean.assign(
                tf.cast(self.moving_mean, dtype) * m + mean * (1.0 - m))
            self.moving_variance.assign(
                tf.cast(self.moving_variance, dtype) * m + var * (1.0 - m))
            return y
        return batch_norm_infer(inputs, gamma, beta, tf.cast(self.moving_mean, dtype),
                                tf.cast(self.moving_variance, dtype), self.epsilon)

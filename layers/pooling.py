"""2-D max pooling with the hand-derived backward pass (seed section 3.4.5-3.4.6).

Forward (SEED_NOTES, eq. 31-34), per channel, windows of k x k with stride s:
    X'[r, h', w', c] = max_{0 <= j, i < k} X[r, s h' + j, s w' + i, c]
    H' = (H - k) / s + 1 ("valid"); ceil(H / s) ("same", padded with -inf)
Backward (eq. 35-36):
    dX[r, h, w, c] = sum over the windows (h', w') whose arg-max is (h, w) of delta[r, h', w', c]
    Each window routes its delta to one position (the first maximum in row-major order when
    there are ties); overlapping windows (k > s) that share an arg-max add their deltas up.
TF's MaxPoolGrad kernel, the one its own max-pool gradient calls, performs exactly this routing.
"""

import keras
import tensorflow as tf

from handgrad.layers._common import normalize_padding, normalize_pair, require_channels_last


def max_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """Max pooling with the arg-max routing gradient of eq. 35-36.

    Args: x `(R, H, W, C)`; pool_size, strides (default: pool_size) int or pair; padding.
    Returns: `(R, H', W', C)`.
    """
    k = normalize_pair(pool_size, "pool_size")
    s = normalize_pair(strides if strides is not None else k, "strides")
    pad = normalize_padding(padding)
    ksize4, strides4 = [1, *k, 1], [1, *s, 1]

    @tf.custom_gradient
    def forward(x):  # (R, H, W, C)
        y = tf.nn.max_pool2d(x, ksize4, strides4, pad)  # (R, H', W', C)  eq. 34

        def backward(dy):  # (R, H', W', C) -> (R, H, W, C)   eq. 35-36
            return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dy,
                                          ksize=ksize4, strides=strides4, padding=pad)

        return y, backward

    return forward(x)


@keras.saving.register_keras_serializable(package="handgrad")
class MaxPool2D(keras.layers.MaxPooling2D):
    """Max pooling layer with the backward of eq. 35-36.

    Args: those of `keras.layers.MaxPooling2D` (`pool_size`, `strides` (default pool_size),
        `padding`, `data_format="channels_last"`). Overlapping windows (e.g. k=3, s=2) work.
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, H', W', C)`.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size=pool_size, strides=strides, padding=padding,
                         data_format=data_format, **kwargs)
        require_channels_last(self.data_format, "handgrad MaxPool2D")

    def call(self, inputs):
        return max_pool2d(inputs, self.pool_size, self.strides, self.padding)


MaxPooling2D = MaxPool2D

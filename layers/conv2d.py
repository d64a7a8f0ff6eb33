"""2-D convolution with the hand-derived backward pass (seed section 3.4.1-3.4.2).

Layout: the seed indexes X[r, c, h, w]; TensorFlow is NHWC, so here X is (R, H, W, C) and the
kernel W is (K_h, K_w, C, C'). The math is unchanged.

Forward (SEED_NOTES, eq. 20-24; eq. 24 corrected: with stride s the input index is s h' + j):
    X'[r, h', w', c'] = b[c'] + sum_{j, i, c} X[r, s h' + j - p, s w' + i - p, c] W[j, i, c, c']
    H' = (H - K + 2p) / s + 1   ("valid": p = 0; "same": H' = ceil(H / s), TF's asymmetric pad)
Backward:
    dX (eq. 25-27): sum over c' of delta convolved with the 180-degree-rotated kernel. That form
        holds for stride 1 only (erratum): for stride s, delta is first dilated by s (zeros
        between its entries), then fully convolved with the rotated kernel and the padding cropped
        back: a transposed convolution. TF's kernel for exactly this is Conv2DBackpropInput.
    dW (eq. 28, corrected: no sum over c'):
        dW[j, i, c, c'] = sum_{r, h', w'} X[r, s h' + j - p, s w' + i - p, c] delta[r, h', w', c']
        a correlation of the input with delta: Conv2DBackpropFilter.
    db[c'] = sum_{r, h', w'} delta[r, h', w', c']
Both kernels are the ones TensorFlow's own Conv2D gradient calls. For a 1 x 1 kernel, eq. 28
reduces to dW[0, 0, c, c'] = sum X[r, s h', s w', c] delta[r, h', w', c'] (no padding is ever
needed), one matrix product of the strided input with delta; the code uses it, because it is
cheaper and because TF 2.21's oneDNN filter-gradient kernel crashes on 1 x 1 stride-2 kernels
with few input channels (e.g. input (1, 64, 64, 8), filter (1, 1, 8, 16)).
"""

import keras
import tensorflow as tf

from handgrad.layers import activations
from handgrad.layers._common import conv_geometry, require_channels_last
from handgrad.layers.dense import activation_name
from handgrad.layers.softmax import softmax


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1):
    """Convolution (plus bias) with the gradient of eq. 25-28, corrected for stride and padding.

    Args:
        x: `(R, H, W, C)`. kernel: `(K_h, K_w, C, C')`. bias: `(C',)` or None.
        strides, dilation_rate: int or pair. padding: "valid" or "same".
    Returns: `(R, H', W', C')`.
    """
    s, d, pad = conv_geometry(strides, padding, dilation_rate)
    strides4, dil4 = [1, *s, 1], [1, *d, 1]
    pointwise = tuple(kernel.shape[:2]) == (1, 1)

    @tf.custom_gradient
    def forward(x, kernel, *maybe_bias):
        y = tf.nn.conv2d(x, kernel, strides4, pad, dilations=dil4)  # (R, H', W', C')  eq. 24
        if maybe_bias:
            y = tf.nn.bias_add(y, maybe_bias[0])

        def backward(dy):  # dy: (R, H', W', C')
            # eq. 25-27: dilate delta by s, convolve with the rotated kernel, crop: (R, H, W, C)
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                strides=strides4, padding=pad, dilations=dil4)
            if pointwise:  # eq. 28 for K = 1: (C, R H' W') @ (R H' W', C') -> (1, 1, C, C')
                xs = x[:, ::s[0], ::s[1], :]  # (R, H', W', C)
                dw = tf.matmul(tf.reshape(xs, [-1, xs.shape[-1]]),
                               tf.reshape(dy, [-1, dy.shape[-1]]), transpose_a=True)
                dw = tf.reshape(dw, tf.shape(kernel))
            else:  # eq. 28: correlate the input with delta: (K_h, K_w, C, C')
                dw = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                    strides=strides4, padding=pad, dilations=dil4)
            if maybe_bias:
                return dx, dw, tf.reduce_sum(dy, axis=[0, 1, 2])  # (C',)
            return dx, dw

        return y, backward

    return forward(x, kernel) if bias is None else forward(x, kernel, bias)


@keras.saving.register_keras_serializable(package="handgrad")
class Conv2D(keras.layers.Conv2D):
    """2-D convolution layer with the backward of eq. 25-28 (corrected).

    Args: those of `keras.layers.Conv2D` (same weight names `kernel`, `bias` and order).
        Supported: any kernel size, strides, `padding="valid"|"same"`, `dilation_rate` (with
        stride 1), `groups=1`, `data_format="channels_last"`; `activation` one of None/"linear",
        "relu", "sigmoid", "tanh", "softmax", each applied with its handgrad op.
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, H', W', filters)`.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        require_channels_last(self.data_format, "handgrad Conv2D")
        if self.groups != 1:
            raise ValueError(
                f"handgrad Conv2D supports groups=1 only. Received: groups={self.groups}")
        name = activation_name(self.activation)
        if name not in activations.FUSABLE + ("softmax",):
            raise ValueError(
                f"handgrad Conv2D supports activations {activations.FUSABLE + ('softmax',)}. "
                f"Received: activation={kwargs.get('activation')!r}"
            )
        self._activation_op = {
            "linear": None, "relu": activations.relu, "sigmoid": activations.sigmoid,
            "tanh": activations.tanh, "softmax": softmax,
        }[name]

    def call(self, inputs):
        kernel = tf.convert_to_tensor(self.kernel)
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias)
        y = conv2d(inputs, kernel, bias, self.strides, self.padding, self.dilation_rate)
        return y if self._activation_op is None else self._activation_op(y)

"""Depthwise 2-D convolution with the hand-derived backward pass (extends seed section 3.4.1-3.4.2).

Layout as in conv2d.py: X is (R, H, W, C), the kernel W is (K_h, K_w, C, M) with M the depth
multiplier; output channel c M + m is input channel c filtered by its m-th kernel.

Forward (eq. 24, corrected for stride, without the sum over input channels):
    X'[r, h', w', c M + m] = b[c M + m]
                             + sum_{j, i} X[r, s h' + j - p, s w' + i - p, c] W[j, i, c, m]
    H' = (H - K + 2p) / s + 1   ("valid": p = 0; "same": H' = ceil(H / s), TF's asymmetric pad)
This is eq. 24 with the block-diagonal kernel W~[j, i, c, c M + m] = W[j, i, c, m] (zero for every
other channel pair), so the conv2d derivation holds channel by channel:
Backward:
    dX (eq. 25-27, stride erratum): the sum over c' in eq. 25 keeps only the M outputs of channel c,
        dX[r, h, w, c] = sum_{m, j, i: s h' + j - p = h, s w' + i - p = w}
                             delta[r, h', w', c M + m] W[j, i, c, m]
        a transposed convolution of each channel's deltas with its own kernels (delta dilated by
        s, convolved with the rotated kernel, padding cropped): DepthwiseConv2dNativeBackpropInput.
    dW (eq. 28, corrected: no sum over output channels):
        dW[j, i, c, m] = sum_{r, h', w'} X[r, s h' + j - p, s w' + i - p, c]
                                         delta[r, h', w', c M + m]
        a per-channel correlation of the input with delta: DepthwiseConv2dNativeBackpropFilter.
    db[c M + m] = sum_{r, h', w'} delta[r, h', w', c M + m]
Both kernels are the ones TensorFlow's own DepthwiseConv2dNative gradient calls.

Dilation d (stride 1): X'[h'] reads the rows h' + d j - p, all congruent to h' - p modulo d, so
the op splits into d_h d_w undilated depthwise convolutions, one per phase (a, b) of the padded
input X~ (zero-padded by p, then up to a multiple of d):
    X_ab[r, q, t, c] = X~[r, d q + a, d t + b, c]        (SpaceToBatchND: phases on the batch axis)
    X'[r, d q + a, d t + b, :] = conv_valid(X_ab, W)[r, q, t, :]   (BatchToSpaceND, then crop)
SpaceToBatchND (pad, permute) and BatchToSpaceND (permute, crop) are each other's adjoints, so the
backward maps delta to the phases with SpaceToBatchND, applies the undilated dX and dW above (dW's
sum over r now runs over every phase too, which is eq. 28's sum over all output positions), and
maps dX back with BatchToSpaceND. This is also how tf.nn.depthwise_conv2d runs dilations: TF's
CPU depthwise kernels have no dilation support except in float32.
"""

import keras
import tensorflow as tf

from handgrad.layers import activations
from handgrad.layers._common import conv_geometry, require_channels_last
from handgrad.layers.dense import activation_name
from handgrad.layers.softmax import softmax


def _phase_paddings(x, kernel_size, dilation, padding):
    """SpaceToBatchND paddings and BatchToSpaceND crops for a dilated stride-1 convolution."""
    base = []
    for k, d in zip(kernel_size, dilation):
        total = (k - 1) * d if padding == "SAME" else 0  # TF "same" at stride 1: ek - 1
        base.append([total // 2, total - total // 2])
    return tf.required_space_to_batch_paddings(tf.shape(x)[1:3], dilation, base_paddings=base)


def depthwise_conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1):
    """Depthwise convolution (plus bias) with the per-channel gradient of eq. 25-28.

    Args:
        x: `(R, H, W, C)`. kernel: `(K_h, K_w, C, M)`. bias: `(C M,)` or None.
        strides, dilation_rate: int or pair (not both > 1). padding: "valid" or "same".
    Returns: `(R, H', W', C M)`.
    """
    s, d, pad = conv_geometry(strides, padding, dilation_rate)
    dilated = d != (1, 1)
    strides4 = [1, *s, 1]
    pads = crops = None
    if dilated:  # the phases are convolved without padding: it is in the SpaceToBatch paddings
        pads, crops = _phase_paddings(x, tuple(kernel.shape[:2]), d, pad)
        pad = "VALID"

    @tf.custom_gradient
    def forward(x, kernel, *maybe_bias):
        xs = tf.space_to_batch_nd(x, d, pads) if dilated else x  # (d_h d_w R, H~/d_h, W~/d_w, C)
        y = tf.raw_ops.DepthwiseConv2dNative(
            input=xs, filter=kernel, strides=strides4, padding=pad)  # (R, H', W', C M)  eq. 24
        if dilated:
            y = tf.batch_to_space(y, d, crops)  # interleave the phases back: (R, H', W', C M)
        if maybe_bias:
            y = tf.nn.bias_add(y, maybe_bias[0])

        def backward(dy):  # dy: (R, H', W', C M)
            dys = tf.space_to_batch_nd(dy, d, crops) if dilated else dy  # adjoint of the crop
            # eq. 25-27 per channel: transposed convolution of delta with the channel's kernels
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=tf.shape(xs), filter=kernel, out_backprop=dys,
                strides=strides4, padding=pad)  # (R, H, W, C)
            if dilated:
                dx = tf.batch_to_space(dx, d, pads)  # adjoint of the phase split: (R, H, W, C)
            # eq. 28 per channel: correlate the input with delta: (K_h, K_w, C, M)
            dw = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
                input=xs, filter_sizes=tf.shape(kernel), out_backprop=dys,
                strides=strides4, padding=pad)
            if maybe_bias:
                return dx, dw, tf.reduce_sum(dy, axis=[0, 1, 2])  # (C M,)
            return dx, dw

        return y, backward

    return forward(x, kernel) if bias is None else forward(x, kernel, bias)


_ACTIVATION_OPS = {
    "linear": None, "relu": activations.relu, "sigmoid": activations.sigmoid,
    "tanh": activations.tanh, "softmax": softmax,
}


def activation_op(layer):
    """The handgrad op for `layer.activation` (None for linear); other activations are refused."""
    name = activation_name(layer.activation)
    if name not in _ACTIVATION_OPS:
        raise ValueError(f"handgrad {type(layer).__name__} supports activations "
                         f"{tuple(_ACTIVATION_OPS)}. Received: activation={name!r}")
    return _ACTIVATION_OPS[name]


def check_stride_dilation(layer):
    if max(layer.strides) > 1 and max(layer.dilation_rate) > 1:
        raise ValueError(
            f"handgrad {type(layer).__name__} does not support strides > 1 together with "
            f"dilation_rate > 1. Received: strides={layer.strides}, "
            f"dilation_rate={layer.dilation_rate}")


@keras.saving.register_keras_serializable(package="handgrad")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Depthwise convolution layer with the per-channel backward of eq. 25-28 (corrected).

    Args: those of `keras.layers.DepthwiseConv2D` (`kernel_size`, `strides`, `padding`,
        `depth_multiplier`, `dilation_rate`, `use_bias`, initializers, regularizers, constraints;
        same weight names `kernel`, `bias` and order). Supported: any kernel size, strides or
        dilation (not both > 1), `data_format="channels_last"`; `activation` one of
        None/"linear", "relu", "sigmoid", "tanh", "softmax", each applied with its handgrad op.
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, H', W', C * depth_multiplier)`.
    """

    def __init__(self, kernel_size, *args, **kwargs):
        super().__init__(kernel_size, *args, **kwargs)
        require_channels_last(self.data_format, "handgrad DepthwiseConv2D")
        check_stride_dilation(self)
        self._activation_op = activation_op(self)

    def call(self, inputs):
        kernel = tf.convert_to_tensor(self.kernel)
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias)
        y = depthwise_conv2d(inputs, kernel, bias, self.strides, self.padding, self.dilation_rate)
        return y if self._activation_op is None else self._activation_op(y)

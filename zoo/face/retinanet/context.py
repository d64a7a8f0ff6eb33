"""Context modules on the pyramid levels: RetinaFace's SSH module (Najibi et al. 2017, as Deng et
al. 2019 use it; biubug6 `models/net.py::SSH`, peteryuX `SSH`).

Each level P (C = 64 channels in both published models) gets three branches, whose receptive
fields are 3x3, 5x5 and 7x7 (two and three stacked 3x3 convolutions), concatenated:
    a = Conv3x3_{C/2}(P)                               (no activation)
    b = act(Conv3x3_{C/4}(P))                          shared by the 5x5 and 7x7 branches
    c = Conv3x3_{C/4}(b)                               (no activation)  -> 5x5
    d = act(Conv3x3_{C/4}(b)); e = Conv3x3_{C/4}(d)    (no activation)  -> 7x7
    out = ReLU(concat[a, c, e])                        (B, H, W, C)
"act" is the pyramid's (LeakyReLU(0.1) in both); each convolution has a bias, or no bias and a
batch norm (`pyramid.conv_unit`). b is computed once: biubug6's ONNX export duplicates its
convolution (`conv5X5_1.0` and `conv5X5_1.0_1`) with the same weights.
"""

import keras

import handgrad.layers
from handgrad.zoo.face.retinanet.pyramid import conv_unit


def ssh_context(x, name, layers=None, activation="leaky_relu", batch_norm=False,
                bn_momentum=0.99):
    """SSH module on one level: `(B, H, W, C)` -> `(B, H, W, C)`, C divisible by 4.

    Layer names: `{name}_conv3x3`, `_conv5x5_1`, `_conv5x5_2`, `_conv7x7_2`, `_conv7x7_3` (the
    authors' module names), `_concat`, `_relu`.
    """
    layers = handgrad.layers if layers is None else layers
    channels = x.shape[-1]
    if channels is None or channels % 4:
        raise ValueError(f"SSH context needs channels divisible by 4. Received: {channels}")
    unit = dict(layers=layers, kernel=3, batch_norm=batch_norm, bn_momentum=bn_momentum)
    a = conv_unit(x, filters=channels // 2, name=f"{name}_conv3x3", **unit)  # (B, H, W, C/2)
    b = conv_unit(x, filters=channels // 4, name=f"{name}_conv5x5_1", activation=activation,
                  **unit)  # (B, H, W, C/4)
    c = conv_unit(b, filters=channels // 4, name=f"{name}_conv5x5_2", **unit)
    d = conv_unit(b, filters=channels // 4, name=f"{name}_conv7x7_2", activation=activation,
                  **unit)
    e = conv_unit(d, filters=channels // 4, name=f"{name}_conv7x7_3", **unit)
    x = keras.layers.Concatenate(name=f"{name}_concat")([a, c, e])  # (B, H, W, C)
    return layers.ReLU(name=f"{name}_relu")(x)


def context_modules(features, levels, layers=None, activation="leaky_relu", batch_norm=False,
                    bn_momentum=0.99):
    """SSH on every level: [P_k] -> [P_k'], names ssh1, ssh2, ... from the finest level."""
    return [ssh_context(x, f"ssh{i}", layers, activation, batch_norm, bn_momentum)
            for i, (_, x) in enumerate(zip(levels, features, strict=True), start=1)]

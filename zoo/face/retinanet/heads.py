"""RetinaNet heads for the face detector.

Heads (seed section 3.5.2; RetinaNet has 4 hidden convolutions in each head, the seed 3 and 2),
shared across the pyramid levels (the same layer objects are applied to every level):
    classification: `num_cls_convs` x [Conv3x3(head_filters) + ReLU], then Conv3x3(A) -> one face
                    logit per anchor (the RetinaNet sigmoid form for K = 1 class; the seed's K + 1
                    softmax outputs would only add a redundant background output)
    regression:     `num_box_convs` x [Conv3x3(head_filters) + ReLU], then Conv3x3(4 A) -> the
                    encoded box `[t_y, t_x, t_h, t_w]` of each anchor (see box_ops.py)
Initialisation as RetinaNet: hidden and output kernels N(0, 0.01^2), biases 0, except the class
output bias b = -log((1 - pi) / pi) with prior pi = 0.01, so every anchor starts at p = pi and
the ~10^4 background anchors do not swamp the first iterations' loss.

`separable=True` (the mobile detector) makes every 3x3 head convolution depthwise-separable
(`layers.SeparableConv2D`, same layer names), initialised with the gain of the convolution it
replaces: depthwise N(0, 1/9) (unit gain, `pyramid.unit_gain_depthwise`), pointwise N(0, 0.03^2),
so Var out = 9 (1/9) C 0.03^2 Var in = 9 C 0.01^2 Var in, as for the full 3x3 N(0, 0.01^2) kernel.

The per-level outputs are flattened in the anchor order of anchors.py (level, row, column,
anchor) and concatenated: cls_logits `(B, A_total, 1)`, box_deltas `(B, A_total, 4)`.

RetinaFace's heads (`retinaface_heads`) are per level, not shared: one 1x1 convolution with bias
per output and level, no hidden convolutions, and a landmark output of 2 L values per anchor
(L points as (t_y, t_x), encoded like box centres: `postprocess.decode_keypoints`). Output channel
a K + k is value k of anchor a, as in the shared heads. The authors' 2-way softmax head becomes
one sigmoid face logit exactly (softmax([l0, l1])[1] = sigmoid(l1 - l0): w_face - w_background,
b_face - b_background; `retinaface_import.convert_head`).
"""

import math

import keras

import handgrad.layers
from handgrad.zoo.face.retinanet.pyramid import unit_gain_depthwise


def detection_heads(features, levels, num_anchors, head_filters=256, num_cls_convs=3,
                    num_box_convs=2, prior_probability=0.01, layers=None, separable=False):
    """Applies the shared class and box heads to every pyramid level.

    Args:
        features: [P_k for k in levels] symbolic tensors `(B, H_k, W_k, C)`.
        levels: the pyramid levels k (`Anchors.levels`), for the layer names.
        num_anchors: anchors per cell A (sizes per level x aspect ratios).
        head_filters, num_cls_convs, num_box_convs: the hidden convolutions.
        prior_probability: pi of the class output bias.
        layers: the layers namespace (default `handgrad.layers`).
        separable: depthwise-separable 3x3 convolutions.
    Returns: (cls_logits `(B, A_total, 1)`, box_deltas `(B, A_total, 4)`).
    """
    if not 0.0 < prior_probability < 1.0:
        raise ValueError(f"prior_probability must lie in (0, 1). "
                         f"Received: prior_probability={prior_probability}")
    layers = handgrad.layers if layers is None else layers

    def conv(filters, name, **kwargs):
        if separable:
            return layers.SeparableConv2D(
                filters, 3, padding="same", depthwise_initializer=unit_gain_depthwise(),
                pointwise_initializer=keras.initializers.RandomNormal(stddev=0.03), name=name,
                **kwargs)
        return layers.Conv2D(filters, 3, padding="same", name=name,
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                             **kwargs)

    def tower(prefix, n):
        return [conv(head_filters, f"{prefix}_conv{i + 1}", activation="relu") for i in range(n)]

    cls_tower, box_tower = tower("cls_head", num_cls_convs), tower("box_head", num_box_convs)
    prior_bias = -math.log((1.0 - prior_probability) / prior_probability)
    cls_out = conv(num_anchors, "cls_head_logits",
                   bias_initializer=keras.initializers.Constant(prior_bias))
    box_out = conv(4 * num_anchors, "box_head_deltas")

    cls_levels, box_levels = [], []
    for k, feature in zip(levels, features, strict=True):
        c = b = feature
        for conv in cls_tower:
            c = conv(c)
        for conv in box_tower:
            b = conv(b)
        c = cls_out(c)  # (B, H_k, W_k, A)
        b = box_out(b)  # (B, H_k, W_k, 4 A)
        cls_levels.append(keras.layers.Reshape((-1, 1), name=f"cls_flat_p{k}")(c))
        box_levels.append(keras.layers.Reshape((-1, 4), name=f"box_flat_p{k}")(b))
    # (B, H_k*W_k*A, 1) and (B, H_k*W_k*A, 4) per level -> (B, A_total, 1), (B, A_total, 4)
    cls_logits = keras.layers.Concatenate(axis=1, name="cls_logits")(cls_levels)
    box_deltas = keras.layers.Concatenate(axis=1, name="box_deltas")(box_levels)
    return cls_logits, box_deltas


def retinaface_heads(features, levels, num_anchors, num_landmarks=5, prior_probability=0.01,
                     layers=None):
    """Per-level 1x1 heads (module docstring).

    Args:
        features: [P_k for k in levels] symbolic tensors `(B, H_k, W_k, C)`.
        levels: the pyramid levels k, for the layer names (`cls_head_p3`, `box_head_p3`,
            `landmark_head_p3`, ...).
        num_anchors: anchors per cell A. num_landmarks: L points per face (0: no landmark head).
        prior_probability: pi of the class output bias (fresh weights only).
        layers: the layers namespace (default `handgrad.layers`).
    Returns: (cls_logits `(B, A_total, 1)`, box_deltas `(B, A_total, 4)`, landmark_deltas
        `(B, A_total, 2 L)` or None).
    """
    layers = handgrad.layers if layers is None else layers
    prior_bias = -math.log((1.0 - prior_probability) / prior_probability)
    outputs = {"cls": (1, prior_bias), "box": (4, 0.0)}
    if num_landmarks:
        outputs["landmark"] = (2 * num_landmarks, 0.0)
    flat = {head: [] for head in outputs}
    for k, feature in zip(levels, features, strict=True):
        for head, (per_anchor, bias) in outputs.items():
            y = layers.Conv2D(num_anchors * per_anchor, 1, name=f"{head}_head_p{k}",
                              kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                              bias_initializer=keras.initializers.Constant(bias))(feature)
            # (B, H_k, W_k, A K) -> (B, H_k W_k A, K)
            flat[head].append(keras.layers.Reshape((-1, per_anchor),
                                                   name=f"{head}_flat_p{k}")(y))
    names = {"cls": "cls_logits", "box": "box_deltas", "landmark": "landmark_deltas"}
    concat = {head: keras.layers.Concatenate(axis=1, name=names[head])(parts)
              for head, parts in flat.items()}  # (B, A_total, K)
    return concat["cls"], concat["box"], concat.get("landmark")

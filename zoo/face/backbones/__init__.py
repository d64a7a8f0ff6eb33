"""Backbones of the face detector, by name: `build_backbone("resnet18", ...)`.

A backbone is a preprocessing layer (images in [0, 1] -> what its weights expect) and a
functional `keras.Model` that returns one feature map C_k (stride 2^k) per requested level.
`BACKBONES` maps each name whose width the config sets to a builder `(levels, width,
input_shape, bn_momentum, layers, **options) -> (preprocess layer, model)`; `FIXED_BACKBONES`
holds those whose layout is fixed by the weights imported into them (`width` is ignored). Adding
a backbone means adding its module here and one entry.

    resnet18 / resnet34 / resnet50   width = channels of the first stage (64 in the paper)
    mobilenet_v1                     width = channels of conv1, 32 x the width multiplier
                                     (8: MobileNetV1-0.25, RetinaFace-MobileNet0.25's backbone;
                                     options activation / batch_norm / padding give biubug6's
                                     exactly, see mobilenet.py)
    mobilenet_v2_retinaface          keras.applications.MobileNetV2 (alpha 1.0) tapped at
                                     block_5/12/15_add, peteryuX's RetinaFace backbone

`PREPROCESSING` maps the input conventions a config may force on any backbone ("caffe_bgr":
biubug6's BGR minus (104, 117, 123); "symmetric": 2 x - 1) to their layers; "backbone" keeps the
backbone's own.
"""

import functools

import keras

from handgrad.zoo.face.backbones import mobilenet, mobilenet_v2, resnet

DEFAULT_OPTIONS = {"activation": "relu", "batch_norm": True, "padding": "same"}


def _resnet(depth, levels, width, input_shape, bn_momentum, layers):
    model = resnet.resnet_backbone(depth, input_shape=input_shape, layers=layers,
                                   base_filters=width, bn_momentum=bn_momentum,
                                   levels=tuple(levels))
    return resnet.ImageNetPreprocess(name="imagenet_preprocess"), model


def _mobilenet_v1(levels, width, input_shape, bn_momentum, layers, **options):
    model = mobilenet.mobilenet_v1_backbone(width, input_shape, layers, bn_momentum,
                                            tuple(levels), **options)
    return mobilenet.MobileNetPreprocess(name="mobilenet_preprocess"), model


def _mobilenet_v2_retinaface(levels, width, input_shape, bn_momentum, layers):
    del width  # fixed: alpha 1.0, the imported weights' layout
    model = mobilenet_v2.mobilenet_v2_backbone(input_shape, layers, bn_momentum, tuple(levels))
    return mobilenet.MobileNetPreprocess(name="mobilenet_preprocess"), model


BACKBONES = {
    "resnet18": functools.partial(_resnet, 18),
    "resnet34": functools.partial(_resnet, 34),
    "resnet50": functools.partial(_resnet, 50),
    "mobilenet_v1": _mobilenet_v1,
}
FIXED_BACKBONES = {"mobilenet_v2_retinaface": _mobilenet_v2_retinaface}
WITH_OPTIONS = ("mobilenet_v1",)  # the backbones that take activation / batch_norm / padding
PREPROCESSING = {
    "caffe_bgr": lambda: mobilenet.BgrMeanPreprocess(name="bgr_mean_preprocess"),
    "symmetric": lambda: mobilenet.MobileNetPreprocess(name="mobilenet_preprocess"),
}
INPUT_CONVENTIONS = ("backbone", *PREPROCESSING)


def names():
    """Every backbone name, sorted."""
    return sorted({**BACKBONES, **FIXED_BACKBONES})


def build_backbone(name, levels, width=64, input_shape=(None, None, 3), bn_momentum=0.99,
                   freeze_bn=False, layers=None, input_convention="backbone", **options):
    """(preprocess layer, backbone model) for the backbone `name`.

    Args:
        name: a key of `BACKBONES` or `FIXED_BACKBONES`.
        levels: the feature maps to output, C_k for k in levels (a subset of 2..5).
        width: channels of the first stage (ResNet) or first convolution (MobileNetV1).
        bn_momentum: of the running statistics.
        freeze_bn: run the batch norms on their running statistics (small batches with
            pretrained weights, as RetinaNet).
        layers: the layers namespace (`handgrad.layers`, or `keras.layers` for the twin).
        input_convention: "backbone" (its own preprocessing) or a key of `PREPROCESSING`.
        options: activation, batch_norm, padding (`mobilenet.mobilenet_v1_backbone`); other
            backbones take only the defaults.
    """
    if name not in BACKBONES and name not in FIXED_BACKBONES:
        # width-configurable ones first, then the fixed layouts
        raise ValueError(f"backbone must be one of {sorted(BACKBONES) + sorted(FIXED_BACKBONES)}"
                         f". Received: {name!r}")
    if input_convention not in INPUT_CONVENTIONS:
        raise ValueError(f"input_convention must be one of {list(INPUT_CONVENTIONS)}. "
                         f"Received: {input_convention!r}")
    chosen = {k: v for k, v in options.items() if v != DEFAULT_OPTIONS.get(k, v)}
    if chosen and name not in WITH_OPTIONS:
        raise ValueError(f"backbone {name!r} takes no options (only {list(WITH_OPTIONS)} do). "
                         f"Received: {chosen}")
    builder = BACKBONES.get(name) or FIXED_BACKBONES[name]
    preprocess, model = builder(levels, width, input_shape, bn_momentum, layers,
                                **(options if name in WITH_OPTIONS else {}))
    if input_convention != "backbone":
        preprocess = PREPROCESSING[input_convention]()
    if freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return preprocess, model

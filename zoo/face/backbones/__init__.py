"""Backbones of the face detector, by name: `build_backbone("resnet18", ...)`.

A backbone is a preprocessing layer (images in [0, 1] -> what its weights expect) and a
functional `keras.Model` that returns one feature map C_k (stride 2^k) per requested level.
`BACKBONES` maps each name to a builder `(levels, width, input_shape, bn_momentum, layers) ->
(preprocess layer, model)`; adding a backbone means adding its module here and one entry.

    resnet18 / resnet34 / resnet50   width = channels of the first stage (64 in the paper)
    mobilenet_v1                     width = channels of conv1, 32 x the width multiplier
                                     (8: MobileNetV1-0.25, RetinaFace-MobileNet0.25's backbone)
"""

import functools

import keras

from handgrad.zoo.face.backbones import mobilenet, resnet


def _resnet(depth, levels, width, input_shape, bn_momentum, layers):
    model = resnet.resnet_backbone(depth, input_shape=input_shape, layers=layers,
                                   base_filters=width, bn_momentum=bn_momentum,
                                   levels=tuple(levels))
    return resnet.ImageNetPreprocess(name="imagenet_preprocess"), model


def _mobilenet_v1(levels, width, input_shape, bn_momentum, layers):
    model = mobilenet.mobilenet_v1_backbone(width, input_shape, layers, bn_momentum,
                                            tuple(levels))
    return mobilenet.MobileNetPreprocess(name="mobilenet_preprocess"), model


BACKBONES = {
    "resnet18": functools.partial(_resnet, 18),
    "resnet34": functools.partial(_resnet, 34),
    "resnet50": functools.partial(_resnet, 50),
    "mobilenet_v1": _mobilenet_v1,
}


def build_backbone(name, levels, width=64, input_shape=(None, None, 3), bn_momentum=0.99,
                   freeze_bn=False, layers=None):
    """(preprocess layer, backbone model) for the backbone `name`.

    Args:
        name: a key of `BACKBONES`.
        levels: the feature maps to output, C_k for k in levels (a subset of 2..5).
        width: channels of the first stage (ResNet) or first convolution (MobileNet).
        bn_momentum: of the running statistics.
        freeze_bn: run the batch norms on their running statistics (small batches with
            pretrained weights, as RetinaNet).
        layers: the layers namespace (`handgrad.layers`, or `keras.layers` for the twin).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}. Received: {name!r}")
    preprocess, model = BACKBONES[name](levels, width, input_shape, bn_momentum, layers)
    if freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return preprocess, model

"""Backbones of the face detector, by name: `build_backbone("resnet18", ...)`.

A backbone is a preprocessing layer (images in [0, 1] -> what its weights expect) and a
functional `keras.Model` that returns one feature map C_k (stride 2^k) per requested level.
Adding a backbone means adding one entry to `BACKBONES` and its builder module here.
"""

import keras

from handgrad.zoo.face.backbones import resnet

BACKBONES = {
    "resnet18": (resnet.ImageNetPreprocess, 18),
    "resnet34": (resnet.ImageNetPreprocess, 34),
    "resnet50": (resnet.ImageNetPreprocess, 50),
}


def build_backbone(name, levels, width=64, input_shape=(None, None, 3), bn_momentum=0.99,
                   freeze_bn=False, layers=None):
    """(preprocess layer, backbone model) for the backbone `name`.

    Args:
        name: a key of `BACKBONES`.
        levels: the feature maps to output, C_k for k in levels (a subset of 2..5).
        width: channels of the first stage. bn_momentum: of the running statistics.
        freeze_bn: run the batch norms on their running statistics (small batches with
            pretrained weights, as RetinaNet).
        layers: the layers namespace (`handgrad.layers`, or `keras.layers` for the twin).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}. Received: {name!r}")
    preprocess, depth = BACKBONES[name]
    model = resnet.resnet_backbone(depth, input_shape=input_shape, layers=layers,
                                   base_filters=width, bn_momentum=bn_momentum,
                                   levels=tuple(levels))
    if freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return preprocess(name="imagenet_preprocess"), model

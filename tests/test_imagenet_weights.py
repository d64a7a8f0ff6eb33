"""ImageNet weight copy: a randomly initialised keras.applications.ResNet50 (weights=None, no
download) is copied into the handgrad backbone; the feature maps must then equal Keras' own."""

import keras
import numpy as np
import pytest

from handgrad.zoo.face.backbones import imagenet_weights, resnet


def _randomise_batch_norm_statistics(model, rng):
    # Fresh BN layers have mean 0 / variance 1 / gamma 1 / beta 0, which would hide a swapped
    # or skipped statistic: give every BN weight distinct values.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


def test_copy_resnet50_feature_maps_equal_keras():
    rng = np.random.default_rng(0)
    reference = keras.applications.ResNet50(include_top=False, weights=None,
                                            input_shape=(64, 64, 3))
    _randomise_batch_norm_statistics(reference, rng)
    taps = keras.Model(reference.input, [reference.get_layer(n).output for n in
                                         ("conv3_block4_out", "conv4_block6_out",
                                          "conv5_block3_out")])
    backbone = resnet.resnet_backbone(50, input_shape=(64, 64, 3))
    assert len(backbone.weights) == len(reference.weights)

    copied = imagenet_weights.copy_resnet50_weights(backbone, reference)
    assert copied == 106  # 53 convolutions + 53 batch norms

    x = rng.normal(0, 50, (2, 64, 64, 3)).astype(np.float32)
    expected = taps(x, training=False)
    got = backbone(x, training=False)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        scale = np.abs(e.numpy()).max()
        np.testing.assert_allclose(g.numpy() / scale, e.numpy() / scale, atol=1e-4)


def test_copy_into_resnet18_raises():
    reference = keras.applications.ResNet50(include_top=False, weights=None,
                                            input_shape=(32, 32, 3))
    backbone = resnet.resnet_backbone(18, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="differ|no counterpart"):
        imagenet_weights.copy_resnet50_weights(backbone, reference)


def test_missing_file_raises():
    backbone = resnet.resnet_backbone(18, input_shape=(32, 32, 3), base_filters=8)
    with pytest.raises(FileNotFoundError, match="No ResNet50 weights file"):
        imagenet_weights.copy_resnet50_weights(backbone, "/nonexistent/resnet50.h5")

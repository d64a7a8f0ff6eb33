"""Mobile detector: the MobileNetV1-0.25 backbone against `keras.applications.MobileNet(alpha=0.25)`
(same layers, weights and features), its strides and channels at literal sizes, the mobile
detector (separable pyramid and heads) against its stock-Keras twin (outputs and every gradient of
the eq. 61 loss), its parameter count by hand, saving, and the backbone registry."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from detector_twins import FLOAT64_BOUND, float64_policy, outputs_and_gradients

from handgrad.zoo.face.backbones import BACKBONES, build_backbone, mobilenet
from handgrad.zoo.face.retinanet import named_configs, pyramid
from handgrad.zoo.face.retinanet.anchors import Anchors
from handgrad.zoo.face.retinanet.heads import detection_heads
from handgrad.zoo.face.retinanet.model import FaceDetector
from handgrad.zoo.run import registry

FACES = tf.constant([[[10.0, 12.0, 40.0, 38.0], [60.0, 64.0, 100.0, 96.0]],
                     [[30.0, 30.0, 50.0, 50.0], [0, 0, 0, 0]]])
NUM_FACES = tf.constant([2, 1])


@pytest.fixture(scope="module")
def keras_mobilenet():
    with float64_policy():
        return keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None,
                                            input_shape=(96, 128, 3))


@pytest.mark.parametrize("height, width, expected", [
    (96, 128, [(24, 32, 32), (12, 16, 64), (6, 8, 128), (3, 4, 256)]),
    # odd sides: "same" stride-2 convolutions give ceil(side / 2^k)
    (100, 70, [(25, 18, 32), (13, 9, 64), (7, 5, 128), (4, 3, 256)]),
], ids=["96x128", "100x70_odd"])
def test_backbone_strides_and_channels(height, width, expected):
    _, backbone = build_backbone("mobilenet_v1", (2, 3, 4, 5), width=8)
    outputs = backbone(np.zeros((1, height, width, 3), np.float32))
    assert [tuple(o.shape[1:]) for o in outputs] == expected


def test_backbone_is_keras_applications_mobilenet_025(keras_mobilenet):
    """Same weights layer for layer (names, shapes, order, count), and with the same random
    weights in both, the same C3, C4, C5 as Keras' conv_pw_5/11/13 outputs. Kernels of variance
    1 / fan-in keep every activation below 6, where Keras' ReLU6 would differ from the ReLU.
    Both in float64 (detector_twins: float32 rounding depends on the CPU's kernels)."""
    with float64_policy():
        _, ours = build_backbone("mobilenet_v1", (3, 4, 5), width=8, input_shape=(96, 128, 3))
    theirs = {layer.name: layer for layer in keras_mobilenet.layers if layer.weights}
    mine = [layer for layer in ours.layers if layer.weights]
    assert [layer.name for layer in mine] == list(theirs)
    assert ours.count_params() == keras_mobilenet.count_params() == 218_544
    rng = np.random.default_rng(0)
    for layer in mine:
        if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance
            n = [rng.normal(size=w.shape) for w in layer.get_weights()]
            weights = [1 + 0.1 * n[0], 0.1 * n[1], 0.1 * n[2], 1 + 0.1 * np.abs(n[3])]
        else:
            (kernel,) = layer.get_weights()
            fan_in = np.prod(kernel.shape[:2]) * (1 if kernel.shape[3] == 1 else kernel.shape[2])
            weights = [rng.normal(size=kernel.shape) / np.sqrt(fan_in)]
        theirs[layer.name].set_weights(weights)
        layer.set_weights(weights)
    x = rng.random((2, 96, 128, 3))  # float64
    reference = keras.Model(keras_mobilenet.input, [keras_mobilenet.get_layer(
        f"conv_pw_{i}_relu").output for i in (5, 11, 13)])(x)
    expected = [r.numpy() for r in reference]
    assert 0.1 < min(e.max() for e in expected) and max(e.max() for e in expected) < 6.0
    for got, want in zip(ours(x), expected, strict=True):
        assert got.dtype == tf.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def _batch_targets(model, images):
    per_image = [model.target_fn(images[i], FACES[i], NUM_FACES[i]) for i in range(len(images))]
    return {k: tf.stack([t[k] for t in per_image]) for k in per_image[0]}


def test_mobile_detector_matches_stock_keras_twin():
    """The face_mobile_synthetic network (MobileNetV1-0.25, separable pyramid and heads) with the
    same weights: the same outputs, and the same gradient of eq. 61 for every variable. Both twins
    compute in float64 (detector_twins: float32 rounding alone reached 2.2e-4 of conv1_bn/gamma's
    gradient on some CPUs); measured <= 1e-13 of each gradient's scale, bound 1e-9."""
    keras.utils.set_random_seed(0)
    with float64_policy():
        ours = FaceDetector(model=named_configs.mobile_model())
        twin = FaceDetector(model=named_configs.mobile_model(), layers="keras")
        assert isinstance(ours.network.get_layer("cls_head_conv1"), keras.layers.SeparableConv2D)
        twin.set_weights(ours.get_weights())
        images = tf.constant(np.random.default_rng(1).random((2, 128, 128, 3)))  # float64
        targets = _batch_targets(ours, images)
        _, grads = outputs_and_gradients(ours, twin, images, targets, (128, 128))
    largest = max(np.abs(g.numpy()).max() for g in grads[1])
    for v, g0, g1 in zip(ours.trainable_variables, grads[0], grads[1], strict=True):
        assert g0.dtype == g1.dtype == tf.float64, v.path
        scale = max(np.abs(g1.numpy()).max(), 1e-6 * largest)
        np.testing.assert_allclose(g0.numpy() / scale, g1.numpy() / scale, rtol=0,
                                   atol=FLOAT64_BOUND, err_msg=v.path)


def _separable(c_in, c_out):
    return 9 * c_in + c_in * c_out + c_out  # 3x3 depthwise, 1x1 pointwise, bias


def test_mobile_detector_parameter_count():
    """0.30 M weights (RetinaFace-MobileNet0.25: ~0.4 M with its SSH context modules and
    landmark head), counted by hand from the layout."""
    backbone = 218_544  # keras.applications.MobileNet(alpha=0.25, include_top=False)
    laterals = sum(c * 64 + 64 for c in (64, 128, 256))  # 1x1 on C3, C4, C5
    pyramid = 3 * _separable(64, 64) + _separable(256, 64)  # P3-P5 outputs, P6 from C5
    heads = 4 * _separable(64, 64) + _separable(64, 3) + _separable(64, 12)  # A = 3 anchors
    model = FaceDetector(model=named_configs.mobile_model())
    assert model.count_params() == backbone + laterals + pyramid + heads == 301_439


def test_mobile_detector_saves_and_reloads(tmp_path):
    model = FaceDetector(model=named_configs.mobile_model(), anchors=dict(strides=(8, 16, 32)))
    images = np.random.default_rng(2).random((1, 64, 96, 3)).astype(np.float32)
    path = tmp_path / "mobile.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.network.get_layer("mobilenet_preprocess"),
                      mobilenet.MobileNetPreprocess)
    for key in ("cls_logits", "box_deltas"):
        np.testing.assert_allclose(loaded(images)[key].numpy(), model(images)[key].numpy(),
                                   atol=1e-6)


def test_registry_and_bad_arguments():
    assert set(BACKBONES) == {"resnet18", "resnet34", "resnet50", "mobilenet_v1"}
    with pytest.raises(ValueError, match=r"backbone must be one of \['mobilenet_v1', "
                                         r"'resnet18', .*\]\. Received: 'mobilenet_v2'"):
        build_backbone("mobilenet_v2", (3, 4, 5))
    with pytest.raises(ValueError, match=r"levels must be a non-empty subset of 2\.\.5\. "
                                         r"Received: levels=\(3, 6\)"):
        build_backbone("mobilenet_v1", (3, 6), width=8)
    with pytest.raises(ValueError, match=r"width must be a positive int .* Received: width=0"):
        build_backbone("mobilenet_v1", (3, 4, 5), width=0)
    _, frozen = build_backbone("mobilenet_v1", (3, 4, 5), width=8, freeze_bn=True)
    bns = [layer for layer in frozen.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 27 and not any(layer.trainable for layer in bns)


@pytest.mark.parametrize("mobile, small", [
    ("face_mobile_synthetic", "face_small_synthetic"),
    ("face_mobile_wider_geometry", "face_small_wider_geometry"),
    ("face_mobile_wider_geometry_improved", "face_small_wider_geometry_improved")])
def test_mobile_configs_differ_from_the_resnet18_ones_only_in_the_network(mobile, small):
    """The accuracy comparison is fair: same anchors, data, loss, steps and schedule as the
    ResNet18; only the network and (face_mobile_synthetic, swept) its learning rate differ."""
    ours, theirs = registry.get_config(mobile), registry.get_config(small)
    assert ours.model.backbone == "mobilenet_v1" and theirs.model.backbone == "resnet18"
    same_rate = dataclasses.replace(ours.training, learning_rate=theirs.training.learning_rate)
    assert dataclasses.replace(ours, model=theirs.model, training=same_rate) == theirs


def test_face_mobile_wider_has_retinaface_mobile_anchors():
    """RetinaFace-MobileNet0.25 (biubug6 data/config.py): min_sizes [[16, 32], [64, 128],
    [256, 512]] on steps [8, 16, 32]."""
    config = registry.get_config("face_mobile_wider")
    anchors = Anchors(**dataclasses.asdict(config.anchors))
    assert anchors.strides == (8, 16, 32)
    np.testing.assert_allclose(anchors.sizes_per_level, [(16, 32), (64, 128), (256, 512)],
                               rtol=1e-6)


@pytest.mark.parametrize("part", ["heads", "pyramid"])
def test_separable_layers_start_with_the_gain_of_the_full_convolutions(part):
    """At initialisation the separable pyramid and heads scale their outputs as the full 3x3
    convolutions do (RetinaNet's N(0, 0.01^2) heads, Glorot pyramid): no batch norm there would
    undo a smaller start (Keras' depthwise default is ~sqrt(C) times too small)."""
    c3, c4, c5 = (keras.Input((s, s, 64 * 2**i)) for i, s in enumerate((32, 16, 8)))
    x = [np.random.default_rng(i).normal(size=(4, *t.shape[1:])).astype(np.float32)
         for i, t in enumerate((c3, c4, c5))]
    spread = []
    for separable in (False, True):
        keras.utils.set_random_seed(3)
        p = pyramid.feature_pyramid([c3, c4, c5], (3, 4, 5, 6), 64, separable=separable)
        if part == "heads":
            p = list(detection_heads(p, (3, 4, 5, 6), 3, 64, 2, 2, separable=separable))
        spread.append([float(np.std(out)) for out in keras.Model([c3, c4, c5], p)(x)])
    np.testing.assert_allclose(spread[1], spread[0], rtol=0.25)

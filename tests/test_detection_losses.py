"""Focal loss, smooth L1 and the eq. 61 detection loss against independent references: NumPy
forward passes, TF autodiff of independently written formulas, and float64 finite differences."""

import numpy as np
import pytest
import tensorflow as tf

from handgrad.losses import detection

RNG = np.random.default_rng(0)
LOGITS = np.concatenate([np.linspace(-8, 8, 17), RNG.normal(0, 3, 15)]).astype(np.float64)
LABELS = (np.arange(32) % 2).astype(np.float64)


def _focal_numpy(y, x, alpha, gamma):
    p = 1.0 / (1.0 + np.exp(-x))
    pt = np.where(y == 1, p, 1 - p)
    at = np.where(y == 1, alpha, 1 - alpha)
    return -at * (1 - pt) ** gamma * np.log(pt)


def _focal_reference_tf(y, x, alpha, gamma):
    """Written as in the RetinaNet paper, differentiated by TF's autodiff (no custom gradient)."""
    p = tf.sigmoid(x)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x)  # -log p_t
    pt = y * p + (1 - y) * (1 - p)
    at = y * alpha + (1 - y) * (1 - alpha)
    return at * (1 - pt) ** gamma * ce


CASES = [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0), (0.25, 0.5)]
IDS = ["retinanet_a025_g2", "a05_g0_is_half_bce", "a075_g1", "a025_g05"]


@pytest.mark.parametrize("alpha, gamma", CASES, ids=IDS)
def test_focal_forward_matches_numpy(alpha, gamma):
    got = detection.sigmoid_focal_loss(LABELS, tf.constant(LOGITS), alpha, gamma).numpy()
    np.testing.assert_allclose(got, _focal_numpy(LABELS, LOGITS, alpha, gamma), rtol=1e-10)


@pytest.mark.parametrize("alpha, gamma", CASES, ids=IDS)
def test_focal_gradient_matches_autodiff(alpha, gamma):
    x = tf.constant(LOGITS)
    dy = tf.constant(RNG.normal(size=LOGITS.shape))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(detection.sigmoid_focal_loss(LABELS, x, alpha, gamma) * dy)
        ref = tf.reduce_sum(_focal_reference_tf(LABELS, x, alpha, gamma) * dy)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy(),
                               rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("alpha, gamma", CASES, ids=IDS)
def test_focal_gradient_matches_finite_differences(alpha, gamma):
    x = tf.constant(np.clip(LOGITS, -5, 5)[:12])
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: detection.sigmoid_focal_loss(LABELS[:12], t, alpha, gamma), [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-7)


def test_focal_alpha_outside_unit_interval_raises():
    with pytest.raises(ValueError, match="alpha"):
        detection.sigmoid_focal_loss(LABELS, tf.constant(LOGITS), alpha=3.0)


DELTAS = [1.0, 0.11]
X = np.array([-3.0, -1.2, -0.7, -0.05, 0.0, 0.03, 0.4, 0.9, 1.3, 5.0, -0.1, 0.2])


def _smooth_l1_reference(x, delta):
    """0.5 min(|x|, d)^2 / d + (|x| - min(|x|, d)): a different formula with the same values."""
    m = tf.minimum(tf.abs(x), delta)
    return 0.5 * m * m / delta + (tf.abs(x) - m)


@pytest.mark.parametrize("delta", DELTAS, ids=["eq59_delta1", "retinanet_delta011"])
def test_smooth_l1_forward_matches_numpy(delta):
    expected = np.where(np.abs(X) < delta, 0.5 * X**2 / delta, np.abs(X) - 0.5 * delta)
    np.testing.assert_allclose(detection.smooth_l1(tf.constant(X), delta).numpy(), expected)
    np.testing.assert_allclose(detection.smooth_l1(tf.constant([0.5, -2.0])).numpy(), [0.125, 1.5])


@pytest.mark.parametrize("delta", DELTAS, ids=["eq59_delta1", "retinanet_delta011"])
def test_smooth_l1_gradient_matches_autodiff_and_finite_differences(delta):
    x = tf.constant(X)
    dy = tf.constant(RNG.normal(size=X.shape))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(detection.smooth_l1(x, delta) * dy)
        ref = tf.reduce_sum(_smooth_l1_reference(x, delta) * dy)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy(),
                               rtol=1e-12)
    away = tf.constant(X[np.abs(np.abs(X) - delta) > 0.02])  # not on the kink at |x| = delta
    theoretical, numerical = tf.test.compute_gradient(lambda t: detection.smooth_l1(t, delta),
                                                      [away])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-8)


# One image, four anchors: levels (0, 0, 1, 1); targets face, background, ignored, background.
CLS_T = np.array([[1.0, 0.0, -1.0, 0.0]])
LOGIT = np.array([[0.0, 0.0, 5.0, 0.0]])
BOX_T = np.array([[[0.5, -2.0, 0.0, 0.0], [9, 9, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]]])
BOX_P = np.zeros((1, 4, 4))
LEVELS = np.array([0, 0, 1, 1])
FL_POS = -0.25 * 0.25 * np.log(0.5)  # y = 1, p = 0.5
FL_NEG = -0.75 * 0.25 * np.log(0.5)  # y = 0, p = 0.5
L1 = 0.125 + 1.5  # smooth L1 of (-0.5, 2, 0, 0)


@pytest.mark.parametrize(
    "normalization, cls_expected, box_expected",
    [
        ("positives", FL_POS + 2 * FL_NEG, L1),  # N_pos = 1
        # N_c = (2, 1), N_r = (1, 0 floored to 1)
        ("per_level", (FL_POS + FL_NEG) / 2 + FL_NEG / 1, L1 / 1 + 0.0),
    ],
    ids=["retinanet_positives", "seed_per_level"],
)
def test_detection_loss_literal(normalization, cls_expected, box_expected):
    out = detection.detection_loss(CLS_T, BOX_T, tf.constant(LOGIT), tf.constant(BOX_P),
                                   level_ids=LEVELS, num_levels=2, normalization=normalization)
    np.testing.assert_allclose(out["cls_loss"].numpy(), cls_expected, rtol=1e-12)
    np.testing.assert_allclose(out["box_loss"].numpy(), box_expected, rtol=1e-12)
    np.testing.assert_allclose(out["loss"].numpy(), cls_expected + box_expected, rtol=1e-12)


@pytest.mark.parametrize("normalization", ["positives", "per_level"])
def test_detection_loss_gradient_matches_finite_differences(normalization):
    cls_t = np.array([[1.0, 0.0, -1.0, 0.0, 1.0, 0.0]])
    box_t = RNG.normal(size=(1, 6, 4))
    levels = np.array([0, 0, 0, 1, 1, 1])
    logits = tf.constant(RNG.normal(size=(1, 6, 1)))
    deltas = tf.constant(box_t + RNG.uniform(0.1, 0.6, size=(1, 6, 4)) * RNG.choice([-1, 1, 3],
                                                                                 (1, 6, 4)))

    def loss(lg, bd):
        return detection.detection_loss(cls_t, box_t, lg, bd, levels, 2, normalization)["loss"]

    theoretical, numerical = tf.test.compute_gradient(loss, [logits, deltas])
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-7)


def test_per_level_needs_level_ids():
    with pytest.raises(ValueError, match="level_ids"):
        detection.detection_loss(CLS_T, BOX_T, tf.constant(LOGIT), tf.constant(BOX_P),
                                 normalization="per_level")

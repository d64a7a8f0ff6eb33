"""Cross-entropy and L2 losses (eq. 8, 17, 56-57): forward and hand-derived gradients against
stock Keras losses differentiated by TF autodiff, central finite differences in float64, NumPy
and literal hand-computed values."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from handgrad import losses as hg

RNG = np.random.default_rng(0)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _grad(loss_fn, y_true, y_pred):
    y_pred = tf.convert_to_tensor(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = loss_fn(y_true, y_pred)
    return loss.numpy(), tape.gradient(loss, y_pred).numpy()


def _case(batch=4, classes=5, dtype=np.float64):
    logits = RNG.normal(size=(batch, classes)) * 2
    labels = RNG.integers(0, classes, size=batch)
    one_hot = np.eye(classes)[labels]
    soft = _softmax(RNG.normal(size=(batch, classes)))
    return logits.astype(dtype), labels, one_hot.astype(dtype), soft.astype(dtype)


@pytest.mark.parametrize("target", ["one_hot", "soft_labels"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_categorical_matches_stock_keras_and_autodiff(from_logits, target):
    logits, _, one_hot, soft = _case()
    y = one_hot if target == "one_hot" else soft
    pred = logits if from_logits else _softmax(logits)
    ours = hg.CategoricalCrossentropy(from_logits=from_logits, dtype="float64")
    stock = keras.losses.CategoricalCrossentropy(from_logits=from_logits, dtype="float64")
    loss, grad = _grad(ours, y, pred)
    ref_loss, ref_grad = _grad(stock, y, pred)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("label_shape", ["flat", "trailing_1"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_sparse_matches_stock_keras_and_autodiff(from_logits, label_shape):
    logits, labels, _, _ = _case()
    y = labels if label_shape == "flat" else labels[:, None]
    pred = logits if from_logits else _softmax(logits)
    ours = hg.SparseCategoricalCrossentropy(from_logits=from_logits, dtype="float64")
    stock = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, dtype="float64")
    loss, grad = _grad(ours, y, pred)
    ref_loss, ref_grad = _grad(stock, y, pred)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_logits_gradient_is_softmax_minus_labels_over_batch():
    logits, _, one_hot, _ = _case(batch=3)
    _, grad = _grad(hg.CategoricalCrossentropy(from_logits=True, dtype="float64"), one_hot,
                    logits)
    np.testing.assert_allclose(grad, (_softmax(logits) - one_hot) / 3, rtol=1e-12, atol=1e-15)


def test_probs_literal_values():
    # y = (0, 1, 0), p = (0.2, 0.5, 0.3): L = -log 0.5; eq. 57: dL/dq = (0, -2, 0); through the
    # renormalisation q = p / sum(p) (sum = 1): dL/dp = dL/dq - sum(dL/dq q) = (1, -1, 1).
    y = np.array([[0.0, 1.0, 0.0]])
    p = np.array([[0.2, 0.5, 0.3]])
    loss, grad = _grad(hg.CategoricalCrossentropy(dtype="float64"), y, p)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-12)
    np.testing.assert_allclose(grad, [[1.0, -1.0, 1.0]], rtol=1e-12)


@pytest.mark.parametrize("fn, pred_kind", [
    (hg.categorical_crossentropy_from_logits, "logits"),
    (hg.categorical_crossentropy_from_probs, "unnormalised_probs"),
    (hg.l2, "values"),
])
def test_finite_differences_float64(fn, pred_kind):
    logits, _, _, soft = _case(batch=3, classes=4)
    pred = logits if pred_kind != "unnormalised_probs" else _softmax(logits) * 1.7
    soft = soft * RNG.uniform(0.5, 1.5, size=(3, 1))  # labels not summing to 1: full formula
    y = tf.constant(soft)
    weights = tf.constant(RNG.normal(size=3))  # a non-uniform upstream gradient per sample

    def f_pred(p):
        return tf.reduce_sum(fn(y, p) * weights)

    def f_true(t):
        return tf.reduce_sum(fn(t, tf.constant(pred)) * weights)

    for f, x in ((f_pred, pred), (f_true, soft)):
        theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(x)], delta=1e-6)
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-8)


def test_l2_literal_and_against_keras_mse():
    # eq. 8: ||(0.5, 0.25) - (1, 0)||^2 = 0.25 + 0.0625; eq. 17: 2 (y^ - y) = (-1, 0.5)
    loss, grad = _grad(hg.L2(dtype="float64"), np.array([[1.0, 0.0]]), np.array([[0.5, 0.25]]))
    np.testing.assert_allclose(loss, 0.3125, rtol=1e-12)
    np.testing.assert_allclose(grad, [[-1.0, 0.5]], rtol=1e-12)
    _, _, y, pred = _case(batch=4, classes=6)
    loss, grad = _grad(hg.L2(dtype="float64"), y, pred)
    ref_loss, ref_grad = _grad(keras.losses.MeanSquaredError(dtype="float64"), y, pred)
    np.testing.assert_allclose(loss, 6 * ref_loss, rtol=1e-12)  # sum over D = 6 x mean
    np.testing.assert_allclose(grad, 6 * ref_grad, rtol=1e-12)


def test_stable_with_extreme_logits_and_zero_probabilities():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 5.0]], np.float32)
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    loss, grad = _grad(hg.CategoricalCrossentropy(from_logits=True), y, logits)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, (2000.0 + 2e4) / 2, rtol=1e-6)  # -log softmax, by hand
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    loss, grad = _grad(hg.CategoricalCrossentropy(), y, probs)
    ref_loss, ref_grad = _grad(keras.losses.CategoricalCrossentropy(), y, probs)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, -np.log(keras.config.epsilon()), rtol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)


def test_label_smoothing_matches_stock():
    logits, _, one_hot, _ = _case()
    for from_logits in (True, False):
        pred = logits if from_logits else _softmax(logits)
        kwargs = dict(from_logits=from_logits, label_smoothing=0.1, dtype="float64")
        loss, grad = _grad(hg.CategoricalCrossentropy(**kwargs), one_hot, pred)
        ref_loss, ref_grad = _grad(keras.losses.CategoricalCrossentropy(**kwargs), one_hot, pred)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_sparse_label_smoothing_and_sparse_l2():
    logits, labels, one_hot, _ = _case()
    kwargs = dict(from_logits=True, label_smoothing=0.1, dtype="float64")
    loss, grad = _grad(hg.SparseCategoricalCrossentropy(**kwargs), labels, logits)
    ref_loss, ref_grad = _grad(keras.losses.CategoricalCrossentropy(**kwargs), one_hot, logits)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)
    # eq. 8 against one-hot of label 1: ||(0.2, 0.5, 0.3) - (0, 1, 0)||^2 = 0.04 + 0.25 + 0.09
    loss, grad = _grad(hg.SparseL2(dtype="float64"), np.array([1]), np.array([[0.2, 0.5, 0.3]]))
    np.testing.assert_allclose(loss, 0.38, rtol=1e-12)
    np.testing.assert_allclose(grad, [[0.4, -1.0, 0.6]], rtol=1e-12)


def test_serialization_round_trip():
    for loss in (hg.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2, name="ce"),
                 hg.SparseCategoricalCrossentropy(from_logits=True, reduction="sum",
                                                  label_smoothing=0.1),
                 hg.SparseL2(name="sl2"),
                 hg.L2(reduction=None)):
        clone = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()


def test_errors_name_the_file_and_shapes():
    with pytest.raises(ValueError, match=r"classification.py.*y_true.shape=\(2, 3\)"):
        hg.CategoricalCrossentropy()(np.zeros((2, 3)), np.ones((2, 4)) / 4)
    with pytest.raises(ValueError, match=r"integer labels.*y_true.shape=\(2, 2\)"):
        hg.SparseCategoricalCrossentropy()(np.zeros((2, 2)), np.ones((2, 4)) / 4)
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        hg.CategoricalCrossentropy(label_smoothing=1.5)

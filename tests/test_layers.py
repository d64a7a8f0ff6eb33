"""Every handgrad layer against independent references.

References: the stock Keras layer with copied weights (forward and TF autodiff of the stock op with
the fake loss sum(out * dout)), a NumPy forward, and central finite differences in float64.

Tolerances and why:
- forward vs Keras / NumPy, float32: rtol 1e-5, atol 1e-5 (x scale). The same TF kernels run, but
  oneDNN may reorder sums; NumPy accumulates in float64.
- gradients vs stock autodiff, float32: rtol 1e-4, atol 1e-5 (x gradient scale). Our BN and dense
  backward reorder the same sums (eq. 51 evaluated per channel first), which moves the last bits.
- finite differences, float64, step 1e-6 (x input scale when > 1): rtol 1e-5, atol 1e-7
  (x gradient scale) + 1e-9; the truncation error of the central difference is O(h^2) and the
  rounding error O(eps |L| / h) ~ 1e-10, which the 1e-9 floor covers for the tiny gradients of
  saturated softmax.
  The dilated convolution is checked in float32 (no float64 CPU kernel), step 0.5, rtol 1e-3: the
  op is bilinear, so the central difference has no truncation error at all.
Ties in max pooling have no derivative, so those cases skip the finite-difference check (by case,
not by default) and are checked against autodiff and a NumPy arg-max routing instead; so do the
activation cases whose input sits on their kinks (x = 0, x = max_value), checked against autodiff
and a NumPy gradient of the kernels' one-sided convention (exact: the gradient is delta times
0, 1 or the slope).
"""

import numpy as np
import pytest
import tensorflow as tf
from layer_cases import CASE_IDS, CASES, make_input, np_bilinear_matrix, np_max_pool_grad

import handgrad  # noqa: F401  (registers the layers)
from handgrad import layers as hl
from handgrad.layers import ops


def _call(layer, x, case):
    return layer(x, training=case.training) if case.training is not None else layer(x)


def _pair(case, dtype="float32"):
    """Builds the handgrad layer and its Keras twin with identical weights."""
    layer, twin = case.make(), case.twin()
    layer.build(case.shape)
    twin.build(case.shape)
    if dtype != "float32":
        layer = type(layer).from_config({**layer.get_config(), "dtype": dtype})
        layer.build(case.shape)
    if layer.weights:
        twin.set_weights(layer.get_weights())
    return layer, twin


def _scale(a):
    return max(float(np.max(np.abs(a))), 1e-30)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_keras_and_numpy(case):
    layer, twin = _pair(case)
    weights = [w.astype(np.float64) for w in layer.get_weights()]
    x = make_input(case)
    y = _call(layer, x, case).numpy()
    y_twin = _call(twin, x, case).numpy()
    y_np = case.reference(x.astype(np.float64), weights, case.training)
    tol = 1e-5 * _scale(y_np)
    np.testing.assert_allclose(y, y_twin, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(y, y_np, rtol=1e-5, atol=tol)
    # Running statistics (eq. 41-42) move exactly like Keras'.
    for a, b in zip(layer.non_trainable_weights, twin.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def _grads(layer, x, dout, case):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(_call(layer, x, case) * dout)
    return tape.gradient(loss, [x, *layer.trainable_weights])


MODES = {
    "eager": lambda f: f,
    "function": tf.function,
    "xla": lambda f: tf.function(f, jit_compile=True),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients_match_keras_autodiff(case, mode):
    layer, twin = _pair(case)
    x = make_input(case)
    dout = np.random.default_rng(1).normal(size=_call(twin, x, case).shape).astype(np.float32)
    # The stock twin runs in the same mode: XLA's own sigmoid/tanh differ in the last bits, which
    # saturated cases (1 - y for y ~ 1) amplify.
    ours = MODES[mode](lambda x, d: _grads(layer, x, d, case))(x, dout)
    stock = MODES[mode](lambda x, d: _grads(twin, x, d, case))(x, dout)
    assert len(ours) == len(stock) == 1 + len(layer.trainable_weights)
    for g, g_ref in zip(ours, stock):
        np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-5 * _scale(g_ref))


@pytest.mark.parametrize("case", [c for c in CASES if c.ties], ids=lambda c: c.name)
def test_max_pool_ties_route_to_first_maximum(case):
    layer, _ = _pair(case)
    x = make_input(case)
    dout = np.random.default_rng(1).normal(size=layer(x).shape).astype(np.float32)
    (dx,) = _grads(layer, x, dout, case)[:1]
    cfg = layer.get_config()
    expected = np_max_pool_grad(x, dout, cfg["pool_size"][0], cfg["strides"][0], cfg["padding"])
    np.testing.assert_allclose(dx.numpy(), expected, rtol=1e-6, atol=1e-6)


def _finite_differences(layer, x, dout, case, h):
    """Central differences of sum(out * dout) w.r.t. x (step h) and every trainable weight."""

    def loss():
        return float(tf.reduce_sum(_call(layer, tf.constant(x), case) * dout))

    grads = []
    for target in [x] + [w.numpy() for w in layer.trainable_weights]:
        step = h * max(case.scale, 1.0) if target is x else h
        g = np.zeros_like(target)
        flat, gflat = target.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            for sign in (1, -1):
                flat[i] = old + sign * step
                if target is not x:
                    layer.trainable_weights[len(grads) - 1].assign(target)
                gflat[i] += sign * loss() / (2 * step)
            flat[i] = old
        if target is not x:
            layer.trainable_weights[len(grads) - 1].assign(target)
        grads.append(g)
    return grads


@pytest.mark.parametrize("case", [c for c in CASES if c.grad_reference], ids=lambda c: c.name)
@pytest.mark.parametrize("mode", list(MODES))
def test_gradients_at_kinks_match_numpy(case, mode):
    layer, _ = _pair(case)
    x = make_input(case)
    dout = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    (dx,) = MODES[mode](lambda x, d: _grads(layer, x, d, case))(x, dout)
    np.testing.assert_allclose(dx.numpy(), case.grad_reference(x, dout), rtol=1e-6, atol=0)


def test_capped_relu_gradient_is_zero_at_both_kinks_for_any_cap():
    """Stock Keras passes delta at x == max_value for caps other than 6 (tf.clip_by_value's
    gradient); handgrad keeps Relu6Grad's convention, 1[0 < x < m], for every cap."""
    x = tf.constant([-1.0, 0.0, 0.75, 1.5, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.clipped_relu(x, 1.5)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0.75, 1.5, 1.5])


@pytest.mark.parametrize("case", [c for c in CASES if not c.ties and c.values is None],
                         ids=lambda c: c.name)
def test_gradients_match_finite_differences(case):
    exact = case.fd_dtype == "float64"
    layer, _ = _pair(case, dtype=case.fd_dtype)
    x = make_input(case).astype(case.fd_dtype)
    dout = np.random.default_rng(1).normal(size=_call(layer, x, case).shape).astype(case.fd_dtype)
    analytic = [g.numpy() for g in _grads(layer, x, dout, case)]
    numeric = _finite_differences(layer, x, dout, case, h=1e-6 if exact else 0.5)
    for g, g_ref in zip(analytic, numeric):
        if exact:
            np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7 * _scale(g_ref) + 1e-9)
        else:
            np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4 * _scale(g_ref))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_graph_goes_through_custom_gradient(case):
    """tf.custom_gradient marks its op (IdentityN) with _gradient_op_type; autodiff would not."""
    layer, _ = _pair(case)
    fn = tf.function(lambda x: _grads(layer, x, 1.0, case)[0])
    graph = fn.get_concrete_function(tf.TensorSpec(case.shape, tf.float32)).graph
    marked = [op for op in graph.get_operations() if op.type == "IdentityN"
              and op.node_def.attr["_gradient_op_type"].s.startswith(b"CustomGradient")]
    assert marked, f"{case.name}: no custom-gradient op in the traced gradient"
    # and none of the gradient ops TF's autodiff would add for the forward ops we replaced
    stock_grads = {"FusedBatchNormGradV3", "BiasAddGrad"}
    assert not stock_grads & {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_config_round_trip(case):
    import keras

    layer = case.make()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "in_hw, out_hw",
    [((5, 4), (7, 9)), ((9, 8), (4, 3)), ((3, 3), (3, 3)), ((1, 4), (3, 2)), ((6, 6), (192, 1))],
    ids=["up_non_integer", "down", "same_size", "one_row_mixed", "blown_up_and_squashed"],
)
def test_resize_bilinear_any_size(in_hw, out_hw):
    """ops.resize_bilinear vs tf.image.resize (forward, autodiff) and the interpolation matrices:
    forward A X B^T, gradient A^T delta B (tolerances as the float32 cases above)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, *in_hw, 3)).astype(np.float32))
    dout = tf.constant(rng.normal(size=(2, *out_hw, 3)).astype(np.float32))
    ours, stock = [], []
    for fn, out in ((lambda v: ops.resize_bilinear(v, out_hw), ours),
                    (lambda v: tf.image.resize(v, out_hw, "bilinear"), stock)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * dout)
        out += [y, tape.gradient(loss, x)]
    a, b = np_bilinear_matrix(in_hw[0], out_hw[0]), np_bilinear_matrix(in_hw[1], out_hw[1])
    references = [np.einsum("ph,qw,rhwc->rpqc", a, b, x.numpy().astype(np.float64)),
                  np.einsum("ph,qw,rpqc->rhwc", a, b, dout.numpy().astype(np.float64))]
    for got, want, ref in zip(ours, stock, references):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5 * _scale(ref))
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5 * _scale(ref))


def test_bilinear_layer_with_unknown_spatial_size():
    """The output size is computed at run time when H, W are not static (any image size)."""
    import keras

    layer, twin = (L.UpSampling2D((2, 3), interpolation="bilinear") for L in (hl, keras.layers))
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)])
    x = np.random.default_rng(0).normal(size=(1, 5, 3, 2)).astype(np.float32)
    y = fn(x)
    assert fn.get_concrete_function().output_shapes.as_list() == [None, None, None, 2]
    np.testing.assert_allclose(y.numpy(), twin(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, args",
    [("DepthwiseConv2D", (5, 2, "same", 2)), ("SeparableConv2D", (4, 3, 2, "valid", None, 1, 2)),
     ("UpSampling2D", ((2, 3), None, "bilinear")), ("ReLU", (6.0,)), ("LeakyReLU", (0.1,))],
    ids=["depthwise", "separable", "upsampling", "relu6", "leaky_relu"],
)
def test_constructor_takes_keras_positional_arguments(name, args):
    import keras

    ours = getattr(hl, name)(*args, name="twin").get_config()
    assert ours == getattr(keras.layers, name)(*args, name="twin").get_config()

"""Element-wise activations with their derived backward pass (seed section 3.4.3-3.4.4).

Forward (SEED_NOTES, eq. 5-7, 29):
    X' = f(X),  f in {ReLU, sigmoid, tanh}
Backward (eq. 30, with the derivatives of 002 eq. 11-13):
    dX = delta * f'(X)
    ReLU'(x)    = 1[x > 0]            -> written with the output: 1[X' > 0]
    sigma'(x)   = sigma(x)(1 - sigma(x)) = X'(1 - X')
    tanh'(x)    = 1 - tanh(x)^2        = 1 - X'^2
Two piecewise-linear relatives extend eq. 29-30 (same forward-then-delta-times-slope pattern):
    ReLU capped at m (ReLU6: m = 6):  X' = min(max(X, 0), m),    dX = delta 1[0 < X < m]
    leaky ReLU, slope a >= 0:         X' = X if X > 0 else a X, dX = delta (1[X > 0] + a 1[X <= 0])
At the kinks (X = 0, X = m) there is no derivative; the backward takes the one-sided value that
TensorFlow's kernels take (0 at both ends of the ReLU6 window, a at X = 0 for the leaky ReLU).
Every derivative is written in terms of the output X', so the backward keeps only X' (not X):
1[X' > 0] = 1[X > 0] for ReLU and for the leaky ReLU (a >= 0 keeps the sign), and
0 < X' < m exactly when 0 < X < m.
Each product is evaluated by the fused element-wise kernel TensorFlow's own gradients use
(ReluGrad: dy 1[y > 0]; SigmoidGrad: dy y (1 - y); TanhGrad: dy (1 - y^2); Relu6Grad:
dy 1[0 < y < 6]; LeakyReluGrad: dy (1[y > 0] + a 1[y <= 0])), one pass over memory instead of the
two or three that the same formula costs as separate ops.

Layers: `ReLU` (mirrors `keras.layers.ReLU`, with `max_value` for ReLU6), `LeakyReLU` (mirrors
`keras.layers.LeakyReLU`), `Sigmoid` and `Tanh` (the stock twins are
`keras.layers.Activation("sigmoid" | "tanh")`).
"""

import math
import numbers

import keras
import tensorflow as tf

# The derivative of each activation, as a function of its output y = f(x) and the delta dy.
# Input shape == output shape == delta shape (any rank).
_DERIVATIVE_FROM_OUTPUT = {
    "linear": lambda y, dy: dy,
    "relu": lambda y, dy: tf.raw_ops.ReluGrad(gradients=dy, features=y),  # dy 1[y > 0]
    "sigmoid": lambda y, dy: tf.raw_ops.SigmoidGrad(y=y, dy=dy),  # dy y (1 - y)
    "tanh": lambda y, dy: tf.raw_ops.TanhGrad(y=y, dy=dy),  # dy (1 - y^2)
}
_FORWARD = {
    "linear": tf.identity,
    "relu": tf.nn.relu,
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
}
FUSABLE = tuple(_FORWARD)


def activation_backward(name, y, dy):
    """delta * f'(x), computed from the saved output y = f(x) (eq. 30)."""
    return _DERIVATIVE_FROM_OUTPUT[name](y, dy)


def activation_forward(name, x):
    return _FORWARD[name](x)


def _elementwise(name):
    def op(x):
        @tf.custom_gradient
        def forward(x):  # (...) -> (...)
            y = activation_forward(name, x)

            def backward(dy):  # (...) -> (...), eq. 30
                return activation_backward(name, y, dy)

            return y, backward

        return forward(x)

    op.__name__ = name
    op.__doc__ = f"{name}(x) with the hand-derived gradient of eq. 30."
    return op


relu = _elementwise("relu")
sigmoid = _elementwise("sigmoid")
tanh = _elementwise("tanh")


def _check_max_value(max_value):
    if not isinstance(max_value, numbers.Real) or not 0 <= max_value < math.inf:
        raise ValueError(f"`max_value` must be a finite number >= 0 (or None for the plain ReLU). "
                         f"Received: max_value={max_value!r}")


def clipped_relu(x, max_value):
    """min(max(x, 0), max_value) with the hand-derived gradient delta 1[0 < x < max_value].

    max_value == 6 runs TF's fused Relu6 / Relu6Grad kernels (MobileNetV2's ReLU6).
    """
    _check_max_value(max_value)

    @tf.custom_gradient
    def forward(x):  # (...) -> (...)
        if max_value == 6:
            y = tf.nn.relu6(x)
        else:
            cap = tf.constant(max_value, x.dtype)  # the same rounded cap forward and backward
            y = tf.minimum(tf.nn.relu(x), cap)

        def backward(dy):  # (...) -> (...), eq. 30 with f' = 1[0 < x < m], read from y
            if max_value == 6:
                return tf.raw_ops.Relu6Grad(gradients=dy, features=y)  # dy 1[0 < y < 6]
            return tf.where(tf.logical_and(y > 0, y < cap), dy, tf.zeros_like(dy))

        return y, backward

    return forward(x)


def relu6(x):
    """min(max(x, 0), 6) with the gradient delta 1[0 < x < 6] (TF's Relu6Grad kernel)."""
    return clipped_relu(x, 6.0)


def _check_negative_slope(negative_slope):
    if not isinstance(negative_slope, numbers.Real) or not 0 <= negative_slope < math.inf:
        raise ValueError(
            "`negative_slope` must be a finite number >= 0: the backward reads the sign of x "
            "from the output, which a negative slope would flip. "
            f"Received: negative_slope={negative_slope!r}"
        )


def leaky_relu(x, negative_slope):
    """x if x > 0 else a x (a = negative_slope >= 0), with the hand-derived gradient
    delta (1[x > 0] + a 1[x <= 0]) (eq. 29-30 extended).

    The backward saves the output y, not the input x. For a >= 0, y > 0 exactly when x > 0
    (x <= 0 gives y = a x <= 0, and rounding cannot make a product of a number <= 0 and one >= 0
    positive), so LeakyReluGrad gives the same result fed y as fed x. TF's own gradient feeds x
    because tf.nn.leaky_relu also allows a < 0, where y > 0 for x < 0 and the output is not
    enough; handgrad refuses a < 0 (as keras.layers.LeakyReLU does). Saving y costs no memory in
    a network: the next layer keeps y as its own input, while x would be one more activation-sized
    tensor held until the backward pass.
    """
    _check_negative_slope(negative_slope)
    alpha = float(negative_slope)

    @tf.custom_gradient
    def forward(x):  # (...) -> (...)
        y = tf.nn.leaky_relu(x, alpha=alpha)

        def backward(dy):  # (...) -> (...), dX = delta (1[x > 0] + a 1[x <= 0]), read from y
            return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)

        return y, backward

    return forward(x)


@keras.saving.register_keras_serializable(package="handgrad")
class ReLU(keras.layers.ReLU):
    """Rectified linear unit, `max(x, 0)`, optionally capped: `min(max(x, 0), max_value)`, with
    the backward of eq. 30 (`delta 1[x > 0]`, capped: `delta 1[0 < x < max_value]`).

    `ReLU(6.0)` is MobileNetV2's ReLU6 (as `keras.applications` builds it) and runs TF's fused
    Relu6 kernels. At x == max_value the gradient is 0 for every cap; stock Keras agrees for 6
    (tf.nn.relu6) but passes 1 there for other caps (its clip_by_value path).

    Args: those of `keras.layers.ReLU`.
        max_value: None (plain ReLU) or a finite number >= 0.
        negative_slope: 0 only (use `LeakyReLU` for a leaky ReLU).
        threshold: 0 only.
    Input shape: any. Output shape: same as input.
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        if negative_slope != 0:
            raise ValueError(
                "handgrad ReLU supports negative_slope=0 only; handgrad.layers.LeakyReLU is the "
                f"leaky ReLU (without max_value). Received: negative_slope={negative_slope}"
            )
        if threshold != 0:
            raise ValueError(f"handgrad ReLU supports threshold=0 only. Received: "
                             f"threshold={threshold}")
        if max_value is not None:
            _check_max_value(max_value)
        super().__init__(max_value=max_value, negative_slope=negative_slope, threshold=threshold,
                         **kwargs)

    def call(self, inputs):
        if self.max_value is None:
            return relu(inputs)
        return clipped_relu(inputs, self.max_value)


@keras.saving.register_keras_serializable(package="handgrad")
class LeakyReLU(keras.layers.LeakyReLU):
    """Leaky ReLU, `x if x > 0 else negative_slope * x`, with the backward
    `delta (1[x > 0] + negative_slope 1[x <= 0])` (eq. 29-30 extended; see `leaky_relu` for why
    the output, not the input, is saved). RetinaFace uses `negative_slope=0.1`.

    Args:
        negative_slope: a finite number >= 0. Defaults to 0.3, as `keras.layers.LeakyReLU`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).
    Input shape: any. Output shape: same as input.
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        super().__init__(negative_slope=negative_slope, **kwargs)  # Keras refuses None and < 0
        _check_negative_slope(self.negative_slope)

    def call(self, inputs):
        return leaky_relu(inputs, self.negative_slope)


class _Elementwise(keras.layers.Layer):
    _fn = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return type(self)._fn(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="handgrad")
class Sigmoid(_Elementwise):
    """Logistic sigmoid `1 / (1 + exp(-x))` with the backward `X'(1 - X')` (eq. 30).

    Input shape: any. Output shape: same as input.
    """

    _fn = staticmethod(sigmoid)


@keras.saving.register_keras_serializable(package="handgrad")
class Tanh(_Elementwise):
    """Hyperbolic tangent with the backward `1 - X'^2` (eq. 30).

    Input shape: any. Output shape: same as input.
    """

    _fn = staticmethod(tanh)

"""Element-wise activations with their derived backward pass (seed section 3.4.3-3.4.4).

Forward (SEED_NOTES, eq. 5-7, 29):
    X' = f(X),  f in {ReLU, sigmoid, tanh}
Backward (eq. 30, with the derivatives of 002 eq. 11-13):
    dX = delta * f'(X)
    ReLU'(x)    = 1[x > 0]            -> written with the output: 1[X' > 0]
    sigma'(x)   = sigma(x)(1 - sigma(x)) = X'(1 - X')
    tanh'(x)    = 1 - tanh(x)^2        = 1 - X'^2
Every derivative is written in terms of the output X', so the backward keeps only X' (not X).
Each product is evaluated by the fused element-wise kernel TensorFlow's own gradients use
(ReluGrad: dy 1[y > 0]; SigmoidGrad: dy y (1 - y); TanhGrad: dy (1 - y^2)), one pass over memory
instead of the two or three that the same formula costs as separate ops.

Layers: `ReLU` (mirrors `keras.layers.ReLU`), `Sigmoid` and `Tanh` (the stock twins are
`keras.layers.Activation("sigmoid" | "tanh")`).
"""

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


@keras.saving.register_keras_serializable(package="handgrad")
class ReLU(keras.layers.ReLU):
    """Rectified linear unit, `max(x, 0)`, with the backward of eq. 30.

    Args: those of `keras.layers.ReLU`; only the plain ReLU (`max_value=None`,
        `negative_slope=0`, `threshold=0`) is derived in the seed and supported.
    Input shape: any. Output shape: same as input.
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        if max_value is not None or negative_slope != 0 or threshold != 0:
            raise ValueError(
                "handgrad ReLU implements the plain ReLU of eq. 29 only. Received: "
                f"max_value={max_value}, negative_slope={negative_slope}, threshold={threshold}"
            )
        super().__init__(max_value=max_value, negative_slope=negative_slope, threshold=threshold,
                         **kwargs)

    def call(self, inputs):
        return relu(inputs)


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

"""Fully connected layer with the hand-derived backward pass (seed section 3.2).

Forward (SEED_NOTES, eq. 3-4):
    Z  = X W + b                 # (R, J) = (R, I) @ (I, J) + (J,)
    X' = f(Z)                    # f in {linear, relu, sigmoid, tanh}, fused into the op
Backward (eq. 15-18; 002 eq. 31-33), erratum corrected: eq. 18 needs f'(Z[r, j]), not f'(Z[r, i]):
    G  = delta * f'(Z)           # (R, J)   f' written with the output X' (see activations.py)
    dW = X^T G                   # (I, J)
    db = sum_r G                 # (J,)
    dX = G W^T                   # (R, I)
The layer gradient is the plain sum over the batch: 002 eq. 43 divides by R, but the mean over the
batch belongs to the loss (SEED_NOTES errata).
"""

import keras
import tensorflow as tf

from handgrad.layers.activations import FUSABLE, activation_backward, activation_forward
from handgrad.layers.softmax import softmax


def dense(x, kernel, bias=None, activation="linear"):
    """`activation(x @ kernel + bias)` with the gradient of eq. 15-18.

    Args:
        x: `(..., I)` tensor; leading axes are flattened into the batch axis R.
        kernel: `(I, J)` tensor. bias: `(J,)` tensor or None.
        activation: one of "linear", "relu", "sigmoid", "tanh" (fused into the backward).
    Returns: `(..., J)` tensor.
    """
    if activation not in FUSABLE:
        raise ValueError(f"dense() fuses {FUSABLE}. Received: activation={activation!r}")
    lead = tf.shape(x)[:-1]
    x2 = tf.reshape(x, [-1, x.shape[-1]])  # (R, I)

    @tf.custom_gradient
    def forward(x, kernel, *maybe_bias):
        z = tf.matmul(x, kernel)  # (R, J), eq. 3
        if maybe_bias:
            z = tf.nn.bias_add(z, maybe_bias[0])
        y = activation_forward(activation, z)  # (R, J), eq. 4

        def backward(dy):  # dy: (R, J)
            g = activation_backward(activation, y, dy)  # (R, J)   delta * f'(Z)
            dx = tf.matmul(g, kernel, transpose_b=True)  # (R, I)   eq. 16
            dw = tf.matmul(x, g, transpose_a=True)  # (I, J)   eq. 17-18
            if maybe_bias:
                return dx, dw, tf.reduce_sum(g, axis=0)  # (J,)
            return dx, dw

        return y, backward

    y = forward(x2, kernel) if bias is None else forward(x2, kernel, bias)
    return tf.reshape(y, tf.concat([lead, [kernel.shape[-1]]], axis=0))


def activation_name(activation):
    """The registered name of a Keras activation function ("linear" for None)."""
    if activation is None:
        return "linear"
    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else getattr(activation, "__name__", repr(activation))


@keras.saving.register_keras_serializable(package="handgrad")
class Dense(keras.layers.Dense):
    """Densely connected layer, `activation(inputs @ kernel + bias)`, backward of eq. 15-18.

    Args: those of `keras.layers.Dense` (same weight names `kernel`, `bias` and order).
        `activation` may be None/"linear", "relu", "sigmoid", "tanh" (fused into the derived
        backward) or "softmax" (applied with handgrad's softmax, eq. 54-55).
    Input shape: `(..., input_dim)`. Output shape: `(..., units)`.
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        name = activation_name(self.activation)
        if name not in FUSABLE + ("softmax",):
            raise ValueError(
                f"handgrad Dense supports activations {FUSABLE + ('softmax',)}. "
                f"Received: activation={activation!r}"
            )
        self._fused = name if name in FUSABLE else "linear"
        self._softmax = name == "softmax"

    def build(self, input_shape):
        super().build(input_shape)
        if self.lora_enabled:
            raise ValueError(
                "handgrad Dense does not derive a LoRA backward; lora_rank must be None.")

    def call(self, inputs, training=None):
        kernel = tf.convert_to_tensor(self.kernel)
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias)
        y = dense(inputs, kernel, bias, activation=self._fused)
        return softmax(y) if self._softmax else y

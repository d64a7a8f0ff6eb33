"""Cropping to a reference's spatial size, with its derived backward pass.

RetinaFace's pyramid up-samples an upper level to the size of the level below with a nearest
resize (PyTorch `F.interpolate(size=...)`, TF's ResizeNearestNeighbor without half-pixel
centres): output pixel d reads input pixel floor(d in / out). The levels have sizes
ceil(side / 2^k), so out = 2 in or 2 in - 1, and then floor(d in / out) = floor(d / 2) for every
d < out (d in / out - d / 2 = d (2 in - out) / (2 out) lies in [0, 1/2), and d / 2 is a whole or
a half number): the resize is exactly a x2 nearest up-sampling (`UpSampling2D`) followed by this
crop of the last row / column when out is odd.

Forward (top-left kept):
    X'[r, h, w, c] = X[r, h, w, c]           for h < H', w < W'
Backward (every kept input pixel feeds one output; the dropped ones feed none):
    dX[r, h, w, c] = delta[r, h, w, c] if h < H' and w < W' else 0     (a zero pad of delta)
"""

import keras
import tensorflow as tf


def crop_to(x, size):
    """x `(R, H, W, C)` -> `(R, H', W', C)`, top-left `size` = (H', W'), zero-pad backward."""

    @tf.custom_gradient
    def forward(x):
        y = x[:, :size[0], :size[1], :]  # (R, H', W', C)

        def backward(dy):  # (R, H', W', C) -> (R, H, W, C)
            full = tf.shape(x)[1:3]
            pad = tf.stack([[0, 0], [0, full[0] - size[0]], [0, full[1] - size[1]], [0, 0]])
            return tf.pad(dy, pad)

        return y, backward

    return forward(x)


@keras.saving.register_keras_serializable(package="handgrad")
class CropToReference(keras.layers.Layer):
    """Crops `x` to the spatial size of `reference`, keeping the top-left: `[x, reference] -> x'`.

    After `UpSampling2D(2)` this is the nearest resize to the reference's size of RetinaFace's
    pyramid (module docstring). Only `x` gets a gradient (`reference` gives a size only).
    Keras has no such layer; `derived_gradient=False` gives the stock twin (TF's own gradient
    of the slice), which the detector's twin tests build.

    Args: derived_gradient: the zero-pad backward above (True) or TF autodiff (False).
    Input shapes: `(B, H, W, C)`, `(B, H', W', *)` with H' <= H, W' <= W.
    Output shape: `(B, H', W', C)`.
    """

    def __init__(self, derived_gradient=True, **kwargs):
        super().__init__(**kwargs)
        self.derived_gradient = bool(derived_gradient)

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        if self.derived_gradient:
            return crop_to(x, size)
        return x[:, :size[0], :size[1], :]

    def compute_output_shape(self, input_shapes):
        (b, _, _, c), (_, h, w, _) = input_shapes
        return (b, h, w, c)

    def get_config(self):
        return {**super().get_config(), "derived_gradient": self.derived_gradient}

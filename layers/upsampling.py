"""2-D up-sampling, nearest-neighbour and bilinear, with hand-derived backward passes.

Nearest neighbour. The seed's feature-pyramid top-down path (section 3.5.2) up-samples by nearest
neighbour ("k-NN"). With integer factors (a, b):
Forward:
    X'[r, a h + u, b w + v, c] = X[r, h, w, c]      for 0 <= u < a, 0 <= v < b
Backward (each input feeds an a x b block of outputs, so its gradient sums that block):
    dX[r, h, w, c] = sum_{u < a, v < b} delta[r, a h + u, b w + v, c]
Both are written as a reshape plus a broadcast / a reduce_sum over the two block axes.

Bilinear, any output size H' x W' (RetinaNet's alternative to the seed's k-NN; MediaPipe's
BlazeFace graphs use it), with half-pixel centres (`align_corners=False, half_pixel_centers=True`:
what `tf.image.resize`, Keras' `UpSampling2D(interpolation="bilinear")` and TFLite's
RESIZE_BILINEAR in face_detection_full_range.tflite compute). Output row h' samples the input at
    y(h') = (h' + 1/2) H / H' - 1/2,  t = clip(floor y, 0, H-1),  u = clip(floor y + 1, 0, H-1),
    alpha(h') = y - floor y
and column w' likewise at x(w') with l, q and beta(w'). (For a = 2 every output is 3/4 of its
nearest input plus 1/4 of the next one towards it, clamped at the borders.)
Forward:
    X'[r, h', w', c] = (1-alpha)(1-beta) X[r, t, l, c] + (1-alpha) beta X[r, t, q, c]
                       + alpha (1-beta) X[r, u, l, c] + alpha beta X[r, u, q, c]
    i.e. per (r, c), X' = A X B^T with the interpolation matrices A (H' x H), B (W' x W):
    A[h', t] += 1 - alpha(h'), A[h', u] += alpha(h'); B from beta the same way.
Backward (the op is linear in X, so its gradient is the transpose):
    dX[r, h, w, c] = sum_{h', w'} A[h', h] B[w', w] delta[r, h', w', c]      (dX = A^T delta B)
    every output's delta goes back to its four source pixels with the four weights it was
    interpolated with, summed over the outputs that share a source pixel.
ResizeBilinearGrad, the kernel TensorFlow's own ResizeBilinear gradient calls, computes exactly
this scatter-add. Both kernels interpolate in float32 (ResizeBilinear returns float32 for every
input dtype, ResizeBilinearGrad takes a float32 delta); the op casts back to the input's dtype, as
tf.image.resize does.
"""

import keras
import tensorflow as tf

from handgrad.layers._common import normalize_pair, require_channels_last


def upsample_nearest(x, size=2):
    """Nearest-neighbour up-sampling by integer factors `size` with the block-sum gradient.

    Args: x `(R, H, W, C)`; size int or pair (a, b). Returns `(R, a H, b W, C)`.
    """
    a, b = normalize_pair(size, "size")

    @tf.custom_gradient
    def forward(x):
        shape = tf.shape(x)
        n, h, w, c = shape[0], shape[1], shape[2], shape[3]
        y = tf.broadcast_to(x[:, :, None, :, None, :], [n, h, a, w, b, c])  # (R, H, a, W, b, C)
        y = tf.reshape(y, [n, h * a, w * b, c])  # (R, aH, bW, C)

        def backward(dy):  # (R, aH, bW, C)
            # The block sum, one axis at a time: reducing the middle axis of a 3-D view is ~6x
            # faster on CPU than reducing axes (2, 4) of the 6-D view at once.
            rows = tf.reshape(dy, [n * h, a, w * b * c])  # (R H, a, W b C)
            rows = tf.reduce_sum(rows, axis=1)  # (R H, W b C)   sum over u
            cols = tf.reshape(rows, [n * h * w, b, c])  # (R H W, b, C)
            return tf.reshape(tf.reduce_sum(cols, axis=1), [n, h, w, c])  # sum over v

        return y, backward

    y = forward(x)
    if x.shape.rank == 4:
        s = x.shape
        y.set_shape([s[0], None if s[1] is None else s[1] * a,
                     None if s[2] is None else s[2] * b, s[3]])
    return y


def resize_bilinear(x, size):
    """Bilinear resize with half-pixel centres and the transposed-interpolation gradient.

    Args: x `(R, H, W, C)`; size `(H', W')`, ints or an int32 tensor (any size, up or down;
        no antialiasing, as `tf.image.resize(..., "bilinear")`).
    Returns: `(R, H', W', C)` in x's dtype.
    """

    @tf.custom_gradient
    def forward(x):  # (R, H, W, C)
        y = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=False,
                                      half_pixel_centers=True)  # (R, H', W', C) float32: A X B^T
        y = tf.cast(y, x.dtype)

        def backward(dy):  # (R, H', W', C) -> (R, H, W, C): A^T delta B
            return tf.raw_ops.ResizeBilinearGrad(grads=tf.cast(dy, tf.float32), original_image=x,
                                                 align_corners=False, half_pixel_centers=True)

        return y, backward

    return forward(x)


def _scaled_size(x, a, b):
    """(a H, b W): Python ints when H and W are static, so the output shape stays static."""
    h, w = x.shape[1], x.shape[2]
    if h is not None and w is not None:
        return [h * a, w * b]
    return tf.shape(x)[1:3] * tf.constant([a, b])


@keras.saving.register_keras_serializable(package="handgrad")
class UpSampling2D(keras.layers.UpSampling2D):
    """Up-sampling layer: nearest neighbour (block-sum backward) or bilinear (transposed weights).

    Args: those of `keras.layers.UpSampling2D`; `interpolation="nearest"` or `"bilinear"`,
        `data_format="channels_last"` only.
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, size[0] H, size[1] W, C)`.
    """

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(size=size, data_format=data_format, interpolation=interpolation, **kwargs)
        require_channels_last(self.data_format, "handgrad UpSampling2D")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError('handgrad UpSampling2D implements interpolation="nearest" or '
                             f'"bilinear". Received: interpolation={interpolation!r}')

    def call(self, inputs):
        if self.interpolation == "bilinear":
            return resize_bilinear(inputs, _scaled_size(inputs, *self.size))
        return upsample_nearest(inputs, self.size)

"""Named layer cases shared by the layer tests: each pairs a handgrad layer with its stock Keras
twin and an independent NumPy reference of the forward pass."""

import dataclasses
import math
from collections.abc import Callable

import keras
import numpy as np

from handgrad import layers as hl

# ---- NumPy references (forward) -------------------------------------------------------------


def _same_pad(size, k, s):
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def np_conv2d(x, w, b=None, strides=1, padding="valid", dilation=1):
    kh, kw, _, co = w.shape
    ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    r, h, wd, _ = x.shape
    if padding == "same":
        oh, t, bt = _same_pad(h, ekh, strides)
        ow, lf, rt = _same_pad(wd, ekw, strides)
        x = np.pad(x, [(0, 0), (t, bt), (lf, rt), (0, 0)])
    else:
        oh, ow = (h - ekh) // strides + 1, (wd - ekw) // strides + 1
    out = np.zeros((r, oh, ow, co), x.dtype)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * strides, i * strides + ekh, dilation)
            cols = slice(j * strides, j * strides + ekw, dilation)
            patch = x[:, rows, cols]
            out[:, i, j] = np.einsum("rhwc,hwco->ro", patch, w)
    return out if b is None else out + b


def np_max_pool(x, k, s, padding):
    r, h, w, c = x.shape
    if padding == "same":
        oh, t, bt = _same_pad(h, k, s)
        ow, lf, rt = _same_pad(w, k, s)
        x = np.pad(x, [(0, 0), (t, bt), (lf, rt), (0, 0)], constant_values=-np.inf)
    else:
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((r, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
    return out


def np_max_pool_grad(x, dy, k, s, padding):
    """Routes each window's delta to its first maximum (row-major), summing overlaps."""
    r, h, w, c = x.shape
    t = lf = 0
    if padding == "same":
        _, t, bt = _same_pad(h, k, s)
        _, lf, rt = _same_pad(w, k, s)
        x = np.pad(x, [(0, 0), (t, bt), (lf, rt), (0, 0)], constant_values=-np.inf)
    dx = np.zeros_like(x)
    for n in range(r):
        for ch in range(c):
            for i in range(dy.shape[1]):
                for j in range(dy.shape[2]):
                    win = x[n, i * s:i * s + k, j * s:j * s + k, ch]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    dx[n, i * s + a, j * s + b, ch] += dy[n, i, j, ch]
    return dx[:, t:t + h, lf:lf + w]


def np_depthwise(x, w, b=None, strides=1, padding="valid", dilation=1):
    """Depthwise = conv2d with the block-diagonal kernel W~[j, i, c, c M + m] = W[j, i, c, m]."""
    kh, kw, c, m = w.shape
    full = np.zeros((kh, kw, c, c * m), w.dtype)
    for ch in range(c):
        full[:, :, ch, ch * m:(ch + 1) * m] = w[:, :, ch]
    return np_conv2d(x, full, b, strides, padding, dilation)


def np_bilinear_matrix(n_in, n_out):
    """(n_out, n_in) half-pixel-centre interpolation matrix: out = A @ in along one axis."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    low = np.floor(src)
    frac = src - low
    a = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(a, (rows, np.clip(low, 0, n_in - 1).astype(int)), 1 - frac)
    np.add.at(a, (rows, np.clip(low + 1, 0, n_in - 1).astype(int)), frac)
    return a


def np_resize_bilinear(x, out_h, out_w):
    a, b = np_bilinear_matrix(x.shape[1], out_h), np_bilinear_matrix(x.shape[2], out_w)
    return np.einsum("ph,qw,rhwc->rpqc", a, b, x)


def np_batch_norm(x, gamma, beta, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_act(name, x):
    return {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
            "tanh": np.tanh, "linear": lambda v: v}[name](x)


def np_leaky_relu(x, a):
    return np.where(x > 0, x, a * x)


def np_leaky_relu_grad(x, dy, a):
    """delta (1[x > 0] + a 1[x <= 0]): the slope a at x = 0, as TF's LeakyReluGrad."""
    return dy * np.where(x > 0, 1.0, a)


def np_relu_capped(x, m):
    return np.clip(x, 0, m)


def np_relu_capped_grad(x, dy, m):
    """delta 1[0 < x < m]: 0 at both kinks, as TF's Relu6Grad."""
    return dy * ((x > 0) & (x < m))


def np_upsample(x, a, b):
    return np.repeat(np.repeat(x, a, axis=1), b, axis=2)


# ---- cases ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    make: Callable  # () -> handgrad layer
    twin: Callable  # () -> stock Keras layer with the same behaviour
    shape: tuple  # input shape
    reference: Callable  # (x, weights, training) -> NumPy output
    scale: float = 1.0  # input magnitude (large / small activations)
    ties: bool = False  # integer-valued inputs with repeated maxima
    training: bool | None = None  # passed to BatchNormalization
    # TF has no float64 CPU kernel for dilated Conv2DBackpropInput; that case is bilinear in
    # (x, W), so a float32 central difference with a large step is exact up to rounding.
    fd_dtype: str = "float64"
    float16: bool = True  # False where TF has no float16 CPU kernel (dilated Conv2DBackpropInput)
    # Explicit input holding kinks (x = 0, x = max_value), where the op has no derivative: finite
    # differences skip the case, and grad_reference, (x, dout) -> NumPy dX, checks the one-sided
    # value the backward takes there.
    values: np.ndarray | None = None
    grad_reference: Callable | None = None


def _rand(shape, scale, seed, ties=False):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(0, 3, size=shape).astype(np.float32)
    # Spaced-out values: no two entries within 1e-2 of each other, and none near 0, so max pooling
    # and ReLU are differentiable where finite differences probe them.
    n = int(np.prod(shape))
    vals = (rng.permutation(n) - n / 2 + 0.5) / max(n / 4, 1.0)
    return (vals.reshape(shape) * scale).astype(np.float32)


def make_input(case, seed=0):
    if case.values is not None:
        return case.values.reshape(case.shape).copy()
    return _rand(case.shape, case.scale, seed, case.ties)


# Both kinks of ReLU6 (0, -0 and 6, several times), saturated entries on both sides, and values
# just inside the window; every entry is exact in float16.
_KINKS = np.array([-100, -6, -3, -1, -0.5, -0.0, 0, 0, 0.25, 1, 3, 5.5, 5.75, 6, 6, 6.5, 7, 10,
                   100, -0.0, 0, 0.125, 2, 6], np.float32)


def _conv_case(name, shape, filters, k, s, padding, dilation=1, activation=None,
               fd_dtype="float64", float16=True):
    kw = dict(filters=filters, kernel_size=k, strides=s, padding=padding, dilation_rate=dilation,
              activation=activation, bias_initializer="glorot_uniform")

    def ref(x, w, training):
        return np_act(activation or "linear", np_conv2d(x, w[0], w[1], s, padding, dilation))

    return Case(name, lambda: hl.Conv2D(**kw), lambda: keras.layers.Conv2D(**kw), shape, ref,
                fd_dtype=fd_dtype, float16=float16)


def _depthwise_case(name, shape, k, s, padding, multiplier=1, dilation=1, activation=None,
                    use_bias=True):
    kw = dict(kernel_size=k, strides=s, padding=padding, depth_multiplier=multiplier,
              dilation_rate=dilation, activation=activation, use_bias=use_bias,
              bias_initializer="glorot_uniform")

    def ref(x, w, training):
        y = np_depthwise(x, w[0], w[1] if use_bias else None, s, padding, dilation)
        return np_act(activation or "linear", y)

    return Case(name, lambda: hl.DepthwiseConv2D(**kw), lambda: keras.layers.DepthwiseConv2D(**kw),
                shape, ref)


def _separable_case(name, shape, filters, k, s, padding, multiplier=1, dilation=1,
                    activation=None):
    kw = dict(filters=filters, kernel_size=k, strides=s, padding=padding,
              depth_multiplier=multiplier, dilation_rate=dilation, activation=activation,
              bias_initializer="glorot_uniform")

    def ref(x, w, training):
        z = np_depthwise(x, w[0], None, s, padding, dilation)
        return np_act(activation or "linear", np_conv2d(z, w[1], w[2]))

    return Case(name, lambda: hl.SeparableConv2D(**kw), lambda: keras.layers.SeparableConv2D(**kw),
                shape, ref)


def _bilinear_case(name, shape, size):
    kw = dict(size=size, interpolation="bilinear")
    a, b = size

    def ref(x, w, training):
        return np_resize_bilinear(x, a * x.shape[1], b * x.shape[2])

    # ResizeBilinear interpolates in float32 whatever the input dtype; the op is linear in x, so a
    # float32 central difference with a large step has no truncation error.
    return Case(name, lambda: hl.UpSampling2D(**kw), lambda: keras.layers.UpSampling2D(**kw),
                shape, ref, fd_dtype="float32")


def _dense_case(name, shape, units, activation=None, scale=1.0):
    kw = dict(units=units, activation=activation, bias_initializer="glorot_uniform")

    def ref(x, w, training):
        z = x @ w[0] + w[1]
        return np_softmax(z) if activation == "softmax" else np_act(activation or "linear", z)

    return Case(name, lambda: hl.Dense(**kw), lambda: keras.layers.Dense(**kw), shape, ref, scale)


def _pool_case(name, shape, k, s, padding, ties=False):
    kw = dict(pool_size=k, strides=s, padding=padding)
    return Case(name, lambda: hl.MaxPool2D(**kw), lambda: keras.layers.MaxPooling2D(**kw), shape,
                lambda x, w, t: np_max_pool(x, k, s, padding), ties=ties)


def _act_case(name, layer, act, shape, scale):
    return Case(name, layer, lambda: keras.layers.Activation(act), shape,
                lambda x, w, t: np_act(act, x), scale)


def _relu_case(name, max_value, shape, scale=1.0, kinks=False):
    extra = dict(values=_KINKS, grad_reference=lambda x, dy: np_relu_capped_grad(x, dy, max_value)
                 ) if kinks else {}
    return Case(name, lambda: hl.ReLU(max_value), lambda: keras.layers.ReLU(max_value), shape,
                lambda x, w, t: np_relu_capped(x, max_value), scale, **extra)


def _leaky_case(name, shape, negative_slope=None, kinks=False):
    kw = {} if negative_slope is None else dict(negative_slope=negative_slope)
    a = 0.3 if negative_slope is None else negative_slope  # Keras' default, stated independently
    extra = dict(values=_KINKS, grad_reference=lambda x, dy: np_leaky_relu_grad(x, dy, a)
                 ) if kinks else {}
    return Case(name, lambda: hl.LeakyReLU(**kw), lambda: keras.layers.LeakyReLU(**kw), shape,
                lambda x, w, t: np_leaky_relu(x, a), **extra)


def _bn_case(name, shape, training, scale=1.0, offset_init="glorot_uniform"):
    kw = dict(momentum=0.9, epsilon=1e-3, beta_initializer=offset_init,
              gamma_initializer="glorot_uniform", moving_mean_initializer="glorot_uniform",
              moving_variance_initializer="ones")

    def ref(x, w, training):
        gamma, beta, mm, mv = w
        axes = tuple(range(x.ndim - 1))
        if training:
            mm, mv = x.mean(axis=axes), x.var(axis=axes)
        return np_batch_norm(x, gamma, beta, mm, mv, 1e-3)

    return Case(name, lambda: hl.BatchNormalization(**kw),
                lambda: keras.layers.BatchNormalization(**kw), shape, ref, scale, training=training)


CASES = [
    _dense_case("dense_batch1", (1, 5), 3),
    _dense_case("dense_relu", (4, 6), 5, "relu"),
    _dense_case("dense_sigmoid_large", (3, 4), 2, "sigmoid", scale=30.0),
    _dense_case("dense_tanh_small", (3, 4), 3, "tanh", scale=1e-3),
    _dense_case("dense_softmax", (4, 5), 3, "softmax"),
    _dense_case("dense_rank3", (2, 3, 4), 3, "relu"),
    _conv_case("conv_valid_k3", (2, 7, 7, 3), 4, 3, 1, "valid"),
    _conv_case("conv_batch1_k5_s2_valid", (1, 9, 9, 2), 3, 5, 2, "valid"),
    _conv_case("conv_stride2_same_odd", (2, 7, 9, 3), 4, 3, 2, "same"),
    _conv_case("conv_stride2_same_even", (2, 8, 8, 2), 3, 5, 2, "same"),
    _conv_case("conv_k1_relu", (2, 5, 5, 3), 4, 1, 1, "valid", activation="relu"),
    _conv_case("conv_k1_stride2_valid_odd", (2, 7, 9, 3), 4, 1, 2, "valid"),
    _conv_case("conv_k1_stride2_same", (1, 8, 6, 8), 5, 1, 2, "same"),
    _conv_case("conv_dilated_same", (1, 8, 7, 2), 2, 3, 1, "same", dilation=2, fd_dtype="float32",
               float16=False),
    _pool_case("pool_2x2", (2, 6, 6, 2), 2, 2, "valid"),
    _pool_case("pool_overlap_k3_s2", (2, 7, 7, 2), 3, 2, "valid"),
    _pool_case("pool_overlap_same_odd", (1, 9, 7, 3), 3, 2, "same"),
    _pool_case("pool_ties", (2, 6, 6, 2), 2, 2, "valid", ties=True),
    _pool_case("pool_overlap_ties", (1, 7, 7, 2), 3, 2, "same", ties=True),
    Case("relu", lambda: hl.ReLU(), lambda: keras.layers.ReLU(), (2, 4, 5, 3),
         lambda x, w, t: np.maximum(x, 0)),
    # scale 5: entries in (-10, 10), none within 0.25 of the kinks 0 and 6
    _relu_case("relu6", 6.0, (2, 3, 4), scale=5.0),
    _relu_case("relu6_kinks_saturated", 6.0, (2, 3, 4), kinks=True),
    _relu_case("relu_max_value_1.5", 1.5, (2, 4, 5, 3)),  # Keras' clip path, no Relu6 kernel
    _leaky_case("leaky_relu_0.1", (2, 4, 5, 3), 0.1),  # RetinaFace's slope
    _leaky_case("leaky_relu_default", (2, 3, 4)),
    _leaky_case("leaky_relu_0.1_kinks", (2, 3, 4), 0.1, kinks=True),
    _leaky_case("leaky_relu_slope_2", (2, 5), 2.0),  # Keras allows slopes > 1
    _act_case("sigmoid_large", lambda: hl.Sigmoid(), "sigmoid", (2, 3, 4), 20.0),
    _act_case("sigmoid_small", lambda: hl.Sigmoid(), "sigmoid", (2, 3, 4), 1e-3),
    _act_case("tanh_large", lambda: hl.Tanh(), "tanh", (2, 3, 4), 10.0),
    _act_case("tanh_small", lambda: hl.Tanh(), "tanh", (2, 3, 4), 1e-3),
    Case("softmax", lambda: hl.Softmax(), lambda: keras.layers.Softmax(), (3, 6),
         lambda x, w, t: np_softmax(x)),
    Case("softmax_large_axis1", lambda: hl.Softmax(axis=1), lambda: keras.layers.Softmax(axis=1),
         (2, 5, 3), lambda x, w, t: np_softmax(x, axis=1), scale=50.0),
    Case("upsample_2x2", lambda: hl.UpSampling2D(), lambda: keras.layers.UpSampling2D(),
         (2, 3, 5, 2), lambda x, w, t: np_upsample(x, 2, 2)),
    Case("upsample_3x2", lambda: hl.UpSampling2D((3, 2)), lambda: keras.layers.UpSampling2D((3, 2)),
         (1, 2, 3, 3), lambda x, w, t: np_upsample(x, 3, 2)),
    _depthwise_case("dw_k3_same", (2, 7, 7, 3), 3, 1, "same"),
    _depthwise_case("dw_stride2_same_odd", (2, 7, 9, 3), 3, 2, "same"),
    _depthwise_case("dw_batch1_k5_s2_same", (1, 9, 10, 4), 5, 2, "same"),  # BlazeFace's 5x5
    _depthwise_case("dw_multiplier2_valid", (2, 6, 7, 2), 3, 1, "valid", multiplier=2),
    _depthwise_case("dw_k5_valid_relu_nobias", (2, 8, 7, 3), 5, 1, "valid", activation="relu",
                    use_bias=False),
    _depthwise_case("dw_dilated_same", (1, 8, 7, 2), 3, 1, "same", dilation=2),
    _depthwise_case("dw_dilated_valid_multiplier2", (2, 9, 8, 2), 3, 1, "valid", multiplier=2,
                    dilation=2),
    _separable_case("sep_k3_same", (2, 7, 7, 3), 4, 3, 1, "same"),
    _separable_case("sep_stride2_same_odd_multiplier2", (2, 7, 9, 3), 5, 3, 2, "same",
                    multiplier=2),
    _separable_case("sep_batch1_k5_valid_relu", (1, 8, 8, 2), 3, 5, 1, "valid",
                    activation="relu"),
    _separable_case("sep_dilated_same", (1, 8, 7, 2), 3, 3, 1, "same", dilation=2),
    _bilinear_case("upsample_bilinear_2x2", (2, 3, 5, 2), (2, 2)),
    _bilinear_case("upsample_bilinear_3x2", (1, 4, 3, 3), (3, 2)),
    _bilinear_case("upsample_bilinear_batch1_one_row", (1, 1, 4, 2), (2, 3)),
    _bn_case("bn_train", (4, 5, 5, 3), True),
    _bn_case("bn_train_batch1_odd", (1, 3, 5, 2), True),
    _bn_case("bn_train_large_offset", (3, 4, 4, 2), True, scale=1e3),
    _bn_case("bn_train_small", (3, 4, 4, 2), True, scale=1e-2),
    _bn_case("bn_train_dense", (8, 4), True),
    _bn_case("bn_inference", (2, 5, 5, 3), False),
]
CASE_IDS = [c.name for c in CASES]

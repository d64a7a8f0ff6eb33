"""A model built from every handgrad layer saves to .keras and reloads, in a fresh process that only
imports handgrad, with identical outputs; bad layer arguments fail with messages naming them."""

import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from handgrad import layers as hl
from handgrad.layers import ops


def _every_layer_model():
    inputs = keras.Input((9, 9, 3))
    x = hl.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = hl.BatchNormalization()(x)
    x = hl.ReLU()(x)
    x = hl.MaxPool2D(3, 2, padding="same")(x)  # (5, 5, 6)
    x = hl.UpSampling2D()(x)  # (10, 10, 6)
    x = hl.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)  # 12 ch
    x = hl.ReLU(6.0)(x)
    x = hl.SeparableConv2D(6, 3, strides=2, padding="same")(x)  # (5, 5, 6)
    x = hl.LeakyReLU(0.1)(x)
    x = hl.UpSampling2D(interpolation="bilinear")(x)  # (10, 10, 6)
    x = hl.Conv2D(4, 5, strides=2, padding="valid")(x)  # (3, 3, 4)
    x = hl.Tanh()(x)
    x = hl.Sigmoid()(x)
    x = keras.layers.Flatten()(x)
    x = hl.Dense(8, activation="tanh")(x)
    x = hl.Dense(5)(x)
    return keras.Model(inputs, hl.Softmax()(x))


def test_model_with_every_layer_reloads_in_fresh_process(tmp_path):
    model = _every_layer_model()
    x = np.random.default_rng(0).uniform(size=(4, 9, 9, 3)).astype(np.float32)
    model.compile("sgd", "categorical_crossentropy")
    model.fit(x, np.eye(5, dtype=np.float32)[[0, 1, 2, 3]], epochs=1, verbose=0)  # moves BN stats
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import handgrad
        m = keras.models.load_model({str(tmp_path / "m.keras")!r})
        kinds = sorted({{type(layer).__module__.split(".")[0] for layer in m.layers[1:]}})
        print("modules", kinds)
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, m.predict(x, verbose=0))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "modules ['handgrad', 'keras']" in out.stdout  # Flatten is the only stock layer
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: hl.Conv2D(3, 3, padding="full"), "padding"),
        (lambda: hl.Conv2D(3, 3, groups=3), "groups=3"),
        (lambda: hl.Conv2D(3, 3, activation="elu"), "activation='elu'"),
        (lambda: hl.Conv2D(3, 3, data_format="channels_first"), "data_format='channels_first'"),
        (lambda: hl.Dense(3, activation="gelu"), "activation='gelu'"),
        (lambda: hl.UpSampling2D(interpolation="bicubic"), "interpolation='bicubic'"),
        (lambda: hl.DepthwiseConv2D(3, strides=2, dilation_rate=2),
         "strides=(2, 2), dilation_rate=(2, 2)"),
        (lambda: hl.DepthwiseConv2D(3, activation="elu"), "activation='elu'"),
        (lambda: hl.SeparableConv2D(4, 3, data_format="channels_first"),
         "data_format='channels_first'"),
        (lambda: hl.ReLU(negative_slope=0.1), "negative_slope=0.1"),
        (lambda: hl.ReLU(threshold=1.0), "threshold=1.0"),
        (lambda: hl.ReLU(max_value=-1.0), "max_value=-1.0"),
        (lambda: hl.ReLU(max_value=float("inf")), "max_value=inf"),
        (lambda: hl.LeakyReLU(-0.1), "negative_slope=-0.1"),
        (lambda: hl.LeakyReLU(float("nan")), "negative_slope=nan"),
        (lambda: ops.leaky_relu(np.ones(3, np.float32), -0.5), "negative_slope=-0.5"),
        (lambda: ops.clipped_relu(np.ones(3, np.float32), None), "max_value=None"),
        (lambda: hl.BatchNormalization(renorm=True), "renorm=True"),
        (lambda: hl.MaxPool2D(0), "pool_size"),
    ],
    ids=["conv_padding", "conv_groups", "conv_activation", "conv_channels_first",
         "dense_activation", "upsample_bicubic", "depthwise_stride_and_dilation",
         "depthwise_activation", "separable_channels_first", "relu_negative_slope",
         "relu_threshold", "relu_negative_max_value", "relu_infinite_max_value",
         "leaky_relu_negative_slope", "leaky_relu_nan_slope", "op_leaky_relu_negative_slope",
         "op_clipped_relu_none", "bn_renorm",
         "pool_size_zero"],
)
def test_bad_arguments_name_the_argument(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
        make()(np.zeros((1, 4, 4, 3), np.float32))

"""The MNIST models: the seed's digit reader (fig. 10, section 3.5.1) and its MLP (section 3.2).

fig. 10 CNN (`build_mnist_cnn`; all layers from handgrad.layers, each with its hand-derived
backward):
    input (R, 28, 28, 1)
    3 x [Conv2D(k=5, s=2, "same") -> BatchNormalization -> ReLU]   # 28 -> 14 -> 7 -> 4
    Flatten -> Dense(10) -> Softmax                                  # (R, 4*4*C3) -> (R, 10)
The convolutions have no bias: BatchNormalization subtracts the per-channel mean right after,
so a conv bias would be cancelled exactly (its role is taken by BN's beta). Flatten is a reshape
with no derivative to write, so Keras' own layer is used.

MLP (`build_mlp`, eq. 3-4 and 8):
    input (R, 28, 28, 1) -> Flatten (R, 784)
    -> Dense(h1, f) -> Dense(h2, f) -> Dense(10) -> Softmax       # eq. 3-4 per layer, eq. 54
All Dense/Softmax layers are handgrad's (backward eq. 15-18, 55).

Builders take plain arguments (a `layers` namespace: `handgrad.layers`, or `keras.layers` for the
stock twin); `MODELS` maps a config's `model.name` to its builder.
"""

import keras

from handgrad import layers as hg_layers

NUM_CLASSES = 10


def build_mnist_cnn(filters=(32, 64, 128), kernel_size=5, strides=2, num_classes=NUM_CLASSES,
                    layers=hg_layers, bn_momentum=0.99, name="mnist_cnn"):
    """Builds the fig. 10 model (uncompiled).

    Args:
        filters: output channels of the three (or any number of) conv blocks.
        kernel_size, strides: of every convolution (the seed: 5 and 2).
        bn_momentum: momentum of the running statistics (eq. 41-42).
        layers: the module providing Conv2D, BatchNormalization, ReLU, Dense, Softmax:
            `handgrad.layers` (default) or `keras.layers` for the stock twin.
    Returns: `keras.Model` mapping `(R, 28, 28, 1)` images in [0, 1] to `(R, 10)` probabilities.
    """
    if not filters or not all(isinstance(f, int) and f > 0 for f in filters):
        raise ValueError("filters must be a non-empty sequence of positive "
                         f"ints. Received: filters={filters!r}")
    inputs = keras.Input((28, 28, 1), name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, kernel_size, strides=strides, padding="same", use_bias=False,
                          name=f"conv{i + 1}")(x)  # (R, ceil(H/s), ceil(W/s), f)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)  # (R, H' W' f)
    x = layers.Dense(num_classes, name="logits")(x)  # (R, 10)
    outputs = layers.Softmax(name="probabilities")(x)  # (R, 10)  eq. 54
    return keras.Model(inputs, outputs, name=name)


def build_mlp(hidden=(512, 512), activation="relu", num_classes=NUM_CLASSES, layers=hg_layers,
              name="mlp"):
    """Builds the MLP (uncompiled): `(R, 28, 28, 1)` images -> `(R, 10)` probabilities."""
    if activation not in ("relu", "sigmoid", "tanh"):
        raise ValueError("activation must be 'relu', 'sigmoid' or 'tanh'. "
                         f"Received: activation={activation!r}")
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)  # (R, 784)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation=activation, name=f"dense{i + 1}")(x)  # (R, units)
    x = layers.Dense(num_classes, name="logits")(x)  # (R, 10)
    outputs = layers.Softmax(name="probabilities")(x)  # (R, 10)
    return keras.Model(inputs, outputs, name=name)


MODELS = {"mnist_cnn": build_mnist_cnn, "mlp": build_mlp}

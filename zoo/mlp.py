"""The seed's feed-forward network (section 3.2, eq. 3-4 and 8) for MNIST, and its named config.

    input (R, 28, 28, 1) -> Flatten (R, 784)
    -> Dense(h1, f) -> Dense(h2, f) -> Dense(10) -> Softmax       # eq. 3-4 per layer, eq. 54
All Dense/Softmax layers are handgrad's (backward eq. 15-18, 55). The seed writes eq. 8 with an
L2 loss; the default here is the cross-entropy of section 3.5.1 (`loss="l2"` selects eq. 8).

Config `mlp`:  handgrad-train --config=mlp --model_dir=/tmp/mlp [--data_dir=.../mnist]
reaches about 98 % on the MNIST test digits (see README for the measured figure).
"""

import dataclasses

import keras

from handgrad import layers as hg_layers
from handgrad.zoo.mnist_task import NUM_CLASSES, MnistTrainingConfig


@dataclasses.dataclass
class MlpConfig(MnistTrainingConfig):
    """`MnistTrainingConfig` plus the hidden widths and their activation (relu/sigmoid/tanh)."""

    model: str = "handgrad.zoo.mlp:build_from_config"
    hidden: tuple = (512, 512)
    activation: str = "relu"
    batch_size: int = 128
    epochs: int = 10
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    augment_shift: int = 0


def get_config():
    """`handgrad-train --config=mlp --model_dir=DIR`."""
    return MlpConfig()


def build_mlp(hidden=(512, 512), activation="relu", num_classes=NUM_CLASSES, layers=hg_layers,
              name="mlp"):
    """Builds the MLP (uncompiled): `(R, 28, 28, 1)` images -> `(R, 10)` probabilities."""
    if activation not in ("relu", "sigmoid", "tanh"):
        raise ValueError("zoo/mlp.py: activation must be 'relu', 'sigmoid' or 'tanh'. "
                         f"Received: activation={activation!r}")
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)  # (R, 784)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation=activation, name=f"dense{i + 1}")(x)  # (R, units)
    x = layers.Dense(num_classes, name="logits")(x)  # (R, 10)
    outputs = layers.Softmax(name="probabilities")(x)  # (R, 10)
    return keras.Model(inputs, outputs, name=name)


def build_from_config(config):
    return build_mlp(tuple(config.hidden), config.activation)

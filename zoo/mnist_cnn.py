"""The seed's digit reader (fig. 10, section 3.5.1) and its named config.

Architecture (all layers from handgrad.layers, each with its hand-derived backward):
    input (R, 28, 28, 1)
    3 x [Conv2D(k=5, s=2, "same") -> BatchNormalization -> ReLU]   # 28 -> 14 -> 7 -> 4
    Flatten -> Dense(10) -> Softmax                                  # (R, 4*4*C3) -> (R, 10)
The convolutions have no bias: BatchNormalization subtracts the per-channel mean right after,
so a conv bias would be cancelled exactly (its role is taken by BN's beta). Flatten is a reshape
with no derivative to write, so Keras' own layer is used.

Config `mnist_cnn` (trains in about 10 minutes on a 2-core CPU; see README):
    handgrad-train --config=mnist_cnn --model_dir=/tmp/mnist_cnn [--data_dir=.../mnist]
reaches >= 99.4 % on the 10 000 MNIST test digits (the seed: 99.2 % after 4 hours).
"""

import dataclasses

import keras

from handgrad import layers as hg_layers
from handgrad.zoo.mnist_task import NUM_CLASSES, MnistTrainingConfig


@dataclasses.dataclass
class MnistCnnConfig(MnistTrainingConfig):
    """`MnistTrainingConfig` plus the fig. 10 model's fields.

    filters: output channels of each conv block. kernel_size, strides: of every convolution.
    bn_momentum: of the BatchNormalization running statistics (eq. 41-42); runs of a few
        hundred steps need ~0.9, or the initial running variance of 1 still dominates.
    stock_layers: build the stock-Keras twin instead (benchmarks).
    """

    model: str = "handgrad.zoo.mnist_cnn:build_from_config"
    filters: tuple = (32, 64, 128)
    kernel_size: int = 5
    strides: int = 2
    batch_size: int = 128
    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    warmup_epochs: float = 0.5
    augment_shift: int = 2
    bn_momentum: float = 0.99
    stock_layers: bool = False


def get_config():
    """The tuned fig. 10 config: `handgrad-train --config=mnist_cnn --model_dir=DIR`."""
    return MnistCnnConfig()


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
        raise ValueError("zoo/mnist_cnn.py: filters must be a non-empty sequence of positive "
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


def build_from_config(config):
    layers = keras.layers if config.stock_layers else hg_layers
    return build_mnist_cnn(tuple(config.filters), config.kernel_size, config.strides,
                           layers=layers, bn_momentum=config.bn_momentum,
                           name="mnist_cnn_stock" if config.stock_layers else "mnist_cnn")

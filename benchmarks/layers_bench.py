"""Times every handgrad layer (forward + hand-derived backward) and a whole training step of a small
CNN against the stock Keras twin, in the same process, interleaved; one JSON line per case.

    python benchmarks/layers_bench.py [--repeats 15] [--only depthwise3x3_same_32ch,...]

Targets (issue 2): every layer ratio handgrad/stock <= 1.10 on CPU, whole-step ratio <= 1.05.
"""

import argparse
import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_median  # noqa: E402

from handgrad import layers as hl  # noqa: E402

# name: (handgrad factory, stock factory, input shape, training flag or None)
CASES = {
    "dense_relu_256x512": (lambda: hl.Dense(512, activation="relu"),
                           lambda: keras.layers.Dense(512, activation="relu"), (256, 512), None),
    "conv3x3_same_32ch": (lambda: hl.Conv2D(32, 3, padding="same"),
                          lambda: keras.layers.Conv2D(32, 3, padding="same"), (16, 32, 32, 32),
                          None),
    "conv5x5_s2_same_mnist": (lambda: hl.Conv2D(32, 5, strides=2, padding="same"),
                              lambda: keras.layers.Conv2D(32, 5, strides=2, padding="same"),
                              (50, 28, 28, 1), None),
    "relu": (lambda: hl.ReLU(), lambda: keras.layers.ReLU(), (16, 32, 32, 64), None),
    "relu6": (lambda: hl.ReLU(6.0), lambda: keras.layers.ReLU(6.0), (16, 32, 32, 64), None),
    "leaky_relu": (lambda: hl.LeakyReLU(0.1), lambda: keras.layers.LeakyReLU(0.1),
                   (16, 32, 32, 64), None),
    "sigmoid": (lambda: hl.Sigmoid(), lambda: keras.layers.Activation("sigmoid"),
                (16, 32, 32, 64), None),
    "tanh": (lambda: hl.Tanh(), lambda: keras.layers.Activation("tanh"), (16, 32, 32, 64), None),
    "maxpool3x3_s2_same": (lambda: hl.MaxPool2D(3, 2, "same"),
                           lambda: keras.layers.MaxPooling2D(3, 2, "same"), (16, 32, 32, 64), None),
    "batchnorm_train": (lambda: hl.BatchNormalization(), lambda: keras.layers.BatchNormalization(),
                        (16, 32, 32, 64), True),
    "batchnorm_inference": (lambda: hl.BatchNormalization(),
                            lambda: keras.layers.BatchNormalization(), (16, 32, 32, 64), False),
    "softmax_256x1000": (lambda: hl.Softmax(), lambda: keras.layers.Softmax(), (256, 1000), None),
    "upsample2x_nearest": (lambda: hl.UpSampling2D(), lambda: keras.layers.UpSampling2D(),
                           (16, 16, 16, 64), None),
    "depthwise3x3_same_32ch": (lambda: hl.DepthwiseConv2D(3, padding="same"),
                               lambda: keras.layers.DepthwiseConv2D(3, padding="same"),
                               (16, 64, 64, 32), None),
    "depthwise5x5_s2_same_32ch": (lambda: hl.DepthwiseConv2D(5, 2, padding="same"),
                                  lambda: keras.layers.DepthwiseConv2D(5, 2, padding="same"),
                                  (16, 64, 64, 32), None),
    "separable3x3_same_32to64": (lambda: hl.SeparableConv2D(64, 3, padding="same"),
                                 lambda: keras.layers.SeparableConv2D(64, 3, padding="same"),
                                 (16, 32, 32, 32), None),
    "upsample2x_bilinear": (lambda: hl.UpSampling2D(interpolation="bilinear"),
                            lambda: keras.layers.UpSampling2D(interpolation="bilinear"),
                            (16, 16, 16, 64), None),
}


def _layer_step(layer, x, training):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training) if training is not None else layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    return step


def small_cnn(L):
    """The seed's fig. 10 digit reader (three conv k5 s2 -> BN -> ReLU blocks, softmax)."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for filters in (32, 64, 128):
        x = L.Conv2D(filters, 5, strides=2, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, L.Softmax()(L.Dense(10)(x)))


def _train_step(model, x, y):
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply(grads, model.trainable_weights)
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--only", default="",
                        help="comma-separated case names to time (default: every case and the "
                             "training step)")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(CASES))
    if unknown:
        parser.error(f"--only names unknown cases {unknown}. Known: {sorted(CASES)}")
    rng = np.random.default_rng(0)
    env = {"tf": tf.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine()}
    for name, (make, make_twin, shape, training) in CASES.items():
        if only and name not in only:
            continue
        x = tf.constant(rng.normal(size=shape).astype(np.float32))
        layer, twin = make(), make_twin()
        layer.build(shape)
        twin.build(shape)
        if layer.weights:
            twin.set_weights(layer.get_weights())
        t = interleaved_median({"handgrad": _layer_step(layer, x, training),
                                "stock": _layer_step(twin, x, training)},
                               repeats=args.repeats, iters=args.iters)
        print(json.dumps({"bench": "layers", "case": name, "shape": list(shape),
                          "handgrad_ms": round(t["handgrad"] * 1e3, 3),
                          "stock_ms": round(t["stock"] * 1e3, 3),
                          "ratio": round(t["handgrad"] / t["stock"], 3), **env}), flush=True)
    if only:
        return

    x = tf.constant(rng.uniform(size=(50, 28, 28, 1)).astype(np.float32))
    y = tf.constant(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 50)])
    ours, stock = small_cnn(hl), small_cnn(keras.layers)
    stock.set_weights(ours.get_weights())
    t = interleaved_median({"handgrad": _train_step(ours, x, y), "stock": _train_step(stock, x, y)},
                           repeats=args.repeats, iters=args.iters)
    print(json.dumps({"bench": "layers", "case": "train_step_mnist_cnn_batch50",
                      "handgrad_ms": round(t["handgrad"] * 1e3, 3),
                      "stock_ms": round(t["stock"] * 1e3, 3),
                      "ratio": round(t["handgrad"] / t["stock"], 3), **env}), flush=True)


if __name__ == "__main__":
    main()

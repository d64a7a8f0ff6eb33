"""Face-detector speed: handgrad layers vs the same architecture built from stock keras.layers.

    nice -n 5 python benchmarks/detector_bench.py [--size=640] [--batch=1] [--depth=50]
        [--repeats=7] [--warmup=2]

Builds `FaceDetector(layers="handgrad")` and `FaceDetector(layers="keras")` (identical graphs, the
twin's weights copied from ours) in one process and times, interleaving the two models in every
repeat so that machine load affects both alike:
- inference: the network forward pass, `training=False`, one `tf.function` per model, after
  `--warmup` calls; median of `--repeats` calls;
- train step: forward, eq. 61 loss on fixed targets, backward and an SGD update, one
  `tf.function` per model; median of `--repeats` steps.
Prints one JSON line: both medians (ms), the ratios handgrad / keras and the issue's targets
(inference <= 1.05, train step <= 1.10).
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_median  # noqa: E402

from handgrad.zoo.face.retinanet.model import FaceDetector  # noqa: E402


def _make_runners(model, size):
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
    model.optimizer.build(model.trainable_variables)

    @tf.function
    def infer(images):
        return model(images, training=False)

    @tf.function
    def train(images, targets):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = model.compute_detection_loss(targets, out, (size, size))["loss"]
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables,
                                            strict=True))
        return loss

    return infer, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    backbone = {"backbone": f"resnet{args.depth}"}
    ours = FaceDetector(model=backbone, layers="handgrad")
    twin = FaceDetector(model=backbone, layers="keras")
    twin.set_weights(ours.get_weights())

    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((args.batch, args.size, args.size, 3), np.float32))
    faces = tf.constant([[100.0, 120.0, 160.0, 170.0], [300.0, 310.0, 330.0, 335.0],
                         [400.0, 50.0, 520.0, 150.0]]) * (args.size / 640.0)
    per_image = ours.target_fn(images[0], faces, 3)
    targets = {k: tf.repeat(v[None], args.batch, axis=0) for k, v in per_image.items()}

    runners = {"handgrad": _make_runners(ours, args.size), "keras": _make_runners(twin, args.size)}
    calls = {"inference": {name: (lambda f=infer: f(images))
                           for name, (infer, _) in runners.items()},
             "train_step": {name: (lambda f=train: f(images, targets))
                            for name, (_, train) in runners.items()}}

    result = {"benchmark": "detector", "depth": args.depth, "size": args.size,
              "batch": args.batch, "repeats": args.repeats,
              "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
              "cpu_threads": os.cpu_count()}
    for kind, fns in calls.items():
        medians = interleaved_median(fns, repeats=args.repeats, iters=1, warmup=args.warmup)
        result[f"{kind}_ms"] = {name: round(m * 1e3, 2) for name, m in medians.items()}
        result[f"{kind}_ratio"] = round(medians["handgrad"] / medians["keras"], 4)
    result["targets"] = {"inference_ratio": 1.05, "train_step_ratio": 1.10}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Face-detector serving latency: the exported SavedModel (handgrad layers) against the same
architecture built from stock keras.layers and exported the same way, plus what a CPU user would
otherwise pick (OpenCV's Haar cascade, the `mtcnn` package) on the same images.

    python benchmarks/latency_bench.py [--sizes 512,576,640] [--repeats 10] [--depth 50]
    # on a GPU machine (TensorFlow with CUDA installed), the same command; the SavedModels are
    # placed on the GPU automatically, and --device_note records what ran it.

One JSON line per measurement:
    {"bench": "latency", "model": "handgrad"|"keras", "size": S, "batch": 1, "p50_ms", "p90_ms"}
    {"bench": "latency", "ratio": handgrad / keras p50, "size": S, ...}
    {"bench": "throughput", "batch": 8, "size": 640, "images_per_s", ...}
    {"bench": "latency", "model": "opencv_haar" | "mtcnn", ...}   (pip install -e ".[bench]")
Targets (issue 7): ratio <= 1.05; GPU goal <= 10 ms p50 at 640 x 640 on an H100-class GPU.
The detectors are randomly initialised (latency does not depend on the weights, except through
the number of boxes reaching NMS, which the score threshold 0.5 keeps small for both twins).
"""

import argparse
import json
import os
import platform
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_samples, percentiles_ms  # noqa: E402

from handgrad.export.serving import FaceServing, save  # noqa: E402
from handgrad.pipelines import synthetic_faces  # noqa: E402
from handgrad.zoo.face.retinanet import FaceDetector  # noqa: E402


def test_image(size, seed=0):
    """A synthetic WIDER-style photo (real LFW faces on a real background), uint8 (S, S, 3)."""
    rng = synthetic_faces.image_rng(seed, "val", 0)
    _, _, image, _ = synthetic_faces.compose_image(
        rng, synthetic_faces.load_faces(), synthetic_faces.load_backgrounds(), size)
    square = np.zeros((size, size, 3), np.uint8)
    square[:image.shape[0], :image.shape[1]] = np.round(image * 255)
    return square


def exported_signature(detector, size, root):
    path = os.path.join(root, f"{detector.name}_{size}")
    save(FaceServing(detector, input_size=size), path)
    return tf.saved_model.load(path).signatures["serving_default"]


def _baselines(image, repeats):
    rows = []
    try:
        import cv2

        xml = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(xml)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rows.append(("opencv_haar", lambda: cascade.detectMultiScale(grey, 1.1, 5)))
    except (ImportError, AttributeError) as e:
        print(json.dumps({"bench": "latency", "model": "opencv_haar", "skipped": str(e)}))
    try:
        from mtcnn import MTCNN

        detector = MTCNN()
        rows.append(("mtcnn", lambda: detector.detect_faces(image)))
    except ImportError as e:
        print(json.dumps({"bench": "latency", "model": "mtcnn", "skipped": str(e)}))
    if rows:
        samples = interleaved_samples(dict(rows), repeats=repeats, warmup=1)
        for name, s in samples.items():
            print(json.dumps({"bench": "latency", "model": name, "size": image.shape[0],
                              "batch": 1, **percentiles_ms(s)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,576,640")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--throughput_batch", type=int, default=8)
    parser.add_argument("--device_note", default="")
    parser.add_argument("--skip_baselines", action="store_true")
    args = parser.parse_args()
    env = {"tf": tf.__version__, "device": tf.config.list_physical_devices("GPU") and "gpu"
           or "cpu", "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "note": args.device_note}
    keras.utils.set_random_seed(0)
    backbone = {"backbone": f"resnet{args.depth}"}
    ours = FaceDetector(model=backbone, layers="handgrad", name="handgrad")
    twin = FaceDetector(model=backbone, layers="keras", name="keras")
    twin.set_weights(ours.get_weights())
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as root:
        for size in sizes:
            image = tf.constant(test_image(size)[None])
            fns = {m.name: exported_signature(m, size, root) for m in (ours, twin)}
            samples = interleaved_samples({k: (lambda f=f, x=image: f(images=x)) for k, f in
                                           fns.items()}, repeats=args.repeats, warmup=2)
            stats = {k: percentiles_ms(v) for k, v in samples.items()}
            for name, st in stats.items():
                print(json.dumps({"bench": "latency", "model": name, "size": size, "batch": 1,
                                  **st, **env}), flush=True)
            print(json.dumps({"bench": "latency", "size": size, "batch": 1, "ratio": round(
                stats["handgrad"]["p50_ms"] / stats["keras"]["p50_ms"], 3), **env}), flush=True)
            if size == max(sizes):
                batch = tf.constant(np.stack([test_image(size, seed) for seed in
                                              range(args.throughput_batch)]))
                tput = interleaved_samples({k: (lambda f=f, x=batch: f(images=x)) for k, f in
                                            fns.items()}, repeats=max(3, args.repeats // 3),
                                           warmup=1)
                for name, s in tput.items():
                    print(json.dumps({"bench": "throughput", "model": name, "size": size,
                                      "batch": args.throughput_batch, "images_per_s": round(
                                          args.throughput_batch / float(np.median(s)), 2),
                                      **env}), flush=True)
    if not args.skip_baselines:
        _baselines(test_image(max(sizes)), args.repeats)


if __name__ == "__main__":
    main()

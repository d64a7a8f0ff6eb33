"""BlazeFace serving latency: the handgrad SavedModel (`handgrad-export --pretrained=...`) against
MediaPipe's own .tflite run by LiteRT (XNNPACK), the same network from stock keras.layers exported
the same way, and OpenCV's Haar cascade, on one real photo, twinned in one process.

    python benchmarks/blazeface_latency_bench.py [--variants full_range,short_range]
        [--repeats 10] [--block 10] [--photo astronaut|grace_hopper]
    TF_NUM_INTRAOP_THREADS=4 python benchmarks/blazeface_latency_bench.py    (threads, default 2)
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/blazeface_latency_bench.py     (TF without oneDNN)

Timing: each repeat calls each row's function `--block` times in a row (every call timed), the
order of the blocks alternating between repeats (_timing.interleaved_samples): a server's view, one
runtime's calls back to back. `--block 1` interleaves single calls, which also times each
runtime re-warming its caches and threads after the others (TF the most: full range, one thread,
the SavedModel / LiteRT ratio was 1.35 that way against 1.10 and 1.28 in blocks, same day).

Rows (one JSON line each, {"bench": "blazeface_latency", "variant", "model", "p50_ms", "p90_ms"}):
    handgrad_savedmodel   serving_default: uint8 photo -> boxes in original pixels (letterbox
                          with area resize, network, decoding, weighted NMS), all in TF; the
                          network's weights frozen into the graph, as `handgrad-export` writes it
    handgrad_savedmodel_variables   the same with the weights left as variables (freeze=False)
    keras_savedmodel      the same as handgrad_savedmodel, network built from keras.layers
    litert_pipeline       what a LiteRT user runs: OpenCV letterbox (INTER_AREA resize), the
                          .tflite network, NumPy decoding + weighted NMS (MediaPipe's rules)
    handgrad_network      the SavedModel's `forward` only (float (1, S, S, 3))
    litert_network        the interpreter's invoke only, same input
    opencv_haar           detectMultiScale(grey, 1.1, 5) on the same photo
plus {"model": "ratio", ...}: handgrad_savedmodel / litert_pipeline (target <= 1.5, issue 14),
handgrad_network / litert_network, handgrad_savedmodel / keras_savedmodel, handgrad_savedmodel /
handgrad_savedmodel_variables. Both runtimes get the same CPU threads (TF_NUM_INTRAOP_THREADS, read
by TF at start-up; LiteRT num_threads; OpenCV's setNumThreads). Detections are checked equal (same
count, boxes within 2 % of the photo's longer side: OpenCV's and TF's area resizes round
differently) before timing, so both sides do the same work.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
THREADS = int(os.environ["TF_NUM_INTRAOP_THREADS"])

import cv2  # noqa: E402
import keras  # noqa: E402
import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_samples, percentiles_ms  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from handgrad.export.blazeface_serving import BlazeFaceServing  # noqa: E402
from handgrad.export.serving import save  # noqa: E402
from handgrad.zoo.face.blazeface import (  # noqa: E402
    build_blazeface,
    get_variant,
    import_blazeface,
    ssd_anchors,
    tflite_path,
)


def photo(name):
    if name == "astronaut":
        return skimage.data.astronaut()
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(PIL.Image.open(path).convert("RGB"))


class LitertPipeline:
    """MediaPipe's pipeline around the .tflite, in OpenCV + NumPy: letterbox, network, decoding
    (XYWH, raw values in input pixels, 1 x 1 anchors), sigmoid, weighted NMS."""

    def __init__(self, variant, threads):
        self.spec = get_variant(variant)
        self.interpreter = Interpreter(tflite_path(variant), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.reg = next(i for n, i in outputs.items() if "regressor" in n)
        self.cls = next(i for n, i in outputs.items() if "classifi" in n)
        self.centres = ssd_anchors(self.spec.anchor_options)[:, :2] * self.spec.input_size

    def network(self, x):
        """x (1, S, S, 3) float in [0, 1] -> raw regressors (A, 16), logits (A,)."""
        self.interpreter.set_tensor(self.input, x * 2.0 - 1.0)
        self.interpreter.invoke()
        get = self.interpreter.get_tensor
        return get(self.reg)[0], get(self.cls)[0, :, 0]

    def __call__(self, image):
        h, w = image.shape[:2]
        side, s = max(h, w), self.spec.input_size
        top, left = (side - h) // 2, (side - w) // 2
        square = cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left,
                                    cv2.BORDER_CONSTANT, value=0)
        x = cv2.resize(square, (s, s), interpolation=cv2.INTER_AREA)
        reg, logits = self.network(x[None].astype(np.float32) / 255.0)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        keep = np.flatnonzero((scores >= self.spec.score_threshold) & (reg[:, 2] >= 0)
                              & (reg[:, 3] >= 0))
        centre = reg[keep, 1::-1] + self.centres[keep]  # (k, 2) (y, x)
        boxes = np.concatenate([centre - reg[keep, 3:1:-1] / 2, centre + reg[keep, 3:1:-1] / 2], 1)
        return weighted_nms(boxes * side / s - [top, left, top, left], scores[keep],
                            self.spec.iou_threshold)


def weighted_nms(boxes, scores, iou_threshold):
    """MediaPipe's WEIGHTED suppression: (n, 4) boxes, (n,) scores -> (boxes (d, 4), scores)."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out_boxes, out_scores = [], []
    remaining = np.ones(len(scores), bool)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    while remaining.any():
        best = np.flatnonzero(remaining)[0]
        inter = np.prod(np.clip(np.minimum(boxes[:, 2:], boxes[best, 2:])
                                - np.maximum(boxes[:, :2], boxes[best, :2]), 0, None), 1)
        iou = inter / np.maximum(area + area[best] - inter, 1e-12)
        cluster = remaining & (iou > iou_threshold)
        cluster[best] = True
        w = scores[cluster]
        out_boxes.append((w[:, None] * boxes[cluster]).sum(0) / w.sum())
        out_scores.append(scores[best])
        remaining &= ~cluster
    return np.reshape(out_boxes, (-1, 4)), np.asarray(out_scores)


def exported(model, variant, root, name, freeze=True):
    path = os.path.join(root, name)
    save(BlazeFaceServing(model, variant, freeze=freeze), path)
    return tf.saved_model.load(path)


def check_same_faces(ours, litert, image):
    out = ours.signatures["serving_default"](images=tf.constant(image[None]))
    n = int(out["num_detections"][0])
    boxes, _ = litert(image)
    ours = out["boxes"][0, :n].numpy()
    # OpenCV's INTER_AREA and TF's area resize round differently: boxes agree to a few px
    if n != len(boxes) or not np.allclose(ours, boxes, atol=0.02 * max(image.shape[:2])):
        sys.exit(f"detections differ: SavedModel {ours} vs LiteRT {boxes}")
    return n


def bench_variant(variant, image, args, root):
    ours = import_blazeface(variant)
    twin = build_blazeface(variant, keras.layers)
    twin.set_weights(ours.get_weights())
    saved, saved_twin = (exported(m, variant, root, f"{n}_{variant}")
                         for m, n in ((ours, "handgrad"), (twin, "keras")))
    saved_variables = exported(ours, variant, root, f"variables_{variant}", freeze=False)
    litert = LitertPipeline(variant, THREADS)
    faces = check_same_faces(saved, litert, image)
    check_same_faces(saved_variables, litert, image)
    s = get_variant(variant).input_size
    x = np.asarray(tf.image.resize(image[None] / 255.0, (s, s), method="area"), np.float32)
    uint8, xt = tf.constant(image[None]), tf.constant(x)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    fns = {"handgrad_savedmodel": lambda: saved.signatures["serving_default"](images=uint8),
           "handgrad_savedmodel_variables":
               lambda: saved_variables.signatures["serving_default"](images=uint8),
           "keras_savedmodel": lambda: saved_twin.signatures["serving_default"](images=uint8),
           "litert_pipeline": lambda: litert(image),
           "handgrad_network": lambda: saved.forward(xt),
           "litert_network": lambda: litert.network(x),
           "opencv_haar": lambda: cascade.detectMultiScale(grey, 1.1, 5)}
    samples = interleaved_samples(fns, repeats=args.repeats, warmup=3, block=args.block)
    common = {"bench": "blazeface_latency", "variant": variant, "photo": args.photo,
              "image_hw": list(image.shape[:2]), "faces": faces, "threads": THREADS,
              "repeats": args.repeats, "block": args.block,
              "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}
    p50 = {}
    for name, values in samples.items():
        row = percentiles_ms(values)
        p50[name] = row["p50_ms"]
        print(json.dumps({**common, "model": name, **row}), flush=True)
    print(json.dumps({**common, "model": "ratio",
                      "savedmodel_over_litert_pipeline": round(
                          p50["handgrad_savedmodel"] / p50["litert_pipeline"], 3),
                      "network_over_litert_network": round(
                          p50["handgrad_network"] / p50["litert_network"], 3),
                      "handgrad_over_keras_savedmodel": round(
                          p50["handgrad_savedmodel"] / p50["keras_savedmodel"], 3),
                      "frozen_over_variables_savedmodel": round(
                          p50["handgrad_savedmodel"] / p50["handgrad_savedmodel_variables"], 3)}),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="full_range,short_range")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--block", type=int, default=10, help="calls in a row per runtime")
    parser.add_argument("--photo", default="astronaut", choices=["astronaut", "grace_hopper"])
    args = parser.parse_args()
    cv2.setNumThreads(THREADS)
    image = photo(args.photo)
    with tempfile.TemporaryDirectory() as root:
        for variant in args.variants.split(","):
            bench_variant(variant, image, args, root)


if __name__ == "__main__":
    main()

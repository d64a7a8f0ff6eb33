"""Face-detector serving latency, side by side in one run: the exported mobile detector, its TFLite
exports, the exported ResNet50 detector, OpenCV's Haar cascade and MTCNN on the same 640 x 480
photographs; then the handgrad ResNet export against the same architecture built from stock
keras.layers and exported the same way.

    python benchmarks/latency_bench.py [--repeats 10] [--sizes 512,576,640] [--depth 50]
    TF_NUM_INTRAOP_THREADS=1 python benchmarks/latency_bench.py --sizes=''   (threads, default:
        all cores; TensorFlow, LiteRT and OpenCV get the same number)
    # on a GPU machine (TensorFlow with CUDA installed), the same command; the SavedModels are
    # placed on the GPU automatically, and --device_note records what ran it.

Every row of `DETECTORS` is a name and a builder returning `detect(uint8 (H, W, 3) image) ->
boxes` (and facts about the model): uint8 in, boxes in the photo's pixels out, resizing and NMS
included. Adding a detector is adding one row. The rows time one photo per call, cycling through
`photographs()`, interleaved (`_timing.interleaved_samples`). One JSON line each:
    {"bench": "detectors", "model": name, "size": "640x480", "p50_ms", "p90_ms", ...facts}
then {"bench": "detectors", "mobile_p50_ms", "haar_over_mobile", "resnet50_over_mobile", ...}.
Then, as before (issue 7):
    {"bench": "latency", "model": "handgrad"|"keras", "size": S, "batch": 1, "p50_ms", "p90_ms"}
    {"bench": "latency", "ratio": handgrad / keras p50, "size": S, ...}
    {"bench": "throughput", "batch": 8, "size": 640, "images_per_s", ...}
Targets: mobile p50 <= 30 ms at 640 x 480 on 2 cores and >= 4 x faster than the Haar cascade
(issue 13); twin ratio <= 1.05 (issue 7); GPU goal <= 10 ms p50 at 640 x 640 on an H100.
The detectors are randomly initialised (latency does not depend on the weights, except through
the number of boxes reaching NMS, which the score threshold 0.5 keeps small); Haar and MTCNN
need `pip install -e ".[bench]"`.
"""

import argparse
import itertools
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(os.cpu_count()))
THREADS = int(os.environ["TF_NUM_INTRAOP_THREADS"])  # TF reads it at start-up; LiteRT, OpenCV too

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_samples, percentiles_ms  # noqa: E402

from handgrad.export import tflite  # noqa: E402
from handgrad.export.serving import NO_BOXES, FaceServing, save  # noqa: E402
from handgrad.pipelines.augment import resize_and_pad  # noqa: E402
from handgrad.pipelines.generators import synthetic_faces  # noqa: E402
from handgrad.zoo.face.retinanet.model import FaceDetector  # noqa: E402
from handgrad.zoo.face.retinanet.postprocess import postprocess  # noqa: E402
from handgrad.zoo.run.registry import get_config  # noqa: E402

PHOTO_HW = (480, 640)
SCORE_THRESHOLD, IOU_THRESHOLD = 0.5, 0.4  # the export's defaults


def test_image(size, seed=0):
    """A synthetic WIDER-style photo (real LFW faces on a real background), uint8 (S, S, 3)."""
    rng = synthetic_faces.image_rng(seed, "val", 0)
    _, _, image, _ = synthetic_faces.compose_image(
        rng, synthetic_faces.load_faces(), synthetic_faces.load_backgrounds(), size)
    square = np.zeros((size, size, 3), np.uint8)
    square[:image.shape[0], :image.shape[1]] = np.round(image * 255)
    return square


def _fit(image, hw=PHOTO_HW):
    """Centre crop to the aspect ratio of `hw`, then resize to `hw`: uint8 (h, w, 3)."""
    from PIL import Image

    h, w = image.shape[:2]
    crop_h, crop_w = min(h, w * hw[0] // hw[1]), min(w, h * hw[1] // hw[0])
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = Image.fromarray(image[top:top + crop_h, left:left + crop_w])
    return np.asarray(crop.resize(hw[::-1], Image.BILINEAR))


def photographs():
    """Three 640 x 480 RGB photos: two portraits (skimage's astronaut, matplotlib's
    grace_hopper) and a synthetic WIDER-style group photo (LFW faces on a real background)."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    grace = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
                       .convert("RGB"))
    return [_fit(skimage.data.astronaut()), _fit(grace), _fit(test_image(640, seed=1))]


def exported_signature(detector, size, root):
    """Saves `FaceServing(detector)` under root; returns (serving_default, export path)."""
    path = os.path.join(root, f"{detector.name}_{size}")
    save(FaceServing(detector, input_size=size), path)
    return tf.saved_model.load(path).signatures["serving_default"], path


def _megabytes(path):
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 2)


def _config_detector(config_name):
    config = get_config(config_name)
    return FaceDetector(model=config.model, anchors=config.anchors, name=config_name)


def saved_model_row(config_name):
    """The SavedModel export of `config_name`'s network (serving_default: uint8 -> boxes)."""
    def build(root, size):
        detector = _config_detector(config_name)
        fn, path = exported_signature(detector, size, root)

        def detect(image):
            out = fn(images=tf.constant(image[None]))
            return out["boxes"][0, :int(out["num_detections"][0])]

        return detect, {"config": config_name, "params": detector.count_params(),
                        "saved_model_mb": _megabytes(path)}
    return build


def tflite_row(config_name, mode):
    """The TFLite export of `config_name`'s network run by LiteRT, with the SavedModel's own
    resize + pad before and sigmoid / decode / NMS after (TF functions around the interpreter:
    TFLite has no builtin batched NMS)."""
    def build(root, size):
        from ai_edge_litert.interpreter import Interpreter

        detector = _config_detector(config_name)
        data = tflite.convert(FaceServing(detector, input_size=size), mode)
        runner = Interpreter(model_content=data, num_threads=THREADS
                             ).get_signature_runner()
        (input_name,) = runner.get_input_details()
        anchors = detector.anchor_set
        prepare = tf.function(lambda image: resize_and_pad(image, NO_BOXES, size))

        @tf.function
        def finish(cls_logits, box_deltas, scale):
            out = postprocess(cls_logits, box_deltas, anchors.generate((size, size)),
                              anchors.counts((size, size)), (size, size), anchors.variances,
                              score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD)
            return out["boxes"][0, :out["num_detections"][0]] / tf.tile(scale, [2])

        def detect(image):
            x, _, scale = prepare(tf.constant(image))
            raw = runner(**{input_name: x.numpy()[None]})
            return finish(raw["cls_logits"], raw["box_deltas"], scale)

        return detect, {"config": config_name, "tflite_mb": round(len(data) / 2**20, 2)}
    return build


def blazeface_row(variant):
    """MediaPipe's BlazeFace as `handgrad-export --pretrained=blazeface_<variant>` writes it
    (letterbox to its own 192 / 128 input, weighted NMS, MediaPipe's thresholds; `size` unused)."""
    def build(root, size):
        from handgrad.export.pretrained import export_pretrained

        path = export_pretrained(f"blazeface_{variant}", os.path.join(root, f"bf_{variant}"))
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]

        def detect(image):
            out = fn(images=tf.constant(image[None]))
            return out["boxes"][0, :int(out["num_detections"][0])]

        return detect, {"saved_model_mb": _megabytes(path)}
    return build


def blazeface_tflite_row(variant):
    """MediaPipe's own .tflite through LiteRT, with an OpenCV letterbox and NumPy decoding +
    weighted NMS around it (blazeface_latency_bench.LitertPipeline)."""
    def build(root, size):
        from blazeface_latency_bench import LitertPipeline

        pipeline = LitertPipeline(variant, threads=THREADS)
        return (lambda image: pipeline(image)[0]), {}
    return build


def haar_row(root, size):
    import cv2

    cv2.setNumThreads(THREADS)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades +
                                    "haarcascade_frontalface_default.xml")
    return (lambda image: cascade.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
                                                   1.1, 5)), {"cascade": "frontalface_default"}


def mtcnn_row(root, size):
    from mtcnn import MTCNN

    detector = MTCNN()
    return (lambda image: [face["box"] for face in detector.detect_faces(image)]), {}


# name -> builder(root, input_size) -> (detect(uint8 image) -> boxes, facts about the model)
DETECTORS = [
    ("mobile", saved_model_row("face_mobile_wider")),
    ("mobile_tflite_float32", tflite_row("face_mobile_wider", "float32")),
    ("mobile_tflite_int8", tflite_row("face_mobile_wider", "int8")),
    ("resnet50", saved_model_row("face_resnet50_wider")),
    ("blazeface_full_range", blazeface_row("full_range")),
    ("blazeface_full_range_litert", blazeface_tflite_row("full_range")),
    ("blazeface_short_range", blazeface_row("short_range")),
    ("blazeface_short_range_litert", blazeface_tflite_row("short_range")),
    ("opencv_haar", haar_row),
    ("mtcnn", mtcnn_row),
]


def compare_detectors(args, env):
    """Times every row of DETECTORS on the same photographs; prints their lines and a summary."""
    photos = photographs()
    fns, facts = {}, {}
    with tempfile.TemporaryDirectory() as root:
        for name, build in DETECTORS:
            try:
                detect, facts[name] = build(root, args.input_size)
            except ImportError as e:
                print(json.dumps({"bench": "detectors", "model": name, "skipped": str(e)}))
                continue
            cycle = itertools.cycle(photos)
            fns[name] = lambda detect=detect, cycle=cycle: detect(next(cycle))
        samples = interleaved_samples(fns, repeats=args.repeats * len(photos),
                                      warmup=len(photos))
    stats = {name: percentiles_ms(s) for name, s in samples.items()}
    size = f"{PHOTO_HW[1]}x{PHOTO_HW[0]}"
    for name, st in stats.items():
        print(json.dumps({"bench": "detectors", "model": name, "size": size,
                          "input_size": args.input_size, **st, **facts[name], **env}),
              flush=True)
    summary = {"bench": "detectors", "size": size}
    if "mobile" in stats:
        mobile = stats["mobile"]["p50_ms"]
        summary.update(mobile_p50_ms=mobile, mobile_params=facts["mobile"]["params"],
                       mobile_saved_model_mb=facts["mobile"]["saved_model_mb"])
        summary.update({f"{name}_over_mobile": round(st["p50_ms"] / mobile, 2)
                        for name, st in stats.items() if name != "mobile"})
    print(json.dumps({**summary, **env}), flush=True)


def compare_twins(args, env):
    """The handgrad ResNet export against its stock-Keras twin at --sizes (issue 7)."""
    keras.utils.set_random_seed(0)
    backbone = {"backbone": f"resnet{args.depth}"}
    ours = FaceDetector(model=backbone, layers="handgrad", name="handgrad")
    twin = FaceDetector(model=backbone, layers="keras", name="keras")
    twin.set_weights(ours.get_weights())
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as root:
        for size in sizes:
            image = tf.constant(test_image(size)[None])
            fns = {m.name: exported_signature(m, size, root)[0] for m in (ours, twin)}
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per photo (detectors) or per size (twins)")
    parser.add_argument("--input_size", type=int, default=640,
                        help="square side the exported detectors see (photos are letterboxed)")
    parser.add_argument("--sizes", default="512,576,640", help="twin sizes; '' skips the twins")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--throughput_batch", type=int, default=8)
    parser.add_argument("--device_note", default="")
    parser.add_argument("--skip_detectors", action="store_true")
    args = parser.parse_args()
    env = {"tf": tf.__version__, "device": tf.config.list_physical_devices("GPU") and "gpu"
           or "cpu", "cpu_count": os.cpu_count(), "threads": THREADS,
           "machine": platform.machine(),
           "loadavg": os.getloadavg()[0], "note": args.device_note}
    if not args.skip_detectors:
        compare_detectors(args, env)
    if args.sizes:
        compare_twins(args, env)


if __name__ == "__main__":
    main()

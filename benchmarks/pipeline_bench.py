"""Input pipeline and crowd target encoding of the face detector (issue 12, items 4-6).

    flock /work/notes/bench.lock python benchmarks/pipeline_bench.py [--data_dir=WIDER_LAYOUT]
        [--size=640] [--batch=8] [--images=96] [--annotations=../shared/widerface/...]

Prints one JSON line (appended to benchmarks/results/pipeline_bench.jsonl):
- `pipeline_images_per_s` (all this process' cores) and `pipeline_images_per_s_1_core`: the full
  training pipeline (`wider_face.make_dataset`: read and decode the JPEGs, shuffle,
  `augment.CropPhotometricPolicy` crop, photometric distortion, resize to `--size`, flip,
  `Anchors.encode` targets with small-face anchors and max_boxes 2 000, batching, prefetch),
  each in a fresh process pinned to that many CPUs (TF sizes its thread pools to them);
  `pipeline_images_per_s_per_core` = the first / the cores;
- `stage_ms`: per-image cost of each stage on one pinned CPU, each stage timed alone on its
  inputs held in memory (decode: the JPEG bytes) minus the time of iterating those inputs;
- `encode_ms.<anchors>`: mean encoding time of the training images' cropped boxes at `--size`
  (one CPU) with the seed's anchors (14-220 px, P3-P6), small-face anchors (8-220 px, P3-P6)
  and small-face anchors with a P2 level (strides 4-64, issue 12 item 4);
- `crowd.<anchors>.<size>`: the target encoding of the densest WIDER validation layout (709
  faces, 708 valid) at `--size` (keep-aspect resize + pad, as the seed's recipe) and at its
  original size (1024 x 683, padded to the largest stride): anchors, seconds (median of 3, all
  cores), peak memory, positives, faces with a positive.

The images (default) are a WIDER-geometry set of 32 train layouts (`pipelines.wider_geometry`:
1024 px wide JPEGs of real WIDER layouts) written to a temporary folder; `--data_dir` reads an
existing WIDER-format set.

Peak memory is the peak of TF's CPU allocator (`tf.config.experimental.get_memory_info`) during
the encoding, above what was allocated before: every tensor, nothing else (the process' maxrss
agrees within 5 %, tests/test_crowd_encoding.py).

Importable (as `benchmarks/wider_geometry_bench.py` may): `densest_layout`, `crowd_encoding`,
`pipeline_throughput`, `stage_costs`, `encode_ms`, `on_cpus`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from handgrad.pipelines import augment, detection, images, wider_face  # noqa: E402
from handgrad.pipelines.boxes import yxyx_to_xywh  # noqa: E402
from handgrad.pipelines.generators import wider_geometry
from handgrad.pipelines.generators.wider_geometry_render import canvas_size  # noqa: E402
from handgrad.zoo.face import box_coder as box_ops  # noqa: E402
from handgrad.zoo.face.retinanet.anchors import Anchors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "widerface"
ANCHOR_SETS = {  # AnchorConfig fields
    "seed": dict(min_size=14.0, max_size=220.0, strides=(8, 16, 32, 64)),
    "small": dict(min_size=8.0, max_size=220.0, strides=(8, 16, 32, 64)),
    "small_p2": dict(min_size=8.0, max_size=220.0, strides=(4, 8, 16, 32, 64)),
}


def densest_layout(annotation_file):
    """(boxes (M, 4) float32 px, (height, width)) of the image with the most faces of a
    `wider_face_*_bbx_gt.txt` (invalid faces dropped, as training reads them); the size is the
    WIDER-geometry canvas of its boxes (1024 px wide, a typical WIDER height)."""
    records = wider_face.parse_annotations(annotation_file)
    record = max(records, key=lambda r: len(r.boxes))
    return record.boxes, canvas_size(yxyx_to_xywh(record.boxes).astype(np.int64))


def crowd_encoding(anchors, boxes, image_hw, size=None, repeats=3):
    """Encodes one layout's targets as the training pipeline does and measures it.

    Args:
        anchors: an `Anchors`. boxes: (M, 4) px of an image of `image_hw` (height, width).
        size: the model input side: keep-aspect resize to `size` and pad to a square (the
            seed's recipe); None: the original size padded to a multiple of the largest stride.
        repeats: timed calls after one untimed call (tracing); the median is reported.
    Returns: {"encode_seconds", "peak_memory_mb", "positives", "faces", "faces_with_positive",
        "anchors", "input_hw"}.
    """
    height, width = image_hw
    if size is None:
        m = max(anchors.strides)
        input_hw, scale = (-(-height // m) * m, -(-width // m) * m), 1.0
    else:
        input_hw, scale = (size, size), size / max(height, width)
    boxes = tf.constant(np.asarray(boxes, np.float32) * scale)
    encode = tf.function(anchors.encode, input_signature=[
        tf.TensorSpec(input_hw + (3,)), tf.TensorSpec([None, 4]), tf.TensorSpec([], tf.int32)])
    image, num = tf.zeros(input_hw + (3,)), tf.constant(len(boxes))
    encode(image, boxes, num)
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cls = encode(image, boxes, num)["cls_targets"].numpy()
        times.append(time.perf_counter() - start)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    labels, matched, _ = box_ops.match_anchors(  # which faces got positives
        anchors.generate(input_hw), boxes, positive_iou=anchors.positive_iou,
        negative_iou=anchors.negative_iou)
    faces = np.unique(matched.numpy()[labels.numpy() == 1])
    return {"encode_seconds": round(float(np.median(times)), 4),
            "peak_memory_mb": round(peak / 2**20, 1), "positives": int((cls == 1).sum()),
            "faces": len(boxes), "faces_with_positive": len(faces), "anchors": len(cls),
            "input_hw": list(input_hw)}


def _per_s(dataset, elements, warmup=2):
    """Elements per second of an endless `dataset`, after `warmup` elements."""
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(elements):
        tf.nest.map_structure(lambda t: t.numpy(), next(it))
    return elements / (time.perf_counter() - start)


def _throughput(data_dir, anchors, size=640, batch_size=8, images=96, max_boxes=2000):
    """Images/s of the full training pipeline in this process (`pipeline_throughput`)."""
    policy = augment.CropPhotometricPolicy((size,))
    ds = wider_face.make_dataset(data_dir, "train", batch_size=batch_size, training=True,
                                 target_fn=Anchors(**anchors).encode, max_boxes=max_boxes,
                                 seed=0, policy=policy).repeat()
    return batch_size * _per_s(ds, -(-images // batch_size))


def _cached(dataset):
    dataset = dataset.cache()
    for _ in dataset:  # computed once, then held in memory
        pass
    return dataset.repeat()


def _stage_pairs(data_dir, anchors, size, batch_size, max_boxes):
    """{stage: (its input held in memory, input + stage, images per element)}."""
    records = wider_face.parse_annotations(wider_face.find_annotation_file(data_dir, "train"))
    n = len(records)
    paths = [str(wider_face.images_dir(data_dir, "train") / r.path) for r in records]
    jpegs = _cached(tf.data.Dataset.from_tensor_slices(paths).map(tf.io.read_file))
    plain = augment.CropPhotometricPolicy((size,), flip=False, photometric=False)
    examples = tf.data.Dataset.zip((_cached(wider_face.load_examples(
        data_dir, "train", training=False)), plain.random_params(1, seed=0)))
    crops = _cached(examples.take(n).map(lambda ex, p: plain(ex[0], ex[1], p)[:2]))
    padded = _cached(crops.take(n).map(
        lambda image, boxes: (image, *detection.pad_boxes(boxes, max_boxes))))
    targets = _cached(padded.take(n).map(lambda *x: (x[0], anchors.encode(*x))))
    drawn = tf.data.Dataset.zip((crops, augment.CropPhotometricPolicy((size,)).random_params(
        1, seed=1)))
    names = ("brightness", "contrast", "saturation", "hue", "contrast_first")
    return {
        "decode": (jpegs, jpegs.map(images.decode_image), 1),
        "crop_resize": (examples, examples.map(lambda ex, p: plain(ex[0], ex[1], p)[:2]), 1),
        "photometric": (drawn, drawn.map(
            lambda crop, p: augment.photometric(crop[0], *(p[k] for k in names))), 1),
        "flip": (drawn, drawn.map(lambda crop, p: tf.cond(
            p["flip"], lambda: augment.flip_left_right(*crop), lambda: crop)), 1),
        "targets": (padded, padded.map(anchors.encode), 1),
        "batching": (targets, targets.batch(batch_size), batch_size),
    }


def stage_costs(data_dir, anchors, size=640, batch_size=8, images=96, max_boxes=2000):
    """Milliseconds per image of each training-pipeline stage in this process: each stage is
    timed alone on its inputs held in memory (decode: the JPEG bytes), minus the time of
    iterating those inputs without it."""
    pairs = _stage_pairs(data_dir, Anchors(**anchors), size, batch_size, max_boxes)
    costs = {}
    for name, (base, staged, per) in pairs.items():
        elements = -(-images // per)
        costs[name] = round(1000 / (per * _per_s(staged, elements))
                            - 1000 / _per_s(base, elements), 2)
    return costs


def encode_ms(data_dir, anchors, size=640, max_boxes=2000):
    """Mean target-encoding milliseconds of the training images' cropped boxes at `size`."""
    anchors = Anchors(**anchors)
    policy = augment.CropPhotometricPolicy((size,), photometric=False)
    ds = detection.parse_examples(wider_face.load_examples(data_dir, "train", training=False),
                                  policy, batch_size=1, training=True, max_boxes=max_boxes,
                                  seed=0)
    encode = tf.function(anchors.encode, input_signature=[
        tf.TensorSpec([size, size, 3]), tf.TensorSpec([max_boxes, 4]),
        tf.TensorSpec([], tf.int32)])
    examples = [(x[0], y["boxes"][0], y["num_boxes"][0]) for x, y in ds]
    encode(*examples[0])
    start = time.perf_counter()
    for example in examples:
        encode(*example)["cls_targets"].numpy()
    return round(1000 * (time.perf_counter() - start) / len(examples), 2)


_CHILD = """
import json, os, sys
os.sched_setaffinity(0, {cpus})  # before TF starts its threads, which inherit it
sys.path.insert(0, {folder!r})
import pipeline_bench
print("RESULT " + json.dumps(pipeline_bench.{function}(**json.loads({kwargs!r}))))
"""


def on_cpus(function, cpus, **kwargs):
    """`function(**kwargs)` of this module run in a fresh process pinned to the CPU ids `cpus`
    (TF sizes its thread pools to them): what that many cores deliver."""
    code = _CHILD.format(cpus=set(cpus), folder=str(Path(__file__).parent), function=function,
                         kwargs=json.dumps(kwargs))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{function} on CPUs {cpus} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def pipeline_throughput(data_dir, anchors, cores=None, size=640, batch_size=8, images=96,
                        max_boxes=2000):
    """Images/s of the full training pipeline (module docstring) on `cores` of this process'
    CPUs (default: all), each count in its own pinned process.

    Args: anchors: `AnchorConfig` fields (a dict, e.g. `dataclasses.asdict(config.anchors)`).
    Returns: {"images_per_s", "cores", "images_per_s_per_core"}.
    """
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    rate = on_cpus("_throughput", cpus, data_dir=str(data_dir), anchors=dict(anchors),
                   size=size, batch_size=batch_size, images=images, max_boxes=max_boxes)
    return {"images_per_s": round(rate, 2), "cores": len(cpus),
            "images_per_s_per_core": round(rate / len(cpus), 2)}


def _default_data(tmp):
    wider_geometry.generate(tmp, source=SHARED / "ground_truth", max_images_per_split=32,
                            train_renders=1, progress=False)
    return tmp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--annotations", default=str(SHARED / "wider_face_val_bbx_gt.txt"))
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    load = [os.getloadavg()[0]]
    result = {"size": args.size, "batch": args.batch}
    sizes = dict(size=args.size, batch_size=args.batch, images=args.images)
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = str(args.data_dir or _default_data(tmp))
        full = pipeline_throughput(data_dir, ANCHOR_SETS["small"], **sizes)
        one = pipeline_throughput(data_dir, ANCHOR_SETS["small"], cores=1, **sizes)
        result.update(pipeline_images_per_s=full["images_per_s"], pipeline_cores=full["cores"],
                      pipeline_images_per_s_per_core=full["images_per_s_per_core"],
                      pipeline_images_per_s_1_core=one["images_per_s"])
        result["stage_ms"] = on_cpus("stage_costs", one_cpu, data_dir=data_dir,
                                     anchors=ANCHOR_SETS["small"], **sizes)
        result["encode_ms"] = {name: on_cpus("encode_ms", one_cpu, data_dir=data_dir,
                                             anchors=kwargs, size=args.size)
                               for name, kwargs in ANCHOR_SETS.items()}
    boxes, image_hw = densest_layout(args.annotations)
    for name, kwargs in ANCHOR_SETS.items():
        for size in (args.size, None):
            result[f"crowd.{name}.{size or 'original'}"] = crowd_encoding(
                Anchors(**kwargs), boxes, image_hw, size)
    load.append(os.getloadavg()[0])
    result.update(loadavg_before_after=load, tf=tf.__version__)
    line = json.dumps(result)
    print(line)
    with (Path(__file__).parent / "results" / "pipeline_bench.jsonl").open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()

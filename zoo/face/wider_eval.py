"""The official WIDER FACE evaluation protocol (eval tools `wider_eval.m`), in NumPy.

Ground truth: `wider_face_val.mat` (all boxes, `x y w h`) and `wider_{easy,medium,hard}_val.mat`
(`gt_list`: 1-based indices of the faces that count in each setting). Predictions: a folder of
`<event>/<name>.txt` result files (`pipelines.wider_format`) or a dict
`{"event/name": (boxes, scores)}` with boxes `[ymin, xmin, ymax, xmax]` in original-image pixels.

What the official MATLAB code does, step by step, and this module does the same (the arithmetic of
steps 2 and 3 is `arithmetic="matlab"`, the default; see `zoo.face.wider_protocol`):
1. `read_pred.m`: each image's detections are sorted by score, descending (MATLAB `sort` is
   stable, so ties keep file order).
2. `norm_score.m`: scores are min-max normalised over the whole prediction set,
   `(s - min) / (max - min)`, with `max` starting at `realmin('single')` and `min` at
   `realmax('single')`: both, and so the normalised scores, are single precision.
3. `evaluation.m / image_evaluation`: per image, detections in score order; `boxoverlap.m` gives
   the IoU with every ground-truth box, with the "+1 pixel" areas (`x2 = x + w`, area
   `(x2 - x1 + 1) (y2 - y1 + 1)`). The ground-truth boxes are int32, so this runs in MATLAB
   integer arithmetic: detection corners rounded half away from zero for the intersection, the
   union rounded, IoU = round(inter / union), i.e. 1 from 0.5 up, else 0; `max` then picks the
   *first* ground-truth box with IoU 1, not the best. A detection covering two faces matches the
   one listed first, even when that one is already recalled and the other is not. At IoU >= 0.5:
   a face outside the setting's `gt_list` is ignored (the detection is then no proposal at all,
   neither TP nor FP); a counted face not yet recalled becomes recalled; a counted face already
   recalled leaves the detection a false positive. Ground-truth boxes are never "used up".
4. `image_pr_info`: for 1000 thresholds `t_k = 1 - k/1000`, k = 1..1000, the detections with
   score >= t_k give (proposals, recalled faces); these are summed over all images
   (`org_pr_cruve`); images with no detections add nothing, but their faces count.
5. `dataset_pr_info`: precision = recalled / proposals, recall = recalled / counted faces.
6. `VOCap`: precision made monotone from the right (MATLAB `max` skips the NaN of 0/0), then
   summed over the recall steps.
`arithmetic="double"` runs steps 2 and 3 in float64 (real IoU, best ground-truth box). On
synthetic detections over the whole validation set this moved AP by up to ~0.4 points, mostly
upwards (e.g. +0.20 / +0.32 / +0.42 easy / medium / hard), so it is not comparable with published
numbers.

Where the common Python port (wondervictor/WiderFace-Evaluation, `evaluation.py`) deviates:
- it computes the IoU in floating point from the ground truth cast to float and takes the best
  box, i.e. `arithmetic="double"`, so it reports the higher numbers;
- it keeps each file's detection order instead of sorting by score, so files that are not
  written in descending score order get a different matching and, because it reads the
  proposals/recall at the *last* index above a threshold, different PR points;
- its score normalisation starts from max = 0 and min = 1 instead of realmin / realmax, which
  changes the normalised scores when every score is above 1 (e.g. logits) or none is positive.
This module's own additions, for cases where MATLAB errors or yields NaN: a missing result file
counts as an image with no detections (logged); when all scores are equal (max == min, in single
precision with "matlab") they are normalised to 1.0 instead of MATLAB's 0/0 = NaN (which would
drop every detection); a setting with no counted faces gets AP NaN.
"""

import functools
from pathlib import Path

import numpy as np
import scipy.io
from absl import logging

from handgrad.pipelines import wider_format
from handgrad.pipelines.wider_format import read_results, write_results
from handgrad.zoo.face.wider_protocol import (
    ARITHMETICS,
    box_corners,
    box_overlap,
    check_arithmetic,
    check_int32_boxes,
    image_evaluation,
    image_pr_info,
    normalise_scores,
    thresholds,
    voc_ap,
)

__all__ = ["ARITHMETICS", "box_overlap", "evaluate", "evaluate_images", "load_ground_truth",
           "normalise_scores", "plot_pr_curves", "read_results", "write_results"]

SETTINGS = ("easy", "medium", "hard")


def find_ground_truth_dir(data_dir):
    """Returns the folder holding `wider_face_val.mat` under `data_dir` (or `data_dir` itself)."""
    root = Path(data_dir)
    for candidate in (root, root / "ground_truth", root / "eval_tools" / "ground_truth"):
        if (candidate / "wider_face_val.mat").is_file():
            return candidate
    raise FileNotFoundError(f"No wider_face_val.mat in {root}, {root / 'ground_truth'} or "
                            f"{root / 'eval_tools' / 'ground_truth'}")


@functools.lru_cache(maxsize=4)
def load_ground_truth(gt_dir):
    """Reads the four .mat files.

    Returns:
        A list of `(key, gt_boxes, keep)` per image, where `key` is `"event/name"`, `gt_boxes` is
        (M, 4) float64 `[x1, y1, w, h]` and `keep` maps each setting to a (M,) bool mask of the
        faces that count (from the 1-based `gt_list`).
    """
    gt_dir = Path(gt_dir)
    full = scipy.io.loadmat(gt_dir / "wider_face_val.mat")
    settings = {s: scipy.io.loadmat(gt_dir / f"wider_{s}_val.mat")["gt_list"] for s in SETTINGS}
    images = []
    for i in range(full["event_list"].shape[0]):
        event = str(full["event_list"][i, 0][0])
        files = full["file_list"][i, 0]
        boxes = full["face_bbx_list"][i, 0]
        for j in range(files.shape[0]):
            gt = np.asarray(boxes[j, 0], np.float64).reshape(-1, 4)  # (M, 4) x y w h
            keep = {}
            for s in SETTINGS:
                index = np.asarray(settings[s][i, 0][j, 0], np.int64).reshape(-1)
                mask = np.zeros(len(gt), bool)
                mask[index - 1] = True
                keep[s] = mask
            images.append((f"{event}/{files[j, 0][0]}", gt, keep))
    return images


def _collect_predictions(predictions, keys):
    """Maps each ground-truth key to (boxes (N, 4) x1 y1 x2 y2, scores (N,)) sorted by score."""
    if isinstance(predictions, (str, Path)):
        predictions = wider_format.read_results(predictions)
    by_key = {wider_format.image_key(k) if str(k).endswith((".jpg", ".png")) else str(k): v
              for k, v in predictions.items()}
    missing = [k for k in keys if k not in by_key]
    unknown = len(set(by_key) - set(keys))
    if missing:
        logging.warning("%d of %d images have no predictions (e.g. %s); counted as no detections.",
                        len(missing), len(keys), missing[0])
    if unknown:
        logging.warning("%d predicted images are not in the ground truth; ignored.", unknown)
    out = {}
    for key in keys:
        boxes, scores = by_key.get(key, (np.zeros((0, 4)), np.zeros(0)))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)  # (N, 4) ymin xmin ymax xmax
        scores = np.asarray(scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")  # read_pred.m: sort(..., 'descend')
        out[key] = (boxes[order][:, [1, 0, 3, 2]], scores[order])  # (N, 4) x1 y1 x2 y2
    return out


def evaluate(predictions, gt_dir, *, iou_thresh=0.5, thresh_num=1000, return_curves=False,
             arithmetic="matlab"):
    """WIDER FACE validation AP in the easy, medium and hard settings.

    Args:
        predictions: a folder of `<event>/<name>.txt` result files, or a dict mapping
            `"event/name"` (or `"event/name.jpg"`) to `(boxes (N, 4) [ymin, xmin, ymax, xmax]
            in original pixels, scores (N,))`.
        gt_dir: folder with `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat`.
        iou_thresh: the official 0.5.
        thresh_num: the official 1000 score thresholds.
        return_curves: also return the PR curves.
        arithmetic: `"matlab"`, the official tool's int32 IoU and single-precision scores (the
            number a paper reports), or `"double"`, the same protocol in float64.

    Returns:
        `{"easy": ap, "medium": ap, "hard": ap}`, and with `return_curves` a second dict
        `{setting: {"precision": (T,), "recall": (T,), "thresholds": (T,), "ap": float}}`.
    """
    images = load_ground_truth(str(Path(gt_dir).resolve()))
    return evaluate_images(predictions, images, iou_thresh=iou_thresh, thresh_num=thresh_num,
                           return_curves=return_curves, arithmetic=arithmetic)


def evaluate_images(predictions, images, *, iou_thresh=0.5, thresh_num=1000,
                    return_curves=False, arithmetic="matlab"):
    """`evaluate` on an already loaded ground truth (a `load_ground_truth` list or a subset).

    With `arithmetic="matlab"` the ground-truth boxes must hold int32 values (as the .mat files).
    """
    check_arithmetic(arithmetic)
    preds = _collect_predictions(predictions, [key for key, _, _ in images])
    normalised = normalise_scores([preds[key][1] for key, _, _ in images], arithmetic)
    org_pr_curve = {s: np.zeros((thresh_num, 2)) for s in SETTINGS}
    count_face = dict.fromkeys(SETTINGS, 0)
    for (key, gt, keep), scores in zip(images, normalised, strict=True):
        for s in SETTINGS:
            count_face[s] += int(keep[s].sum())
        boxes = preds[key][0]
        if len(gt) == 0 or len(boxes) == 0:
            continue
        if arithmetic == "matlab":
            check_int32_boxes(gt, f"ground truth of {key}")
        overlap = box_overlap(box_corners(gt, arithmetic), boxes, arithmetic)  # (M, N)
        best_gt = np.argmax(overlap, axis=0)  # (N,) the first of equal maxima, as MATLAB
        best_overlap = overlap[best_gt, np.arange(len(boxes))]  # (N,)
        for s in SETTINGS:
            pred_recall, proposal = image_evaluation(best_overlap, best_gt, keep[s], iou_thresh)
            org_pr_curve[s] += image_pr_info(scores, proposal, pred_recall, thresh_num)
    aps, curves = {}, {}
    for s in SETTINGS:
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = org_pr_curve[s][:, 1] / org_pr_curve[s][:, 0]
            recall = org_pr_curve[s][:, 1] / count_face[s]
        aps[s] = voc_ap(recall, precision) if count_face[s] else float("nan")
        curves[s] = {"precision": precision, "recall": recall,
                     "thresholds": thresholds(thresh_num), "ap": aps[s]}
    return (aps, curves) if return_curves else aps


def plot_pr_curves(curves, png_path, label="handgrad"):
    """Saves the three PR curves (one panel per setting, AP in the legend) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(4 * len(SETTINGS), 4), squeeze=False)
    for ax, s in zip(axes[0], SETTINGS, strict=True):
        curve = curves[s]
        valid = ~np.isnan(curve["precision"])
        ax.plot(curve["recall"][valid], curve["precision"][valid],
                label=f"{label} AP={curve['ap']:.3f}")
        ax.set(title=f"WIDER FACE val: {s}", xlabel="Recall", ylabel="Precision",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)

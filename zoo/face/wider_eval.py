"""The official WIDER FACE evaluation protocol (eval tools `wider_eval.m`), in NumPy.

Ground truth: `wider_face_val.mat` (all boxes, `x y w h`) and `wider_{easy,medium,hard}_val.mat`
(`gt_list`: 1-based indices of the faces that count in each setting). Predictions: a folder of
`<event>/<name>.txt` result files (`pipelines.wider_format`) or a dict `{"event/name": (boxes, scores)}`
with boxes `[ymin, xmin, ymax, xmax]` in original-image pixels.

What the official MATLAB code does, step by step, and this module does the same:
1. `read_pred.m`: each image's detections are sorted by score, descending (MATLAB `sort` is
   stable, so ties keep file order).
2. `norm_score.m`: scores are min-max normalised over the whole prediction set,
   `(s - min) / (max - min)`, with `max` starting at `realmin('single')` and `min` at
   `realmax('single')`.
3. `evaluation.m / image_evaluation`: per image, detections in score order; each takes the
   ground-truth box of highest IoU (first on ties) with the "+1 pixel" area of `boxoverlap.m`
   (`x2 = x + w`, area `(x2 - x1 + 1) (y2 - y1 + 1)`). At IoU >= 0.5: a face outside the
   setting's `gt_list` is ignored (the detection is then no proposal at all, neither TP nor FP);
   a counted face not yet recalled becomes recalled; a counted face already recalled leaves the
   detection a false positive. Ground-truth boxes are never "used up" for the arg-max.
4. `image_pr_info`: for 1000 thresholds `t_k = 1 - k/1000`, k = 1..1000, the detections with
   score >= t_k give (proposals, recalled faces); these are summed over all images
   (`org_pr_cruve`); images with no detections add nothing, but their faces count.
5. `dataset_pr_info`: precision = recalled / proposals, recall = recalled / counted faces.
6. `VOCap`: precision made monotone from the right (MATLAB `max` skips the NaN of 0/0), then
   summed over the recall steps.

Where the common Python port (wondervictor/WiderFace-Evaluation, `evaluation.py`) deviates:
- it keeps each file's detection order instead of sorting by score, so files that are not
  written in descending score order get a different matching and, because it reads the
  proposals/recall at the *last* index above a threshold, different PR points;
- its score normalisation starts from max = 0 and min = 1 instead of realmin / realmax, which
  changes the normalised scores (and the 1000-threshold binning) when all scores are > 0 or < 1.
This module follows the MATLAB behaviour. Its own additions, for cases where MATLAB errors or
yields NaN: a missing result file counts as an image with no detections (logged); when all
scores are equal (max == min) they are normalised to 1.0 instead of MATLAB's 0/0 = NaN (which
would drop every detection); a setting with no counted faces gets AP NaN.
"""

import functools
from pathlib import Path

import numpy as np
import scipy.io
from absl import logging

from handgrad.pipelines import wider_format
from handgrad.pipelines.wider_format import read_results, write_results

__all__ = ["evaluate", "plot_pr_curves", "read_results", "write_results", "load_ground_truth"]

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


def normalise_scores(score_lists):
    """`norm_score.m`: min-max normalisation over all images' scores (list of arrays)."""
    max_score = float(np.finfo(np.float32).tiny)  # realmin('single')
    min_score = float(np.finfo(np.float32).max)  # realmax('single')
    for scores in score_lists:
        if len(scores):
            max_score = max(max_score, float(scores.max()))
            min_score = min(min_score, float(scores.min()))
    if max_score == min_score:
        return [np.ones_like(s) for s in score_lists]
    return [(s - min_score) / (max_score - min_score) for s in score_lists]


def box_overlap(gt, pred):
    """`boxoverlap.m`: IoU (M, N) of x1 y1 x2 y2 boxes with the "+1 pixel" areas."""
    x1 = np.maximum(gt[:, None, 0], pred[None, :, 0])
    y1 = np.maximum(gt[:, None, 1], pred[None, :, 1])
    x2 = np.minimum(gt[:, None, 2], pred[None, :, 2])
    y2 = np.minimum(gt[:, None, 3], pred[None, :, 3])
    w = x2 - x1 + 1
    h = y2 - y1 + 1
    inter = w * h
    area_gt = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)  # (M,)
    area_pred = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)  # (N,)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / (area_gt[:, None] + area_pred[None, :] - inter)  # (M, N)
    overlap[(w <= 0) | (h <= 0)] = 0.0
    return overlap


def image_evaluation(best_overlap, best_gt, keep, iou_thresh):
    """`image_evaluation`: per detection in score order, (recalled faces so far, is proposal).

    Args:
        best_overlap: (N,) each detection's highest IoU with any ground-truth box.
        best_gt: (N,) index of that box (the first one on ties, as MATLAB's `max`).
        keep: (M,) bool, faces that count in this setting (`ignore == 1` in the MATLAB code).

    Returns:
        pred_recall: (N,) number of counted faces recalled by detections 0..h.
        proposal: (N,) bool, False for detections matched to an ignored face.
    """
    n = len(best_overlap)
    pred_recall = np.zeros(n, np.int64)
    proposal = np.ones(n, bool)
    recall_list = np.zeros(len(keep), np.int64)
    recalled = 0
    for h in range(n):
        if best_overlap[h] >= iou_thresh:
            idx = best_gt[h]
            if not keep[idx]:
                recall_list[idx] = -1
                proposal[h] = False
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
                recalled += 1
        pred_recall[h] = recalled
    return pred_recall, proposal


def thresholds(thresh_num=1000):
    """The official score thresholds `1 - t/thresh_num`, t = 1..thresh_num (0.999 .. 0)."""
    return 1.0 - np.arange(1, thresh_num + 1) / thresh_num


def image_pr_info(scores, proposal, pred_recall, thresh_num=1000):
    """`image_pr_info`: (thresh_num, 2) [proposals, recalled faces] at each threshold.

    MATLAB takes the last detection with score >= threshold (`find(..., 1, 'last')`); the scores
    here are sorted in descending order, so that index is the count of such scores minus one.
    """
    count = np.searchsorted(-scores, -thresholds(thresh_num), side="right")  # (T,)
    last = np.maximum(count - 1, 0)
    info = np.stack([np.cumsum(proposal)[last], pred_recall[last]], axis=1)  # (T, 2)
    info = info.astype(np.float64)
    info[count == 0] = 0.0
    return info


def voc_ap(recall, precision):
    """`VOCap` (PASCAL VOC devkit), with MATLAB's NaN-skipping `max`."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def evaluate(predictions, gt_dir, *, iou_thresh=0.5, thresh_num=1000, return_curves=False):
    """WIDER FACE validation AP in the easy, medium and hard settings.

    Args:
        predictions: a folder of `<event>/<name>.txt` result files, or a dict mapping
            `"event/name"` (or `"event/name.jpg"`) to `(boxes (N, 4) [ymin, xmin, ymax, xmax]
            in original pixels, scores (N,))`.
        gt_dir: folder with `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat`.
        iou_thresh: the official 0.5.
        thresh_num: the official 1000 score thresholds.
        return_curves: also return the PR curves.

    Returns:
        `{"easy": ap, "medium": ap, "hard": ap}`, and with `return_curves` a second dict
        `{setting: {"precision": (T,), "recall": (T,), "thresholds": (T,), "ap": float}}`.
    """
    images = load_ground_truth(str(Path(gt_dir).resolve()))
    return evaluate_images(predictions, images, iou_thresh=iou_thresh, thresh_num=thresh_num,
                           return_curves=return_curves)


def evaluate_images(predictions, images, *, iou_thresh=0.5, thresh_num=1000,
                    return_curves=False):
    """`evaluate` on an already loaded ground truth (a `load_ground_truth` list or a subset)."""
    preds = _collect_predictions(predictions, [key for key, _, _ in images])
    normalised = normalise_scores([preds[key][1] for key, _, _ in images])
    org_pr_curve = {s: np.zeros((thresh_num, 2)) for s in SETTINGS}
    count_face = dict.fromkeys(SETTINGS, 0)
    for (key, gt, keep), scores in zip(images, normalised, strict=True):
        for s in SETTINGS:
            count_face[s] += int(keep[s].sum())
        boxes = preds[key][0]
        if len(gt) == 0 or len(boxes) == 0:
            continue
        gt_xyxy = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:]], axis=1)  # (M, 4)
        overlap = box_overlap(gt_xyxy, boxes)  # (M, N)
        best_gt = np.argmax(overlap, axis=0)  # (N,)
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

"""The per-image matching and the PR/AP arithmetic of the WIDER FACE eval tools, in NumPy.

`zoo.face.wider_eval` reads the ground truth and the predictions and calls these. Every function
takes `arithmetic`:
- `"matlab"` (default): the numbers the official MATLAB code computes on the official files. Their
  ground-truth boxes are int32, and MATLAB evaluates `int32 op double` as int32, rounding half away
  from zero and saturating after every operation. So in `boxoverlap.m` the intersection corners
  are the detection's corners rounded, the union is `round(gt area + detection area) - inter`, and
  the IoU is `round(inter / union)`: 1 from IoU 0.5 up, else 0. `max` then returns the *first*
  ground-truth box with IoU 1, not the best one. `norm_score.m` starts its running max / min at
  `realmin('single')` / `realmax('single')`, which makes them (and so the normalised scores)
  single precision.
- `"double"`: the same protocol in float64: real-valued IoU, the best ground-truth box (first on
  ties), scores normalised in double precision. AP is higher whenever faces overlap.
"""

import numpy as np

ARITHMETICS = ("matlab", "double")
INT32_MIN, INT32_MAX = -(2.0**31), 2.0**31 - 1


def check_arithmetic(arithmetic):
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {ARITHMETICS}. Received: {arithmetic!r}")


def saturate(x):
    """Clips exact integer results (float64) to the int32 range, as MATLAB's int32 operations."""
    return np.clip(x, INT32_MIN, INT32_MAX)


def round_half_away(x):
    """Rounds half away from zero (MATLAB's `round`) and saturates to int32; NaN stays NaN."""
    x = np.asarray(x, np.float64)
    whole = np.trunc(x)
    with np.errstate(invalid="ignore"):
        # Not floor(|x| + 0.5): that addition rounds 0.49999999999999994 up to 1.
        return saturate(whole + np.copysign(np.abs(x - whole) >= 0.5, x))


def to_int32(x):
    """MATLAB's `int32(x)` of doubles, kept as float64: round half away from zero, saturate,
    NaN -> 0."""
    rounded = round_half_away(x)
    return np.where(np.isnan(rounded), 0.0, rounded)


def normalise_scores(score_lists, arithmetic="matlab"):
    """`norm_score.m`: min-max normalisation over all images' scores (list of (N,) arrays).

    Returns float64 arrays; with `arithmetic="matlab"` their values are single precision.
    When max == min (in the precision used) every score becomes 1.0 (MATLAB: 0/0 = NaN).
    """
    check_arithmetic(arithmetic)
    dtype = np.float32 if arithmetic == "matlab" else np.float64
    max_score = dtype(np.finfo(np.float32).tiny)  # realmin('single')
    min_score = dtype(np.finfo(np.float32).max)  # realmax('single')
    for scores in score_lists:
        if len(scores):
            max_score = max(max_score, dtype(np.max(scores)))
            min_score = min(min_score, dtype(np.min(scores)))
    if max_score == min_score:
        return [np.ones(len(s)) for s in score_lists]
    # MATLAB converts the double scores to single before subtracting the single minimum.
    return [((np.asarray(s).astype(dtype) - min_score) / (max_score - min_score))
            .astype(np.float64) for s in score_lists]


def box_corners(gt_xywh, arithmetic="matlab"):
    """`image_evaluation`: ground truth `x y w h` -> `x1 y1 x2 y2` (`x2 = x + w`)."""
    check_arithmetic(arithmetic)
    gt = np.asarray(gt_xywh, np.float64).reshape(-1, 4)
    far = gt[:, :2] + gt[:, 2:]
    return np.concatenate([gt[:, :2], saturate(far) if arithmetic == "matlab" else far], axis=1)


def box_overlap(gt, pred, arithmetic="matlab"):
    """`boxoverlap.m`: IoU (M, N) of `x1 y1 x2 y2` boxes with the "+1 pixel" areas.

    With `arithmetic="matlab"`, `gt` holds int32 values and the result is the int32 IoU
    (as float64), 0 or 1 for any pair of proper boxes.
    """
    check_arithmetic(arithmetic)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    if arithmetic == "matlab":
        return _box_overlap_int32(gt, pred)
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


def check_int32_boxes(gt, name="gt"):
    """Raises unless every value of `gt` is an int32 value (what "matlab" arithmetic assumes)."""
    gt = np.asarray(gt, np.float64)
    bad = ~np.all((gt == np.trunc(gt)) & (gt >= INT32_MIN) & (gt <= INT32_MAX), axis=-1)
    if np.any(bad):
        raise ValueError(
            f"{name}: arithmetic='matlab' emulates the official int32 ground truth, so the "
            f"ground-truth boxes must hold int32 values. Received the box "
            f"{gt[bad][0].tolist()}; use arithmetic='double' for other boxes")


def _box_overlap_int32(gt, pred):
    """`boxoverlap.m` with `a = gt` int32 and `b = pred` double, one MATLAB operation at a time."""
    check_int32_boxes(gt)
    # max/min(int32, double) is int32, and rounding commutes with max/min. NaN corners stay NaN
    # so that fmax/fmin skip them, as MATLAB's max/min do.
    corners = round_half_away(pred)  # (N, 4)
    x1 = np.fmax(gt[:, None, 0], corners[None, :, 0])  # (M, N)
    y1 = np.fmax(gt[:, None, 1], corners[None, :, 1])
    x2 = np.fmin(gt[:, None, 2], corners[None, :, 2])
    y2 = np.fmin(gt[:, None, 3], corners[None, :, 3])
    # One saturation for `x2 - x1 + 1`: it differs from two only when the result is <= 0,
    # and such pairs get overlap 0 below.
    w = saturate(x2 - x1 + 1)
    h = saturate(y2 - y1 + 1)
    inter = saturate(w * h)
    area_gt = saturate(saturate(saturate(gt[:, 2] - gt[:, 0]) + 1)
                       * saturate(saturate(gt[:, 3] - gt[:, 1]) + 1))  # (M,) int32
    area_pred = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)  # (N,) double
    union = saturate(to_int32(area_gt[:, None] + area_pred[None, :]) - inter)
    # int32 ./ int32 rounds the quotient (x / 0 saturates, 0 / 0 is 0). For int32 operands the
    # float64 quotient is never off by enough to cross a .5 boundary.
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = to_int32(inter / union)
    overlap[(w <= 0) | (h <= 0)] = 0.0
    return overlap


def image_evaluation(best_overlap, best_gt, keep, iou_thresh):
    """`image_evaluation`: per detection in score order, (recalled faces so far, is proposal).

    Args:
        best_overlap: (N,) each detection's highest IoU with any ground-truth box.
        best_gt: (N,) index of that box (the first one on ties, as MATLAB's `max`).
        keep: (M,) bool, faces that count in this setting (`ignore == 1` in the MATLAB code).
        iou_thresh: the official 0.5.

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

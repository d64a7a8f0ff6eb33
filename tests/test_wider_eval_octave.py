"""`zoo.face.wider_eval` against the official eval tools themselves: `read_pred.m`, `norm_score.m`,
`evaluation.m`, `boxoverlap.m` and `VOCap.m` from `../shared/widerface/eval_tools`, unmodified,
run by GNU Octave on the same .mat ground truth and result files.

The tests need `octave-cli` (`apt-get install -y octave`; `.ci/run` installs it) and fail without
it: they are the only check that the int32 / single-precision emulation is the official number.
"""

import shutil
import subprocess

import numpy as np
import pytest
import scipy.io

from handgrad.pipelines import boxes as primitives
from handgrad.pipelines import wider_format
from handgrad.zoo.face import wider_eval

SETTINGS = wider_eval.SETTINGS
OFFICIAL = ("read_pred.m", "norm_score.m", "evaluation.m", "boxoverlap.m", "plot/VOCap.m")
EVENTS = 61  # read_pred.m, norm_score.m and evaluation.m loop over event_num = 61 events.

# Octave cannot write MATLAB -v7.3 files (evaluation.m saves its PR curve so): this shadows
# `save` for the official code and writes the same variables as -v7 instead.
SAVE_M = r"""function save(file, varargin)
names = sprintf(', ''%s''', varargin{~strcmp(varargin, '-v7.3')});
evalin('caller', sprintf('builtin(''save'', ''-v7'', ''%s''%s);', file, names));
end
"""
# wider_eval.m without its plotting: the official steps, then VOCap on the saved curve.
DRIVER_M = r"""warning('off', 'all');
pred_list = read_pred('pred', 'gt/wider_face_val.mat');
norm_pred_list = norm_score(pred_list);
settings = {'easy', 'medium', 'hard'};
for i = 1:3
  evaluation(norm_pred_list, sprintf('gt/wider_%s_val.mat', settings{i}), ...
             [settings{i} '_val'], 'setting_int', 'handgrad');
  load(sprintf('plot/baselines/Val/setting_int/handgrad/wider_pr_info_handgrad_%s_val.mat', ...
               settings{i}));
  printf('AP %s %.17g\n', settings{i}, VOCap(pr_cruve(:, 2), pr_cruve(:, 1)));
  printf('PR %.17g %.17g\n', pr_cruve');
end
"""


@pytest.fixture(scope="module")
def official(wider_dir):
    """`official(folder, images, predictions)`: runs the official code in Octave and handgrad's
    `evaluate` (both arithmetics) on the same files; returns {"official" | "matlab" | "double":
    ({setting: ap}, {setting: (1000, 2) [precision, recall]})}."""
    octave_cli = shutil.which("octave-cli")
    if octave_cli is None:
        pytest.fail("octave-cli not found: these tests run the official WIDER FACE eval tools in "
                    "GNU Octave. Install it with `apt-get install -y octave` (.ci/run does).")

    def run(folder, images, predictions):
        write_ground_truth(folder / "gt", images)
        for key, (boxes, scores) in predictions.items():
            wider_format.write_results(folder / "pred", key + ".jpg", boxes, scores)
        for name in OFFICIAL:
            shutil.copy(wider_dir / "eval_tools" / name, folder)
        (folder / "save.m").write_text(SAVE_M)
        (folder / "driver.m").write_text(DRIVER_M)
        done = subprocess.run([octave_cli, "--norc", "--quiet", "--no-window-system", "driver.m"],
                              cwd=folder, capture_output=True, text=True, timeout=120)
        lines = done.stdout.splitlines()
        aps = {line.split()[1]: float(line.split()[2]) for line in lines if line.startswith("AP ")}
        pr = [[float(v) for v in line.split()[1:]] for line in lines if line.startswith("PR ")]
        assert done.returncode == 0 and len(aps) == 3 and len(pr) == 3000, done.stderr[-3000:]
        out = {"official": (aps, dict(zip(SETTINGS, np.reshape(pr, (3, 1000, 2)), strict=True)))}
        for arithmetic in ("matlab", "double"):
            aps, curves = wider_eval.evaluate(folder / "pred", folder / "gt", return_curves=True,
                                              arithmetic=arithmetic)
            out[arithmetic] = (aps, {s: np.stack([curves[s]["precision"], curves[s]["recall"]], 1)
                                     for s in SETTINGS})
        return out

    return run


def _cell(items):
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def write_ground_truth(gt_dir, images):
    """The four official .mat files for `images` [(key, gt (M, 4) int x y w h, keep)], padded
    to 61 events with empty ones; boxes int32 and `gt_list` uint8, as in the real files."""
    events = list(dict.fromkeys(key.split("/")[0] for key, _, _ in images))
    events += [f"{k}--Filler" for k in range(EVENTS - len(events))]
    by_event = [[im for im in images if im[0].split("/")[0] == e] for e in events]
    base = {
        "event_list": _cell([np.array([e]) for e in events]),
        "file_list": _cell([_cell([np.array([key.split("/")[1]]) for key, _, _ in ims])
                            for ims in by_event]),
        "face_bbx_list": _cell([_cell([np.asarray(gt).astype(np.int32) for _, gt, _ in ims])
                                for ims in by_event]),
    }
    gt_dir.mkdir(parents=True)
    scipy.io.savemat(gt_dir / "wider_face_val.mat", base)
    for s in SETTINGS:
        lists = _cell([_cell([(np.flatnonzero(keep[s]) + 1).astype(np.uint8).reshape(-1, 1)
                              for _, _, keep in ims]) for ims in by_event])
        scipy.io.savemat(gt_dir / f"wider_{s}_val.mat", dict(base, gt_list=lists))


def assert_same(result, name="matlab"):
    """handgrad's `name` arithmetic gives the official AP and PR curves."""
    (official_aps, official_curves), (aps, curves) = result["official"], result[name]
    for s in SETTINGS:
        assert aps[s] == pytest.approx(official_aps[s], abs=1e-12), s
        np.testing.assert_allclose(curves[s], official_curves[s], rtol=0, atol=1e-12,
                                   equal_nan=True, err_msg=s)


# ---------------------------------------------------------------- crafted cases


def _image(key, gt_xywh, keep=None):
    gt = np.asarray(gt_xywh, np.float64).reshape(-1, 4)
    keep = keep or {}
    return key, gt, {s: np.asarray(keep.get(s, [True] * len(gt)), bool) for s in SETTINGS}


def _dets(xywh, scores):
    return primitives.xywh_to_yxyx(xywh), np.asarray(scores, np.float64)


FAR = [300, 300, 20, 20]  # a false positive far from every face
CASES = {
    # B overlaps A (IoU 0.62) and is listed second. The detection on B (file first, tied score)
    # has IoU >= 0.5 with A, so MATLAB's `max` gives A; the one on A is then a duplicate.
    "overlapping_faces_first_not_best": (
        [_image("0--Crafted/overlap", [[10, 10, 20, 20], [15, 10, 20, 20]])],
        {"0--Crafted/overlap": _dets([[15, 10, 20, 20], [10, 10, 20, 20], FAR],
                                     [0.8, 0.8, 0.1])}),
    # One detection between two faces (IoU 0.68 with A, 0.83 with B); A counts only in hard:
    # in easy / medium the detection lands on the ignored face and B is never found.
    "box_over_two_faces_ignored_first": (
        [_image("0--Crafted/two", [[0, 0, 20, 20], [6, 0, 20, 20]],
                {"easy": [False, True], "medium": [False, True]})],
        {"0--Crafted/two": _dets([[4, 0, 20, 20], FAR], [0.9, 0.2])}),
    # 5 x 5 faces. Half a pixel off: IoU 0.68 in double, but the rounded corners leave a
    # 4 x 4 intersection over a 25 + 25 - 16 union -> 0. At (-1.5, 0) with width 3: 15 / 30,
    # exactly 0.5 after rounding (-1.5 -> -2, 1.5 -> 2), and round(0.5) = 1, a hit.
    "half_pixel_corners": (
        [_image("1--Fractional/tiny", [[0, 0, 4, 4], [40, 0, 4, 4]])],
        {"1--Fractional/tiny": _dets([[-1.5, 0, 3, 4], [40.5, 0.5, 4, 4], FAR],
                                     [0.9, 0.6, 0.3])}),
    # 10 x 10 face, detection 20.04 x 10: inter 100, areas 100 + 200.4, union
    # round(300.4) - 100 = 200 -> IoU 0.5, a hit; in double 100 / 200.4 < 0.5.
    "rounded_union_near_half": (
        [_image("2--Union/near_half", [[0, 0, 9, 9]])],
        {"2--Union/near_half": _dets([[0, 0, 19.04, 9], FAR], [0.9, 0.1])}),
    # Scores already in [0, 1]: single(0.7) = 0.69999999 falls below the threshold 1 - 300/1000,
    # so the second face is found only at the threshold below, together with the 0.6995 FP.
    "single_precision_score_on_threshold": (
        [_image("3--Scores/threshold", [[0, 0, 10, 10], [100, 0, 10, 10]])],
        {"3--Scores/threshold": _dets([[0, 0, 10, 10], [100, 0, 10, 10], FAR, FAR],
                                      [1.0, 0.7, 0.6995, 0.0])}),
}


@pytest.mark.parametrize("case", CASES)
def test_crafted_case_equals_official(official, tmp_path, case):
    result = official(tmp_path, *CASES[case])
    assert_same(result, "matlab")
    # Each case is one the float64 protocol gets wrong, so this test can fail.
    assert any(abs(result["double"][0][s] - result["official"][0][s]) > 1e-3 for s in SETTINGS)


def test_random_tiny_overlapping_faces_with_half_pixel_detections(official, tmp_path):
    # 40 images of 2-4 overlapping faces of 3-12 px, some at negative coordinates (where
    # round-half-away-from-zero differs from round-half-up), detections moved and resized by
    # half pixels, scores on the 1/1000 grid (ties, single-precision threshold cases), some
    # faces outside the easy / medium lists.
    rng = np.random.default_rng(3)
    images, predictions = [], {}
    for i in range(40):
        m = int(rng.integers(2, 5))
        gt = np.concatenate([rng.integers(-10, 20, (m, 2)), rng.integers(2, 12, (m, 2))], 1)
        keep = {"easy": rng.random(m) < 0.5, "medium": rng.random(m) < 0.8}
        key = f"{i % 7}--Tiny/tiny_{i}"
        images.append(_image(key, gt, keep))
        dets = np.repeat(gt, 2, axis=0) + rng.integers(-3, 4, (2 * m, 4)) / 2
        predictions[key] = _dets(dets, rng.integers(0, 1001, 2 * m) / 1000)
    result = official(tmp_path, images, predictions)
    assert_same(result, "matlab")
    assert any(abs(result["double"][0][s] - result["official"][0][s]) > 1e-3 for s in SETTINGS)


def test_real_ground_truth_jittered_detections(official, real_images, tmp_path):
    # 30 validation images (their int32 boxes and setting lists) with detector-like errors:
    # moved / resized by ~8% of the face size, 10% missed, false positives, scores in (0, 1).
    rng = np.random.default_rng(4)
    chosen = [real_images[i] for i in rng.choice(len(real_images), 30, replace=False)]
    predictions = {}
    for key, gt, _ in chosen:
        size = np.sqrt(np.abs(gt[:, 2] * gt[:, 3]))[:, None]
        xy = gt[:, :2] + rng.normal(0, 0.08, (len(gt), 2)) * size
        wh = gt[:, 2:] * np.exp(rng.normal(0, 0.08, (len(gt), 2)))
        dets = np.concatenate([xy, wh], 1)[rng.random(len(gt)) > 0.1]
        fp = rng.uniform(0, 900, (int(rng.poisson(2)), 2))
        dets = np.concatenate([dets, np.concatenate([fp, np.full_like(fp, 30)], 1)])
        predictions[key] = _dets(dets, rng.uniform(0.01, 0.99, len(dets)))
    assert_same(official(tmp_path, chosen, predictions), "matlab")


@pytest.fixture(scope="module")
def real_images(wider_dir):
    return wider_eval.load_ground_truth(str((wider_dir / "ground_truth").resolve()))

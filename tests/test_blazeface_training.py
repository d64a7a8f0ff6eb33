"""BlazeFace fine-tuning: the target encoder against MediaPipe's decoding (postprocess.py, written
from MediaPipe's calculator, tested against LiteRT in test_blazeface.py), the matching rules on
literal faces, and the training loss's gradients against TF autodiff of a plain-TF loss on the
stock Keras twin.

Gradient tolerance: both networks compute in float64 with the same weights and inputs (in
float32 their backward kernels' summation orders, which depend on the CPU, differ by an amount
that grows with depth, see detector_twins); both losses compute in float32, as loss.py does, so
the gradients reaching the two networks differ only by float32 rounding of a few element-wise ops
(hand-derived focal / smooth L1 backward vs autodiff), which does not depend on the network's
depth. Measured <= 1.3e-7 (short) / 3.6e-7 (full) of each gradient's largest magnitude; bound 3e-5.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from detector_twins import float64_policy

from handgrad.pipelines.generators import synthetic_faces
from handgrad.zoo.face.blazeface.detector import BlazeFaceDetector
from handgrad.zoo.face.blazeface.postprocess import decode_detections
from handgrad.zoo.face.blazeface.targets import BlazeFaceTargets
from handgrad.zoo.face.blazeface.tflite_import import load_tflite_weights, tflite_path
from handgrad.zoo.face.blazeface.variants import get_variant

VARIANTS = ("short_range", "full_range")
GRAD_TOLERANCE = 3e-5


def random_faces(rng, size, count):
    """Non-overlapping square-ish faces (a diagonal of cells), sides 4 .. size / 3 px, with six
    keypoints inside each box: boxes `(count, 4)`, keypoints `(count, 6, 2)`."""
    cell = size / count
    boxes, kps = [], []
    for i in range(count):
        side = rng.uniform(4, min(cell, size / 3))
        y0, x0 = i * cell + rng.uniform(0, cell - side), rng.uniform(0, size - side)
        box = [y0, x0, y0 + side * rng.uniform(0.8, 1.0), x0 + side]
        boxes.append(box)
        kps.append(np.stack([rng.uniform(box[0], box[2], 6), rng.uniform(box[1], box[3], 6)], 1))
    return np.float32(boxes), np.float32(kps)


@pytest.mark.parametrize("variant", VARIANTS)
def test_targets_decode_back_to_the_faces(variant):
    spec = get_variant(variant)
    boxes, kps = random_faces(np.random.default_rng(0), spec.input_size, 5)
    encoder = BlazeFaceTargets(variant)
    t = encoder.encode(None, np.pad(boxes, [[0, 3], [0, 0]]), 5,
                       np.pad(kps, [[0, 3], [0, 0], [0, 0]]))
    raw = tf.concat([t["box_targets"], t["keypoint_targets"]], -1)[None]  # (1, A, 16)
    decoded, decoded_kps = decode_detections(raw, encoder.anchors, spec.input_size,
                                             spec.box_scale)
    _, matched = encoder.match(tf.constant(boxes))
    positive = np.flatnonzero(t["cls_targets"].numpy() == 1)
    faces = matched.numpy()[positive]
    assert set(faces) == set(range(5))  # every face has an anchor
    np.testing.assert_allclose(decoded[0].numpy()[positive], boxes[faces], atol=1e-3)
    np.testing.assert_allclose(decoded_kps[0].numpy()[positive], kps[faces], atol=1e-3)
    np.testing.assert_array_equal(t["keypoint_weights"].numpy()[positive], 1.0)
    assert not t["box_targets"].numpy()[t["cls_targets"].numpy() != 1].any()


def test_full_range_matching_literal():
    # face [40, 40, 60, 60]: centre 50, side 20; anchor centres 4 i + 2. Central part: within
    # max(0.25 * 20, 4 / 2) = 5 px of 50 -> 46, 50, 54 (i = 11..13); inside the box: 42 .. 58
    # (i = 10..14): the other 16 of those 25 are ignored.
    t = BlazeFaceTargets("full_range").encode(None, [[40.0, 40.0, 60.0, 60.0]], 1)
    labels = t["cls_targets"].numpy().reshape(48, 48)
    expected = np.zeros((48, 48))
    expected[10:15, 10:15] = -1
    expected[11:14, 11:14] = 1
    np.testing.assert_array_equal(labels, expected)
    assert not t["keypoint_weights"].numpy().any()  # keypoints unknown: masked


def test_short_range_matching_picks_the_fitting_anchor_sizes():
    # nominal sizes 19 and 29 px on the stride-8 grid, 45 .. 111 px on the stride-16 grid. A
    # 20 px face fits 19 best; 29 is within x1.5 of that fit (|log(20/29)| <= |log(20/19)| +
    # log 1.5), 45 is not. Centre 50: the stride-8 centres 8 i + 4 within max(5, 4) px: 52 only.
    # So anchors (6, 6, k = 0, 1) are positive: indices (6 * 16 + 6) * 2 + k.
    t = BlazeFaceTargets("short_range").encode(None, [[40.0, 40.0, 60.0, 60.0]], 1)
    labels = t["cls_targets"].numpy()
    assert np.flatnonzero(labels == 1).tolist() == [204, 205]
    # A 100 px face centred at 64 fits the 8 x 8 grid's 96 px anchor (slot 4 of 45, 56, 70, 82,
    # 96, 111 px) best; 70, 82 and 111 are within x1.5 of that fit, 56 is not (x1.79). Centres
    # 16 j + 8 within max(25, 8) px of 64: j = 2..5. The 512 anchors of the 16 x 16 grid come first.
    t = BlazeFaceTargets("short_range").encode(None, [[14.0, 14.0, 114.0, 114.0]], 1)
    expected = [512 + (r * 8 + c) * 6 + k for r in range(2, 6) for c in range(2, 6)
                for k in range(2, 6)]
    assert np.flatnonzero(t["cls_targets"].numpy() == 1).tolist() == expected


def test_no_faces_gives_all_background():
    t = BlazeFaceTargets("full_range").encode(None, np.zeros((4, 4), np.float32), 0)
    assert not t["cls_targets"].numpy().any() and not t["box_targets"].numpy().any()


def reference_loss(targets, outputs, alpha=0.25, gamma=2.0):
    """The loss of loss.py written with plain TF ops (autodiff), for the stock twin."""
    cls = targets["cls_targets"]
    logits = outputs["classificators"][..., 0]
    y = tf.cast(cls > 0.5, tf.float32)
    p = tf.sigmoid(logits)
    p_t = y * p + (1 - y) * (1 - p)
    log_p_t = y * tf.math.log_sigmoid(logits) + (1 - y) * tf.math.log_sigmoid(-logits)
    focal = -(y * alpha + (1 - y) * (1 - alpha)) * (1 - p_t) ** gamma * log_p_t
    n = tf.maximum(tf.reduce_sum(y), 1.0)
    t = targets["box_targets"]
    face = tf.where(y > 0, tf.sqrt(tf.maximum(t[..., 2] * t[..., 3], 1e-6)), 1.0)[..., None]

    def huber(d):
        return tf.where(tf.abs(d) < 1, 0.5 * d * d, tf.abs(d) - 0.5)

    reg = outputs["regressors"]
    box = huber((reg[..., :4] - t) / (face * [0.1, 0.1, 0.2, 0.2]))
    kp = huber((reg[..., 4:] - targets["keypoint_targets"]) / (face * 0.1))
    w = targets["keypoint_weights"]
    return (tf.reduce_sum(focal * tf.cast(cls >= 0, tf.float32)) / n
            + tf.reduce_sum(tf.reduce_sum(box, -1) * y) / n
            + tf.reduce_sum(tf.reduce_sum(kp, -1) * w) / tf.maximum(tf.reduce_sum(w), 1.0))


def synthetic_batch(variant, count=2):
    """Real LFW faces on real photos (pipelines.synthetic_faces) at the variant's input size,
    with made-up keypoints inside each box so the keypoint term takes part."""
    size = get_variant(variant).input_size
    faces, backgrounds = synthetic_faces.load_faces(), synthetic_faces.load_backgrounds()
    encoder = BlazeFaceTargets(variant)
    rng = np.random.default_rng(1)
    images, targets = [], []
    for i in range(count):
        _, _, image, rows = synthetic_faces.compose_image(
            synthetic_faces.image_rng(0, "train", i), faces, backgrounds, size)
        square = np.zeros((size, size, 3), np.float32)
        square[:image.shape[0], :image.shape[1]] = image
        x, y, w, h = np.float32(rows).reshape(-1, 10)[:, :4].T
        boxes = np.stack([y, x, y + h, x + w], 1)  # (N, 4) [ymin, xmin, ymax, xmax]
        kps = np.stack([rng.uniform(boxes[:, None, 0], boxes[:, None, 2], (len(boxes), 6)),
                        rng.uniform(boxes[:, None, 1], boxes[:, None, 3], (len(boxes), 6))], -1)
        images.append(square)
        targets.append(encoder.encode(None, boxes, len(boxes), np.float32(kps)))
    batch = {k: tf.stack([t[k] for t in targets]) for k in targets[0]}
    return tf.constant(np.stack(images)), batch


def _float32(outputs):
    """The float64 network's outputs, as the float32 loss sees them (loss.py computes in float32;
    handing it float64 outputs fails: its keypoint term is float32, the detection loss float64)."""
    return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_gradients_match_stock_twin_autodiff(variant):
    with float64_policy():
        ours = BlazeFaceDetector(model={"variant": variant})
        twin = BlazeFaceDetector(model={"variant": variant, "layers": "keras"})
    load_tflite_weights(ours.network, tflite_path(variant))
    twin.network.set_weights(ours.network.get_weights())
    images, targets = synthetic_batch(variant)
    images = tf.cast(images, tf.float64)
    assert targets["cls_targets"].numpy().max() == 1  # faces present

    @tf.function
    def ours_grads():  # what train_step differentiates (its network in float64)
        with tf.GradientTape() as tape:
            outputs = _float32(ours(images, training=True))
            loss = ours.compute_detection_loss(targets, outputs)["loss"]
        return loss, tape.gradient(loss, ours.trainable_variables)

    @tf.function
    def twin_grads():
        with tf.GradientTape() as tape:
            loss = reference_loss(targets, _float32(twin(images, training=True)))
        return loss, tape.gradient(loss, twin.trainable_variables)

    (loss, grads), (ref_loss, ref_grads) = ours_grads(), twin_grads()
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for var, a, b in zip(ours.trainable_variables, grads, ref_grads, strict=True):
        assert a.dtype == b.dtype == tf.float64, var.path
        err = np.abs(a - b).max() / np.abs(b).max()
        assert err <= GRAD_TOLERANCE, f"{var.path}: {err:.2e}"


def test_detector_keras_file_reloads_after_import_handgrad(tmp_path):
    """handgrad-eval loads model.keras in a process that imported only `handgrad`."""
    model = BlazeFaceDetector(model={"variant": "short_range", "pretrained": False},
                              postprocess={"score_threshold": 0.2})
    model.save(tmp_path / "bf.keras")
    x = tf.random.stateless_uniform([1, 128, 128, 3], seed=[0, 1])
    np.save(tmp_path / "x.npy", x.numpy())
    script = textwrap.dedent(f"""
        import json, numpy as np, keras, handgrad
        m = keras.models.load_model({str(tmp_path / "bf.keras")!r})
        out = m(np.load({str(tmp_path / "x.npy")!r}))
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: np.asarray(v) for k, v in out.items()}})
        print(json.dumps(m.get_config()["postprocess"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1])["score_threshold"] == 0.2
    got = np.load(tmp_path / "out.npz")
    for key, value in model(x).items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)

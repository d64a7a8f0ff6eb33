"""IoU, encode/decode round trip and anchor matching on hand-built cases with literal answers."""

import math

import numpy as np
import pytest
import tensorflow as tf

from handgrad.pipelines import boxes as primitives
from handgrad.zoo.face import box_coder as box_ops

# Five literal anchors, [ymin, xmin, ymax, xmax] px: a 2x2 grid of 10-px cells and one 20-px box.
ANCHORS = np.array([
    [0, 0, 10, 10], [0, 10, 10, 20], [10, 0, 20, 10], [10, 10, 20, 20], [0, 0, 20, 20],
], np.float32)


def _iou_numpy(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            h = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            w = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - h * w
            out[i, j] = h * w / union if union > 0 else 0.0
    return out


def test_iou_matches_numpy_loop():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 30, (7, 2))
    a = np.concatenate([lo, lo + rng.uniform(1, 20, (7, 2))], axis=1).astype(np.float32)
    np.testing.assert_allclose(primitives.iou(a, ANCHORS).numpy(), _iou_numpy(a, ANCHORS),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(primitives.iou(ANCHORS[:1], ANCHORS[4:]).numpy(), [[0.25]])


def test_encode_literal_values():
    face = np.array([[2, 2, 4, 4]], np.float32)  # centre (3, 3), 2x2
    t = box_ops.encode_boxes(face, ANCHORS[:1]).numpy()  # anchor centre (5, 5), 10x10
    # t_y = (3 - 5) / 10 / 0.1, t_h = log(2 / 10) / 0.2
    np.testing.assert_allclose(t, [[-2.0, -2.0, math.log(0.2) / 0.2, math.log(0.2) / 0.2]],
                               rtol=1e-5)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    yx = rng.uniform(0, 600, (200, 2))
    hw = rng.uniform(4, 300, (200, 2))
    boxes = np.concatenate([yx, yx + hw], axis=1).astype(np.float32)
    a_yx = yx + rng.uniform(-20, 20, (200, 2))
    a_hw = hw * rng.uniform(0.5, 2.0, (200, 2))
    anchors = np.concatenate([a_yx, a_yx + a_hw], axis=1).astype(np.float32)
    for variances in [(0.1, 0.1, 0.2, 0.2), (1.0, 1.0, 1.0, 1.0)]:
        deltas = box_ops.encode_boxes(boxes, anchors, variances)
        np.testing.assert_allclose(box_ops.decode_boxes(deltas, anchors, variances).numpy(),
                                   boxes, atol=2e-3)
    # variances scale the targets: (0.1, 0.1, 0.2, 0.2) gives 10x / 5x the plain encoding.
    plain = box_ops.encode_boxes(boxes, anchors, (1.0, 1.0, 1.0, 1.0)).numpy()
    scaled = box_ops.encode_boxes(boxes, anchors).numpy()
    np.testing.assert_allclose(scaled, plain / [0.1, 0.1, 0.2, 0.2], rtol=1e-5, atol=1e-5)


def _targets(boxes, num_boxes, anchors=ANCHORS, **kwargs):
    out = box_ops.encode_targets(np.asarray(boxes, np.float32).reshape(-1, 4), num_boxes,
                                 anchors, **kwargs)
    return out["cls_targets"].numpy(), out["box_targets"].numpy()


def test_face_exactly_on_anchor_with_padding_rows():
    cls, box = _targets([[0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 15, 15]], 1)
    np.testing.assert_array_equal(cls, [1, 0, 0, 0, 0])  # a4: IoU 0.25 -> background
    np.testing.assert_allclose(box, np.zeros((5, 4)), atol=1e-6)


def test_face_smaller_than_every_anchor_is_force_matched():
    cls, box = _targets([[2, 2, 4, 4]], 1)  # IoU 0.04 with a0, 0.01 with a4
    np.testing.assert_array_equal(cls, [1, 0, 0, 0, 0])
    np.testing.assert_allclose(box[0], [-2, -2, math.log(0.2) / 0.2, math.log(0.2) / 0.2],
                               rtol=1e-5)
    np.testing.assert_allclose(box[1:], 0.0)
    cls, _ = _targets([[2, 2, 4, 4]], 1, force_match=False)
    np.testing.assert_array_equal(cls, [0, 0, 0, 0, 0])


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_two_faces_competing_for_one_anchor(graph):
    # Face A = a0 exactly (IoU 1). Face B = [0,0,10,12]: IoU 0.833 with a0, 0.1 a1, 0.3 a4.
    # A keeps a0; B, forced, claims its best free anchor a4.
    faces = tf.constant([[0, 0, 10, 12], [0, 0, 10, 10]], tf.float32)
    fn = (tf.function(box_ops.match_anchors) if graph else box_ops.match_anchors)
    labels, matched, max_iou = fn(ANCHORS, faces, tf.constant(2))
    np.testing.assert_array_equal(labels.numpy(), [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(matched.numpy(), [1, 0, 0, 0, 0])
    np.testing.assert_allclose(max_iou.numpy(), [1.0, 0.1, 0.0, 0.0, 0.3], rtol=1e-5)


def test_ignore_band_between_thresholds():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 22], [0, 0, 10, 30]], np.float32)
    cls, _ = _targets([[0, 0, 10, 10]], 1, anchors=anchors)  # IoUs 1, 0.4545, 0.333
    np.testing.assert_array_equal(cls, [1, -1, 0])


def test_image_without_faces_is_all_background():
    cls, box = _targets(np.zeros((3, 4)), 0)
    np.testing.assert_array_equal(cls, [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(box, np.zeros((5, 4)))
    cls, _ = _targets(np.zeros((0, 4)), 0)
    np.testing.assert_array_equal(cls, [0, 0, 0, 0, 0])


def test_targets_inside_tf_data_map():
    ds = tf.data.Dataset.from_tensors(
        (tf.constant([[0, 0, 10, 12], [0, 0, 10, 10]], tf.float32), tf.constant(2)))
    ds = ds.map(lambda b, n: box_ops.encode_targets(b, n, ANCHORS))
    out = next(iter(ds))
    np.testing.assert_array_equal(out["cls_targets"].numpy(), [1, 0, 0, 0, 1])
    # a4 targets face B [0,0,10,12]: centre (5, 6) vs (10, 10), size 10x12 vs 20x20.
    np.testing.assert_allclose(out["box_targets"].numpy()[4],
                               [-2.5, -2.0, math.log(0.5) / 0.2, math.log(0.6) / 0.2], rtol=1e-5)

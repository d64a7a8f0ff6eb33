"""The pretrained BlazeFace export (`handgrad-export --pretrained=...`): the SavedModel, reloaded
with handgrad blocked, against MediaPipe's own .tflite run by the LiteRT interpreter and decoded
by the NumPy port of MediaPipe's calculators (test_blazeface.py), mapped back to original pixels
here in NumPy; and the two commands end to end on a folder of real photos.

Tolerances: the network outputs agree to float32 rounding (test_blazeface: <= 1e-6 of their
scale), so the decoded boxes agree to 1e-2 input pixels there; in original pixels that is
1e-2 x max(H, W) / S (S = 192: 0.03 px for a 512-pixel photo). 0.05 px is used.
"""

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.cbook
import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import skimage.data
import tensorflow as tf
from test_blazeface import ASTRONAUT_FACE, litert_outputs, mediapipe_detections

from handgrad.export.pretrained import export_pretrained
from handgrad.zoo.face.blazeface.inference import letterbox
from handgrad.zoo.face.blazeface.variants import get_variant

BIN = Path(sys.executable).parent  # the console scripts of this environment


def _png(image):
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_bytes():
    """Encoded real photos: a colour PNG, a JPEG as shipped, a grey PNG."""
    grace = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return {"astronaut": _png(skimage.data.astronaut()), "grace_hopper": grace.read_bytes(),
            "camera": _png(skimage.data.camera())}


def reference(data, variant, score_threshold=None, decoder="tf"):
    """MediaPipe's detections of one encoded image in original pixels: TF's decoder (the
    `image_bytes` signature's) or Pillow's (handgrad-detect's: JPEG decoders differ by a few
    levels, boxes by ~0.2 px), the letterbox, LiteRT's network, NumPy decoding + weighted NMS,
    NumPy map back."""
    spec = get_variant(variant)
    if decoder == "tf":
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    else:
        image = np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(io.BytesIO(data)))
                           .convert("RGB"))
    h, w = image.shape[:2]
    side = max(h, w)
    x = letterbox(image[None] / 255.0, spec.input_size)[0].numpy()
    reg, cls = litert_outputs(variant, x)
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    boxes, kps, scores = mediapipe_detections(reg[0], cls[0], variant, threshold)
    scale, pad = side / spec.input_size, np.array([(side - h) // 2, (side - w) // 2])
    boxes = np.clip(boxes * scale - np.tile(pad, 2), 0, [h, w, h, w])
    return boxes, kps * scale - pad, scores


@pytest.fixture(scope="module")
def full_range_export(tmp_path_factory):
    return export_pretrained("blazeface_full_range", tmp_path_factory.mktemp("bf_full"))


def test_reloaded_without_handgrad_matches_mediapipe(full_range_export, photo_bytes, tmp_path):
    names = list(photo_bytes)
    for name in names:
        (tmp_path / name).write_bytes(photo_bytes[name])
    np.save(tmp_path / "astronaut.npy", skimage.data.astronaut()[None])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["handgrad"] = None  # any `import handgrad` now raises ImportError
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(full_range_export)!r})
        data = [open({str(tmp_path)!r} + "/" + n, "rb").read() for n in {names!r}]
        out = m.signatures["image_bytes"](image_bytes=tf.constant(data))
        arr = np.load({str(tmp_path / "astronaut.npy")!r})
        one = m.signatures["serving_default"](images=tf.constant(arr))
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: v.numpy() for k, v in out.items()}},
                 **{{"uint8_" + k: v.numpy() for k, v in one.items()}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    got = np.load(tmp_path / "out.npz")
    for i, name in enumerate(names):
        boxes, kps, scores = reference(photo_bytes[name], "full_range")
        n = int(got["num_detections"][i])
        assert n == len(scores) >= 1, name
        np.testing.assert_allclose(got["boxes"][i, :n], boxes, atol=0.05, err_msg=name)
        np.testing.assert_allclose(got["keypoints"][i, :n], kps, atol=0.05, err_msg=name)
        np.testing.assert_allclose(got["scores"][i, :n], scores, atol=1e-5, err_msg=name)
        assert not got["scores"][i, n:].any() and not got["boxes"][i, n:].any(), name
    # the uint8 signature on the decoded PNG is the bytes signature's first image
    n = int(got["uint8_num_detections"][0])
    np.testing.assert_allclose(got["uint8_boxes"][0, :n], got["boxes"][0, :n], atol=1e-3)


def test_astronaut_face_in_original_pixels(full_range_export, photo_bytes):
    f = tf.saved_model.load(str(full_range_export)).signatures["image_bytes"]
    out = f(image_bytes=tf.constant([photo_bytes["astronaut"]]))
    assert int(out["num_detections"][0]) == 1
    box = out["boxes"][0, 0].numpy()
    lo, hi = np.maximum(box[:2], ASTRONAUT_FACE[:2]), np.minimum(box[2:], ASTRONAUT_FACE[2:])
    inter = np.prod(np.maximum(hi - lo, 0))
    union = (np.prod(box[2:] - box[:2]) + np.prod(np.subtract(ASTRONAUT_FACE[2:],
                                                              ASTRONAUT_FACE[:2])) - inter)
    assert inter / union > 0.7, box


def _run(*args):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True)


def test_export_and_detect_commands_on_a_folder(tmp_path, photo_bytes):
    """handgrad-export --pretrained (a threshold fixed at export) then handgrad-detect: the result
    files hold MediaPipe's detections at that threshold, in WIDER `x y w h score` lines, of the
    photos as Pillow decodes them (detect reads them upright with Pillow)."""
    refused = _run("handgrad-export", "--pretrained=blazeface_short_range",
                   f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'x'}")
    assert refused.returncode != 0 and "exactly one of --model_dir" in refused.stderr
    export_dir, photos, results = tmp_path / "export", tmp_path / "photos", tmp_path / "results"
    done = _run("handgrad-export", "--pretrained=blazeface_short_range", "--score_threshold=0.3",
                f"--export_dir={export_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    photos.mkdir()
    for name, data in photo_bytes.items():
        (photos / (name + (".jpg" if name == "grace_hopper" else ".png"))).write_bytes(data)
    detected = _run("handgrad-detect", f"--saved_model={export_dir}", f"--images={photos}",
                    f"--output_dir={results}")
    assert detected.returncode == 0, detected.stderr[-2000:]
    for name, data in photo_bytes.items():
        # results are named after the image, with or without its extension (detect.py)
        txt = next(results.rglob(f"{name}*.txt")).read_text().split("\n")
        boxes, keypoints, scores = reference(data, "short_range", score_threshold=0.3,
                                             decoder="pillow")
        assert int(txt[1]) == len(scores), name
        rows = np.array([[float(v) for v in line.split()] for line in txt[2:2 + len(scores)]])
        xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                         boxes[:, 2] - boxes[:, 0]], 1)
        np.testing.assert_allclose(rows[:, :4], xywh, atol=0.1, err_msg=name)
        np.testing.assert_allclose(rows[:, 4], scores, atol=1e-3, err_msg=name)
        # the PNG shows MediaPipe's keypoints (eyes, nose, mouth, ears) as red dots
        drawn = np.asarray(PIL.Image.open(next(results.rglob(f"{name}*.png"))).convert("RGB"))
        for y, x in np.round(keypoints.reshape(-1, 2)).astype(int):
            if not (0 <= y < drawn.shape[0] and 0 <= x < drawn.shape[1]):
                continue  # an ear beyond the image's edge
            np.testing.assert_array_equal(drawn[y, x], (255, 0, 0), err_msg=f"{name} {y} {x}")


def test_fine_tuned_model_dir_exports_with_mediapipe_score_threshold(tmp_path, photo_bytes):
    """A task "blazeface" model_dir (as handgrad-train leaves it) through export_model: the
    score threshold left unset is MediaPipe's (0.5 short range), not the config's evaluation
    0.05; max_detections comes from the config (300)."""
    from handgrad.export.export import export_model
    from handgrad.zoo.face.blazeface.detector import BlazeFaceDetector
    from handgrad.zoo.face.blazeface.tflite_import import load_tflite_weights, tflite_path
    from handgrad.zoo.run import model_dir as model_dir_lib
    from handgrad.zoo.run.registry import get_config

    config = get_config("face_blazeface_short_range")
    detector = BlazeFaceDetector(model=config.model, postprocess=config.postprocess)
    load_tflite_weights(detector.network, tflite_path("short_range"))
    detector.save(tmp_path / "model.keras")
    model_dir_lib.write_config(tmp_path, model_dir_lib.config_record(
        "face_blazeface_short_range", config))
    export_dir = export_model(tmp_path, tmp_path / "export")
    f = tf.saved_model.load(str(export_dir)).signatures["image_bytes"]
    out = f(image_bytes=tf.constant([photo_bytes["astronaut"]]))
    assert out["boxes"].shape == (1, config.postprocess.max_detections, 4)
    boxes, _, scores = reference(photo_bytes["astronaut"], "short_range")  # MediaPipe's 0.5
    n = int(out["num_detections"][0])
    assert n == len(scores) == 1
    # the config's 0.05 would have kept more: the check above tells the two apart
    assert len(reference(photo_bytes["astronaut"], "short_range", 0.05)[2]) > 1
    np.testing.assert_allclose(out["boxes"][0, :n], boxes, atol=0.05)


def test_unknown_pretrained_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--pretrained must be one of .*blazeface_full_range.*"
                                         r"Received: 'blazeface_long_range'"):
        export_pretrained("blazeface_long_range", tmp_path)


def test_served_network_is_frozen_and_still_mediapipes(full_range_export, photo_bytes):
    """The SavedModel serves the network with its weights as graph constants (frozen_network):
    nothing to restore, and the reloaded `forward` gives LiteRT's raw outputs on real photos.
    The frozen function refuses training use; freeze=False keeps differentiable variables."""
    from handgrad.export import tflite
    from handgrad.export.blazeface_serving import BlazeFaceServing, frozen_network
    from handgrad.zoo.face.blazeface.tflite_import import import_blazeface

    assert tf.train.list_variables(str(full_range_export / "variables" / "variables")) == [
        ("_CHECKPOINTABLE_OBJECT_GRAPH", [])]
    images = [tf.io.decode_image(photo_bytes[n], channels=3, expand_animations=False)
              for n in ("astronaut", "grace_hopper")]
    x = np.concatenate([letterbox(i[None], 192)[0].numpy() for i in images])
    out = tf.saved_model.load(str(full_range_export)).forward(tf.constant(x))
    reg, cls = litert_outputs("full_range", x)
    # the bound of test_blazeface (float32 rounding): freezing changes no weight
    np.testing.assert_allclose(out["regressors"].numpy(), reg, atol=1e-5 * np.abs(reg).max())
    np.testing.assert_allclose(out["classificators"].numpy(), cls, atol=1e-5 * np.abs(cls).max())

    model = import_blazeface("short_range")
    with pytest.raises(ValueError, match="inference only"):
        frozen_network(model, 128)(tf.zeros([1, 128, 128, 3]), training=True)
    # `handgrad-export --tflite` of a frozen module converts the variables' own graph
    small = letterbox(images[0][None], 128)[0].numpy()
    converted = tflite.run(tflite.convert(BlazeFaceServing(model, "short_range")), small)
    reg, cls = litert_outputs("short_range", small)
    np.testing.assert_allclose(converted["regressors"], reg, atol=1e-5 * np.abs(reg).max())
    np.testing.assert_allclose(converted["classificators"], cls, atol=1e-5 * np.abs(cls).max())
    with tf.GradientTape() as tape:
        y = BlazeFaceServing(model, "short_range", freeze=False).forward(tf.zeros([1, 128, 128, 3]))
        loss = tf.reduce_sum(y["classificators"])
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0
                                                     for g in grads)


SHAPE_MESSAGE = (r"images: expected uint8 \[batch, height, width, 3\] with height and width >= 1; "
                 r"received shape\] \[{}\]")


@pytest.mark.parametrize("shape", [(96, 128, 3), (1, 96, 128, 1), (1, 96, 128, 4),
                                   (1, 96, 128, 3, 1), (1, 0, 128, 3)],
                         ids=["no_batch_axis", "grey", "rgba", "rank_5", "zero_height"])
def test_bad_image_shapes_are_refused_with_the_expected_shape(full_range_export, shape):
    """A reloaded export checks its input in the graph, as the MNIST one does: the client reads
    the shape it sent and the one expected, not a kernel's words ("input depth must be evenly
    divisible by filter depth: 1 vs 3"); the process keeps serving."""
    f = tf.saved_model.load(str(full_range_export)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=SHAPE_MESSAGE.format(" ".join(map(str, shape)))):
        f(images=tf.zeros(shape, tf.uint8))
    assert int(f(images=tf.constant(skimage.data.astronaut()[None]))["num_detections"][0]) == 1


def test_empty_batch_gets_empty_outputs(full_range_export):
    """A batch of 0 images at either signature: every output with 0 rows and the export's shape
    (100 detections, 6 keypoints), without running the network (which refuses an empty batch:
    "input depth must be evenly divisible by filter depth: 3 vs 32")."""
    loaded = tf.saved_model.load(str(full_range_export)).signatures
    for out in (loaded["serving_default"](images=tf.zeros([0, 96, 128, 3], tf.uint8)),
                loaded["image_bytes"](image_bytes=tf.constant([], tf.string))):
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "boxes": (0, 100, 4), "scores": (0, 100), "keypoints": (0, 100, 6, 2),
            "num_detections": (0,)}


def _iou(a, b):
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.maximum(hi - lo, 0))
    return inter / (np.prod(np.subtract(a[2:], a[:2])) + np.prod(np.subtract(b[2:], b[:2]))
                    - inter)


def test_phone_photo_stored_sideways_is_detected_upright(full_range_export, tmp_path):
    """A phone held sideways stores the astronaut turned 90 degrees with EXIF Orientation=6 (a
    viewer turns it back clockwise): handgrad-detect finds the face at the box it finds in the
    upright file, MediaPipe's box by eye (ASTRONAUT_FACE), and draws the PNG upright. The
    `image_bytes` signature decodes in the graph, where the tag is ignored: it answers for the
    stored, sideways pixels (export/README.md), exactly as `serving_default` does for them."""
    from handgrad.export.detect import detect_images
    from handgrad.pipelines.wider_format import read_result_file

    upright = PIL.Image.fromarray(skimage.data.astronaut()[:, :400])  # 400 wide, 512 tall
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    upright.save(photos / "upright.jpg", quality=95)
    upright.rotate(90, expand=True).save(photos / "phone.jpg", quality=95, exif=exif)
    stored = PIL.Image.open(photos / "phone.jpg")
    assert stored.size == (512, 400)  # sideways as stored; a viewer shows 400 x 512
    assert detect_images(full_range_export, photos, out) == (2, 0)
    (phone,), _ = read_result_file(out / "phone.jpg.txt")
    (straight,), _ = read_result_file(out / "upright.jpg.txt")
    np.testing.assert_allclose(phone, straight, atol=2)  # two JPEG encodings of one photo
    assert _iou(phone, ASTRONAUT_FACE) > 0.7, phone
    assert PIL.Image.open(out / "phone.jpg.png").size == (400, 512)

    signatures = tf.saved_model.load(str(full_range_export)).signatures
    raw = signatures["image_bytes"](image_bytes=tf.constant([(photos / "phone.jpg").read_bytes()]))
    sideways = tf.io.decode_jpeg((photos / "phone.jpg").read_bytes(), channels=3)
    assert sideways.shape == (400, 512, 3)
    same = signatures["serving_default"](images=sideways[None])
    n = int(same["num_detections"][0])
    assert int(raw["num_detections"][0]) == n
    np.testing.assert_allclose(raw["boxes"][0, :n], same["boxes"][0, :n], atol=1e-3)

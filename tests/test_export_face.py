"""Face-detector serving: geometry of the any-size signatures (boxes come back in the ORIGINAL
image's pixels), the encoded-bytes signature, saved_model_cli, and bad input.

The geometry tests wrap an oracle "detector" that boxes the bright pixels of its input: what the
signature gets back is then fixed by the image alone, so a known rectangle drawn in a non-square
image must come back as that rectangle, within the resize's rounding (one input pixel of the
square, i.e. 1 / scale original pixels, plus one for the bilinear edge).
"""

import io
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.export.serving import FaceServing, save

INPUT_SIZE = 128


class BrightBoxOracle(keras.Model):
    """Returns the bounding box of the pixels brighter than 0.5 (one detection per image)."""

    input_multiple = 64  # the serving module pads to multiples of this, as for the RetinaNet

    def call(self, images, training=None):
        return images

    def detect(self, images, score_threshold, iou_threshold, max_detections):
        mask = images[..., 0] > 0.5  # (B, S, S)
        rows, cols = tf.reduce_any(mask, axis=2), tf.reduce_any(mask, axis=1)  # (B, S)

        def extent(line):  # (B, S) bool -> first index, last index + 1
            idx = tf.range(tf.shape(line)[1], dtype=tf.float32)[None]
            first = tf.reduce_min(tf.where(line, idx, 1e9), axis=1)
            last = tf.reduce_max(tf.where(line, idx, -1.0), axis=1) + 1
            return first, last

        (y0, y1), (x0, x1) = extent(rows), extent(cols)
        boxes = tf.stack([y0, x0, y1, x1], axis=-1)[:, None]  # (B, 1, 4)
        pad = max_detections - 1
        batch = tf.shape(images)[0]
        return {"boxes": tf.pad(boxes, [[0, 0], [0, pad], [0, 0]]),
                "scores": tf.pad(tf.ones([batch, 1]), [[0, 0], [0, pad]]),
                "num_detections": tf.ones([batch], tf.int32)}


def _image(height, width, box):
    y0, x0, y1, x1 = box
    image = np.zeros((height, width, 3), np.uint8)
    image[y0:y1, x0:x1] = 255
    return image


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("face_export")
    save(FaceServing(BrightBoxOracle(), input_size=INPUT_SIZE, max_detections=5), path)
    return path


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


CASES = {"wide_300x500": (300, 500, (60, 100, 180, 300)),
         "tall_500x300": (500, 300, (250, 40, 420, 200)),
         "small_90x70": (90, 70, (10, 20, 50, 60))}


@pytest.mark.parametrize("case", list(CASES))
def test_uint8_signature_returns_boxes_in_original_pixels(loaded, case):
    height, width, box = CASES[case]
    out = loaded.signatures["serving_default"](images=tf.constant(_image(height, width, box)[None]))
    assert int(out["num_detections"][0]) == 1
    tolerance = max(height, width) / INPUT_SIZE + 1
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), box, atol=tolerance)


def test_bytes_signature_handles_a_batch_of_different_sizes(loaded):
    images = [_png(_image(h, w, box)) for h, w, box in CASES.values()]
    out = loaded.signatures["image_bytes"](image_bytes=tf.constant(images))
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1, 1, 1])
    for i, (h, w, box) in enumerate(CASES.values()):
        np.testing.assert_allclose(out["boxes"][i, 0].numpy(), box, atol=max(h, w) / INPUT_SIZE + 1)


def test_grey_png_is_served_as_rgb(loaded):
    h, w, box = CASES["wide_300x500"]
    grey = _image(h, w, box)[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    out = loaded.signatures["image_bytes"](image_bytes=tf.constant([buffer.getvalue()]))
    np.testing.assert_allclose(out["boxes"][0, 0].numpy(), box, atol=w / INPUT_SIZE + 1)


SHAPE = (r"images: expected uint8 \[batch, height, width, 3\] with height and width >= 1; "
         r"received shape\] \[{}\]")


@pytest.mark.parametrize(
    "signature, kwargs, message",
    [("serving_default", {"images": np.zeros((1, 64, 64, 3), np.float32)}, "uint8"),
     ("serving_default", {"images": np.zeros((64, 64, 3), np.uint8)}, SHAPE.format("64 64 3")),
     ("serving_default", {"images": np.zeros((1, 64, 64, 4), np.uint8)},
      SHAPE.format("1 64 64 4")),
     ("serving_default", {"images": np.zeros((1, 64, 64, 1), np.uint8)},
      SHAPE.format("1 64 64 1")),
     ("serving_default", {"images": np.zeros((1, 64, 64, 3, 1), np.uint8)},
      SHAPE.format("1 64 64 3 1")),
     ("image_bytes", {"image_bytes": np.array([b"not an image"])},
      "Unknown image file format. One of JPEG, .*PNG, GIF, BMP.* required")],
    ids=["float_images", "no_batch_axis", "four_channels", "grey", "rank_5",
         "undecodable_bytes"])
def test_bad_input_is_refused_with_a_message(loaded, signature, kwargs, message):
    f = loaded.signatures[signature]
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
        f(**{k: tf.constant(v) for k, v in kwargs.items()})
    h, w, box = CASES["small_90x70"]
    ok = loaded.signatures["serving_default"](images=tf.constant(_image(h, w, box)[None]))
    assert int(ok["num_detections"][0]) == 1  # the process still serves


def test_empty_batch_through_the_reloaded_export(loaded):
    """A batch of 0 at either signature of a reloaded export: empty outputs, the export's D."""
    for out in (loaded.signatures["serving_default"](images=tf.zeros([0, 90, 70, 3], tf.uint8)),
                loaded.signatures["image_bytes"](image_bytes=tf.constant([], tf.string))):
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "boxes": (0, 5, 4), "scores": (0, 5), "num_detections": (0,)}


def test_saved_model_cli_lists_both_signatures(export_dir):
    cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli ships with tensorflow"
    show = subprocess.run([cli, "show", "--dir", str(export_dir), "--all"],
                          capture_output=True, text=True, check=True).stdout
    default = show[show.index("signature_def['serving_default']"):]
    assert "inputs['images']" in default
    assert "dtype: DT_UINT8" in default and "shape: (-1, -1, -1, 3)" in default
    by_bytes = show[show.index("signature_def['image_bytes']"):]
    assert "dtype: DT_STRING" in by_bytes and "shape: (-1)" in by_bytes
    for block in (default, by_bytes):
        assert "outputs['boxes']" in block and "outputs['num_detections']" in block


@pytest.fixture(scope="module")
def small_detector_export(tmp_path_factory):
    """A small FaceDetector (ResNet18, narrow) exported with score threshold 0, so every image
    returns its top boxes; random weights suffice to compare the export with the original."""
    from handgrad.zoo.face.retinanet.model import FaceDetector

    keras.utils.set_random_seed(0)
    detector = FaceDetector(model=dict(backbone="resnet18", backbone_width=8, fpn_filters=16,
                                       head_filters=16, prior_probability=0.3))
    module = FaceServing(detector, input_size=INPUT_SIZE, score_threshold=0.0, max_detections=20)
    path = tmp_path_factory.mktemp("small_detector")
    save(module, path)
    return module, path


def _synthetic_jpegs(count):
    from handgrad.pipelines.generators import synthetic_faces

    faces, backgrounds = synthetic_faces.load_faces(), synthetic_faces.load_backgrounds()
    out = []
    for i in range(count):
        _, _, image, _ = synthetic_faces.compose_image(
            synthetic_faces.image_rng(0, "val", i), faces, backgrounds, 160 + 40 * i)
        buffer = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def test_reloaded_detector_without_handgrad_matches_in_memory(small_detector_export, tmp_path):
    module, path = small_detector_export
    jpegs = _synthetic_jpegs(2)
    expected = module.serve_bytes(tf.constant(jpegs))
    x = tf.random.stateless_uniform([1, INPUT_SIZE, INPUT_SIZE, 3], seed=[1, 2])
    expected_raw = module.forward(x)
    np.save(tmp_path / "x.npy", x.numpy())
    (tmp_path / "a.jpg").write_bytes(jpegs[0])
    (tmp_path / "b.jpg").write_bytes(jpegs[1])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["handgrad"] = None  # any `import handgrad` now raises ImportError
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(path)!r})
        data = [open({str(tmp_path / "a.jpg")!r}, "rb").read(),
                open({str(tmp_path / "b.jpg")!r}, "rb").read()]
        out = m.signatures["image_bytes"](image_bytes=tf.constant(data))
        raw = m.forward(tf.constant(np.load({str(tmp_path / "x.npy")!r})))
        np.savez({str(tmp_path / "out.npz")!r}, **{{k: v.numpy() for k, v in out.items()}},
                 **{{"raw_" + k: v.numpy() for k, v in raw.items()}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"].numpy())
    assert got["num_detections"].min() == 20
    np.testing.assert_allclose(got["scores"], expected["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["boxes"], expected["boxes"].numpy(), rtol=1e-4, atol=1e-3)
    for key in ("cls_logits", "box_deltas"):
        np.testing.assert_allclose(got["raw_" + key], expected_raw[key].numpy(), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("mode, rtol", [("float32", 1e-4), ("int8", 0.1)])
def test_detector_tflite_matches_saved_model_network(small_detector_export, mode, rtol):
    """float32: the same network, rounding only (relative 1e-4 of the output scale). int8
    (dynamic range): 8-bit weights move the raw outputs by a few per cent of their scale; 0.1
    bounds it while a wrong graph (other weights, other anchors order) is off by O(1)."""
    from handgrad.export import tflite

    module, path = small_detector_export
    x = tf.random.stateless_uniform([1, INPUT_SIZE, INPUT_SIZE, 3], seed=[3, 4])
    loaded = tf.saved_model.load(str(path))
    expected = loaded.forward(x)
    got = tflite.run(tflite.convert(module, mode), x.numpy())
    for key in ("cls_logits", "box_deltas"):
        ref = expected[key].numpy()
        spread = float(ref.max() - ref.min())
        np.testing.assert_allclose(got[key], ref, atol=rtol * spread)


class CanvasOracle(BrightBoxOracle):
    """Reports the input it was given: one box over its top-left quarter, [0, 0, H/4, W/4]."""

    input_multiple = 32

    def detect(self, images, score_threshold, iou_threshold, max_detections):
        hw = tf.cast(tf.shape(images)[1:3], tf.float32) / 4
        batch = tf.shape(images)[0]
        box = tf.tile(tf.concat([[0.0, 0.0], hw], 0)[None, None], [batch, 1, 1])  # (B, 1, 4)
        return {"boxes": tf.pad(box, [[0, 0], [0, max_detections - 1], [0, 0]]),
                "scores": tf.pad(tf.ones([batch, 1]), [[0, 0], [0, max_detections - 1]]),
                "num_detections": tf.ones([batch], tf.int32)}


@pytest.mark.parametrize("sizes, canvas", [
    ([(300, 500)], (96, 128)),  # resized 77 x 128: 77 rounds up to 96, not to the square's 128
    ([(500, 300)], (128, 96)),
    ([(96, 128)], (96, 128)),  # already a multiple: no padding at all
    ([(300, 500), (500, 300)], (128, 128)),  # a mixed batch: the canvas holds both
], ids=["wide", "tall", "exact", "mixed_batch"])
def test_batch_is_padded_only_to_the_stride_multiple(tmp_path, sizes, canvas):
    """640 x 480 photos run at 640 x 512, not 640 x 640 (serving.py docstring): the network sees
    the smallest multiple of its largest stride that holds every resized image of the batch."""
    save(FaceServing(CanvasOracle(), input_size=INPUT_SIZE, max_detections=2), tmp_path)
    loaded = tf.saved_model.load(str(tmp_path))
    out = loaded.signatures["image_bytes"](
        image_bytes=tf.constant([_png(np.zeros((h, w, 3), np.uint8)) for h, w in sizes]))
    for i, (h, w) in enumerate(sizes):
        side = max(h, w)
        scale = np.array([round(h * INPUT_SIZE / side) / h, round(w * INPUT_SIZE / side) / w])
        expected = np.array([0, 0, canvas[0] / 4 / scale[0], canvas[1] / 4 / scale[1]])
        np.testing.assert_allclose(out["boxes"][i, 0].numpy(), expected, rtol=1e-5)
    if len(sizes) == 1:
        h, w = sizes[0]
        single = loaded.signatures["serving_default"](images=tf.constant(np.zeros((1, h, w, 3),
                                                                                  np.uint8)))
        np.testing.assert_allclose(single["boxes"][0, 0].numpy(), out["boxes"][0, 0].numpy())

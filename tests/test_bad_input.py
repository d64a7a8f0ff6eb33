"""Every bad input tried on the training/data paths, and what the user sees (README table).

Each case calls the real code path (the training function, the tf.data pipelines, the command
line) and checks the message or the documented recovery. Bad input already covered elsewhere:
corrupt/truncated IDX variants (tests/test_mnist_pipeline.py), malformed WIDER annotation lines
(tests/test_wider_parser.py), undecodable bytes and bad tensors at serving time
(tests/test_export_*.py).
"""

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.export.serving import FaceServing, MnistServing, save
from handgrad.pipelines import mnist, wider_face
from handgrad.zoo.mnist.models import build_mnist_cnn
from handgrad.zoo.run import registry
from handgrad.zoo.run.train import train_and_evaluate

TINY = {"model.filters": (4, 4, 4), "training.epochs": 1, "training.steps_per_epoch": 1,
        "training.validate_every_epoch": False}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


# ---- MNIST data ----------------------------------------------------------------------------

def test_truncated_idx_names_file_and_sizes(mnist_dir, tmp_path):
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, tmp_path)
    raw = gzip.decompress((mnist_dir / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:1_000_000])  # cut mid-image
    with pytest.raises(mnist.IdxFormatError,
                       match=r"train-images-idx3-ubyte: truncated file: the header says shape "
                             r"\(60000, 28, 28\), i\.e\. 47040016 bytes, but the file has 1000000"):
        train_and_evaluate("mnist_cnn", tmp_path / "run", tmp_path, verbose=0, overrides=TINY)


def test_empty_mnist_dir_lists_the_expected_files(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"MNIST file train-images-idx3-ubyte\[\.gz\] "
                       r"not found in .*data\. Expected the four official IDX files"):
        train_and_evaluate("mnist_cnn", tmp_path / "run", tmp_path / "data", verbose=0,
                           overrides=TINY)


# ---- WIDER FACE data -----------------------------------------------------------------------

def _wider(root, images, faces):
    """A one-folder WIDER val layout: images {name: PIL image or bytes}, faces {name: lines}."""
    folder = root / "WIDER_val" / "images" / "0--Test"
    folder.mkdir(parents=True)
    lines = []
    for name, image in images.items():
        if isinstance(image, bytes):
            (folder / name).write_bytes(image)
        else:
            image.save(folder / name)
        rows = faces.get(name, [])
        lines += [f"0--Test/{name}", str(len(rows))] + (rows or ["0 0 0 0 0 0 0 0 0 0"])
    (root / "wider_face_split").mkdir()
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")


def _examples(root, size=64):
    counter = wider_face.SkipCounter()
    ds = wider_face.make_dataset(root, "val", batch_size=1, training=False, eval_size=size,
                                 skip_counter=counter)
    out = {}
    for images, labels in ds:
        n = int(labels["num_boxes"][0])
        out[labels["image_path"][0].numpy().decode().split("/")[-1]] = (
            images[0].numpy(), labels["boxes"][0, :n].numpy())
    return out, counter.skipped


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path):
    good = Image.fromarray(np.full((40, 40, 3), 200, np.uint8))
    buffer = io.BytesIO()
    good.save(buffer, format="JPEG")
    _wider(tmp_path, {"good.jpg": good, "cut.jpg": buffer.getvalue()[:200],
                      "text.jpg": b"not a jpeg at all"},
           {"good.jpg": ["5 5 10 10 0 0 0 0 0 0"], "cut.jpg": ["5 5 10 10 0 0 0 0 0 0"]})
    examples, skipped = _examples(tmp_path)
    assert sorted(examples) == ["good.jpg"] and skipped == 2


def test_16_bit_and_grey_png_become_8_bit_rgb(tmp_path):
    ramp16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    grey = np.arange(32 * 32).reshape(32, 32).astype(np.uint8) % 251
    _wider(tmp_path, {"deep.png": Image.fromarray(ramp16), "grey.png": Image.fromarray(grey)},
           {})
    examples, _ = _examples(tmp_path, size=32)  # 32 x 32: no resizing, exact pixels
    deep, grey_rgb = examples["deep.png"][0], examples["grey.png"][0]
    for image in (deep, grey_rgb):  # three equal channels in [0, 1]
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_allclose(deep[..., 0] * 255, np.round(ramp16 / 257.0), atol=1.01)
    np.testing.assert_allclose(grey_rgb[..., 1] * 255, grey, atol=1e-3)


def test_zero_face_image_and_negative_width_box(tmp_path):
    blank = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    _wider(tmp_path, {"none.jpg": blank, "neg.jpg": blank},
           {"neg.jpg": ["30 10 -8 12 0 0 0 0 0 0", "4 4 16 16 0 0 0 0 0 0"]})
    records, stats = wider_face.parse_annotations(
        tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt", return_stats=True)
    assert (stats.empty_images, stats.degenerate, stats.kept) == (1, 1, 1)
    examples, _ = _examples(tmp_path)
    assert examples["none.jpg"][1].shape == (0, 4)  # kept: all anchors are background
    np.testing.assert_allclose(examples["neg.jpg"][1], [[4, 4, 20, 20]])  # the bad box dropped


def test_8000x8000_image_is_resized_with_its_box(tmp_path):
    # A flat PNG compresses to ~80 kB; decoding costs 192 MB for about half a second.
    big = Image.new("RGB", (8000, 8000), (90, 120, 150))
    _wider(tmp_path, {"big.png": big}, {"big.png": ["2000 4000 2000 2000 0 0 0 0 0 0"]})
    examples, _ = _examples(tmp_path, size=64)
    image, boxes = examples["big.png"]
    assert image.shape == (64, 64, 3)
    np.testing.assert_allclose(image[10, 10] * 255, [90, 120, 150], atol=1)
    np.testing.assert_allclose(boxes, [[32, 16, 48, 32]], atol=1e-3)  # x 64/8000


def test_empty_wider_dir_names_the_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No wider_face_train_bbx_gt.txt under "):
        wider_face.make_dataset(tmp_path, "train", batch_size=2)


# ---- edge inputs -----------------------------------------------------------------------------

def test_empty_mnist_test_split_names_the_file(mnist_dir, tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 0, 28, 28))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 0))
    with pytest.raises(mnist.IdxFormatError, match=r"t10k-images-idx3-ubyte: holds 0 images: "
                       r"the test split is empty \(the official file holds 10000\)"):
        train_and_evaluate("mnist_cnn", tmp_path / "run", tmp_path, verbose=0, overrides=TINY)
    assert not (tmp_path / "run").exists()


def test_empty_batch_at_the_mnist_signature_returns_empty_outputs(tmp_path):
    """A batch of 0 images never reaches the network (TF's Conv2D passes an empty batch through
    with its input shape, which the next layer refuses); a batch of 3 still matches the model."""
    model = build_mnist_cnn(filters=(4, 4, 4))
    save(MnistServing(model), tmp_path)
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    for shape in ((0, 28, 28), (0, 28, 28, 1)):
        out = serve(images=tf.zeros(shape, tf.uint8))
        assert out["probabilities"].shape == (0, 10) and out["classes"].shape == (0,)
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    np.testing.assert_allclose(serve(images=digits)["probabilities"].numpy(),
                               model(digits[..., None] / 255.0, training=False).numpy(),
                               atol=1e-6)


class _FailsOnAnEmptyBatch(keras.Model):
    """A stand-in detector that fails on a batch of 0 images, as the real network does."""

    input_multiple = 32

    def call(self, images, training=None):
        return images

    def detect(self, images, score_threshold, iou_threshold, max_detections):
        batch = tf.shape(images)[0]
        with tf.control_dependencies([tf.debugging.assert_positive(
                batch, message="an empty batch reached the network")]):
            return {"boxes": tf.zeros([batch, max_detections, 4]),
                    "scores": tf.zeros([batch, max_detections]),
                    "num_detections": tf.zeros([batch], tf.int32)}


def test_empty_batch_at_the_face_signatures_returns_empty_outputs():
    face = FaceServing(_FailsOnAnEmptyBatch(), input_size=64, max_detections=5)
    png = io.BytesIO()
    Image.new("RGB", (80, 48)).save(png, format="PNG")
    for images, image_bytes in ((np.zeros((0, 48, 80, 3), np.uint8), [b""][:0]),
                                (np.zeros((2, 48, 80, 3), np.uint8), [png.getvalue()] * 2)):
        n = len(images)
        for out in (face.serve_images(tf.constant(images)),
                    face.serve_bytes(tf.constant(image_bytes, tf.string, shape=[n]))):
            assert (out["boxes"].shape, out["scores"].shape, out["num_detections"].shape) == (
                (n, 5, 4), (n, 5), (n,))


# ---- configs and flags ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error, message", [
    (dict(config="nope"), ValueError, r"Unknown config 'nope'\. Known configs: .*mnist_cnn"),
    ({"training.epoch": 3}, ValueError,
     r"has no field 'training\.epoch'\. Known fields: .*training\.epochs"),
    ({"training.batch_size": 0}, ValueError, r"training\.batch_size must be an int >= 1\. "
                                             r"Received: training\.batch_size=0"),
    ({"training.optimizer": "rmsprop"}, ValueError,
     r"training\.optimizer must be 'adam', 'adamw' or 'sgd'\. Received: "
     r"training\.optimizer='rmsprop'"),
    ({"training.learning_rate": -1e-3}, ValueError,
     r"training\.learning_rate must be a number > 0\. Received: training\.learning_rate=-0\.001"),
    ({"training.epochs": 0}, ValueError,
     r"training\.epochs must be an int >= 1\. Received: training\.epochs=0"),
    ({"training.steps_per_epoch": 0}, ValueError,
     r"training\.steps_per_epoch must be None or an int >= 1\. "
     r"Received: training\.steps_per_epoch=0"),
    ({"data.train_limit": 10, "training.batch_size": 50}, ValueError,
     r"data\.train_limit must be None or at least one batch \(training\.batch_size=50\): a "
     r"smaller limit trains 0 steps\. Received: data\.train_limit=10"),
    ({"seed": "1"}, ValueError, r"has no field 'seed'\. Did you mean 'training\.seed'\?"),
    ({"task": "face"}, ValueError, r"'task' is fixed by the config \(mnist\); choose another "
                                   r"--config"),
    ({"training.validate_every_epoch": "maybe"}, ValueError,
     r"training\.validate_every_epoch expects true/false\. Received: 'maybe'"),
    ({"training.epochs": "two"}, ValueError,
     r"training\.epochs expects a value like 10\. Received: 'two'"),
    (dict(strategy="horovod"), ValueError, r"--strategy must be one of default, mirrored, "
                                           r"multi_worker, tpu\. Received: strategy='horovod'"),
    (dict(strategy="multi_worker"), ValueError, r"needs the TF_CONFIG environment variable"),
], ids=["unknown_config", "unknown_field", "batch_size_0", "unknown_optimizer",
        "negative_learning_rate", "epochs_0", "steps_0", "train_limit_below_one_batch",
        "undotted_seed", "set_task", "bad_bool", "non_int_epochs", "unknown_strategy",
        "multi_worker_without_tf_config"])
def test_bad_config_values(mnist_dir, tmp_path, monkeypatch, overrides, error, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    overrides = dict(overrides)
    config = overrides.pop("config", "mnist_cnn")
    strategy = overrides.pop("strategy", "default")
    with pytest.raises(error, match=message):
        train_and_evaluate(config, tmp_path / "run", mnist_dir, verbose=0, strategy=strategy,
                           overrides={**TINY, **overrides})
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("overrides, message", [
    ({"anchors.strides": "8,16,32,64,128"},
     r"data\.image_sizes must be one or more sides, multiples of the largest of "
     r"anchors\.strides=\(8, 16, 32, 64, 128\)\. Received: data\.image_sizes=\(256, 320, 384\)"),
    ({"anchors.strides": "8,24"}, r"anchors\.strides must be consecutive powers of two"),
    ({"anchors.negative_iou": "0.6"},
     r"anchors\.negative_iou must be a number in \[0, anchors\.positive_iou\] "
     r"\(anchors\.positive_iou=0\.5\)\. Received: anchors\.negative_iou=0\.6"),
    ({"model.backbone": "vgg16"}, r"model\.backbone must be one of \[.*'resnet18'.*\]\. "
                                  r"Received: model\.backbone='vgg16'"),
    ({"model.imagenet_weights": "imagenet"},
     r"model\.imagenet_weights must be None, or a str with model\.backbone=resnet50 .*"
     r"Received: model\.imagenet_weights='imagenet'"),
], ids=["image_sizes_not_multiple_of_stride", "strides_not_powers_of_two",
        "negative_iou_above_positive", "unknown_backbone", "imagenet_weights_not_resnet50"])
def test_bad_face_config_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_and_evaluate("face_small_synthetic", tmp_path / "run", tmp_path / "data",
                           verbose=0, overrides=overrides)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("task", sorted(registry.families()))
def test_every_config_field_has_a_rule_and_every_rule_a_field(task):
    """Each family's `rules()` (in its configs module, beside the fields) cover every field of
    every named config of the family (a new field needs a rule) and name no field that no
    longer exists; every task has named configs and rules."""
    family = registry.families()[task]
    configs = [make() for make in registry._named_configs(family).values()]
    assert configs and all(c.task == task for c in configs), task
    fields = {f for c in configs for f in registry._dotted_names(c)}
    ruled = {name for name, _ in family.rules()}
    assert (sorted(fields - ruled - {"task"}), sorted(ruled - fields)) == ([], []), task


def test_the_registry_finds_every_family_and_config():
    """The three families declare themselves; every config name resolves to its family's task."""
    assert sorted(registry.families()) == ["blazeface", "face", "mnist"]
    names = registry.configs()
    assert {"mnist_cnn", "mlp", "face_small_synthetic", "face_blazeface_full_range"} <= set(names)
    for name in names:
        assert registry.get_config(name).task in registry.families()


@pytest.mark.parametrize("overrides, message", [
    ({"training.epochs": -3}, r"training\.epochs must be an int >= 0\. Received: "
                              r"training\.epochs=-3"),
    ({"postprocess.score_threshold": 5}, r"postprocess\.score_threshold must be a number in "
                                         r"\[0, 1\]"),
    ({"data.max_boxes": 0}, r"data\.max_boxes must be an int >= 1"),
    ({"loss.box_weight": -5}, r"loss\.box_weight must be a number >= 0"),
    ({"training.batch_size": 0}, r"training\.batch_size must be an int >= 1"),
    ({"training.steps_per_epoch": -1}, r"training\.steps_per_epoch must be None or an int >= 1"),
    ({"data.num_train": -5}, r"data\.num_train must be an int >= 1"),
    ({"data.image_sizes": (128,)}, r"data\.image_sizes must be the variant's input side "
                                   r"\(model\.variant='full_range'"),
    ({"model.variant": "long_range"}, r"model\.variant must be one of \['full_range', "
                                      r"'short_range'\]"),
], ids=["epochs_negative", "score_threshold_5", "max_boxes_0", "box_weight_negative",
        "batch_size_0", "steps_negative", "num_train_negative", "image_size_of_other_variant",
        "unknown_variant"])
def test_bad_blazeface_config_values(tmp_path, overrides, message):
    """BlazeFace's fields are checked like every other family's, before anything is written."""
    with pytest.raises(ValueError, match=message):
        train_and_evaluate("face_blazeface_full_range", tmp_path / "run", tmp_path / "data",
                           verbose=0, overrides=overrides)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_dotted_seed_is_set_and_steps_run_past_the_end_of_the_data(mnist_dir, tmp_path):
    """`--set=training.seed=1` (a string, as from the command line) is used; 3 steps of 50
    from 100 digits for 2 epochs run all 6 steps (the data repeats) instead of stopping after
    the 2 batches there are."""
    train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0, overrides={
        **TINY, "training.seed": "1", "training.epochs": 2, "training.steps_per_epoch": 3,
        "training.batch_size": 50, "data.train_limit": 100, "data.test_limit": 100})
    saved = json.loads((tmp_path / "config.json").read_text())["config"]["training"]
    assert saved["seed"] == 1
    model = keras.models.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations) == 2 * 3


@pytest.mark.parametrize("args, message", [
    (["--config=nope"], r"handgrad-train: error: ValueError: Unknown config 'nope'"),
    (["--config=mnist_cnn", "--strategy=horovod"],
     r"FATAL Flags parsing error: flag --strategy=horovod: value should be one of "
     r"<default\|mirrored\|multi_worker\|tpu>"),
    (["--config=mnist_cnn", "--epochs=abc"],
     r"flag --epochs=abc: invalid literal for int\(\) with base 10: 'abc'"),
    (["--config=mnist_cnn", "--set=training.epochs"],
     r"handgrad-train: error: ValueError: --set expects section\.field=value\. Received: "
     r"--set='training\.epochs'"),
], ids=["unknown_config", "unknown_strategy", "non_int_flag", "set_without_value"])
def test_command_line_reports_bad_flags_in_one_line(tmp_path, args, message):
    proc = subprocess.Popen([sys.executable, "-m", "handgrad.zoo.run.train",
                             f"--model_dir={tmp_path}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-2000:]
    assert re.search(message, err), err[-2000:]
    assert "Traceback" not in err

"""Nothing a user owns is overwritten or polluted (README "Bad input" table, data-loss rows).

Each test snapshots the user's files (every byte) before the command and compares after: a
refused run must leave them exactly as they were. Detection results are checked against the
images they belong to: the stand-in detector boxes its whole input, so each result file must
hold exactly its own image's width and height.
"""

import hashlib
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.export import export as export_lib
from handgrad.export import serving
from handgrad.export.detect import detect_images
from handgrad.pipelines.generators import synthetic_faces
from handgrad.pipelines.wider_format import read_result_file
from handgrad.zoo.face import data as face_data
from handgrad.zoo.face.configs import DataConfig
from handgrad.zoo.run.train import train_and_evaluate


def _content(path):
    # A .mat file's 116-byte text header holds scipy.io.savemat's "Created on: <time>": a set
    # regenerated a second later differs there only.
    data = path.read_bytes()
    return data[116:] if path.suffix == ".mat" else data


def _snapshot(root):
    """{relative path: sha256} of every file below root (.mat files without their header's
    creation time)."""
    return {str(p.relative_to(root)): hashlib.sha256(_content(p)).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- handgrad-detect -------------------------------------------------------------------------

class WholeImageDetector(keras.Model):
    """Stand-in detector: one box over its whole (padded) input, score 0.9; mapped back to
    original pixels and clipped, it is the image's own rectangle."""

    input_multiple = 32

    def call(self, images, training=None):
        return images

    def detect(self, images, score_threshold, iou_threshold, max_detections):
        batch, hw = tf.shape(images)[0], tf.cast(tf.shape(images)[1:3], tf.float32)
        box = tf.concat([[0.0, 0.0], hw], 0)[None, None]  # (1, 1, 4)
        boxes = tf.pad(tf.tile(box, [batch, 1, 1]), [[0, 0], [0, max_detections - 1], [0, 0]])
        scores = tf.pad(tf.fill([batch, 1], 0.9), [[0, 0], [0, max_detections - 1]])
        return {"boxes": boxes, "scores": scores, "num_detections": tf.ones([batch], tf.int32)}


@pytest.fixture(scope="module")
def face_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("face_export")
    serving.save(serving.FaceServing(WholeImageDetector(), input_size=64, max_detections=3), path)
    return path


def _photo(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (200, 120, 40)).save(path)


def test_detect_refuses_an_output_dir_inside_the_images(face_export, tmp_path):
    photos = tmp_path / "photos"
    _photo(photos / "family.png", 40, 30)
    before = _snapshot(tmp_path)
    for out in (photos, photos / "detections"):
        with pytest.raises(ValueError, match=r"--output_dir=.* is inside --images=.*photos: the "
                                             r"results would be written among the input images"):
            detect_images(face_export, photos, out)
    assert _snapshot(tmp_path) == before


def test_detect_gives_every_input_its_own_result(face_export, tmp_path):
    sizes = {"a.jpg": (40, 30), "a.png": (50, 20), "2019/party/img1.jpg": (64, 32),
             "2020/party/img1.jpg": (30, 60)}
    for name, (w, h) in sizes.items():
        _photo(tmp_path / "photos" / name, w, h)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image")
    before = _snapshot(tmp_path / "photos")
    done, skipped = detect_images(face_export, tmp_path / "photos", tmp_path / "out")
    assert (done, skipped) == (4, 1)
    assert _snapshot(tmp_path / "photos") == before
    written = sorted(_snapshot(tmp_path / "out"))
    assert written == sorted(f"{n}{s}" for n in sizes for s in (".png", ".txt"))
    for name, (w, h) in sizes.items():
        boxes, scores = read_result_file(tmp_path / "out" / f"{name}.txt")
        np.testing.assert_allclose(boxes, [[0, 0, h, w]])  # its own image's rectangle
        np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
        assert Image.open(tmp_path / "out" / f"{name}.png").size == (w, h)


def test_detect_keeps_the_result_when_its_png_cannot_be_written(face_export, tmp_path, caplog):
    _photo(tmp_path / "photos" / "a.jpg", 40, 30)
    (tmp_path / "out" / "a.jpg.png").mkdir(parents=True)  # in the PNG's way
    assert detect_images(face_export, tmp_path / "photos", tmp_path / "out") == (1, 0)
    boxes, _ = read_result_file(tmp_path / "out" / "a.jpg.txt")
    np.testing.assert_allclose(boxes, [[0, 0, 30, 40]])
    assert re.search(r"could not write .*a\.jpg\.png \(.*Is a directory.*\); its result file is "
                     r"written", caplog.text)


# ---- synthetic face set ----------------------------------------------------------------------

TINY_SET = DataConfig(dataset="synthetic", num_train=1, num_val=1, data_seed=5)


def test_synthetic_set_is_never_generated_into_a_foreign_folder(mnist_dir, tmp_path):
    data = tmp_path / "mnist"
    shutil.copytree(mnist_dir, data)
    before = _snapshot(data)
    with pytest.raises(FileExistsError, match=r"out_dir=.*mnist is not empty \(.*ubyte.*\) and "
                                              r"has no HANDGRAD_SYNTHETIC\.json from "
                                              r"handgrad\.pipelines\.synthetic_faces: refusing"):
        train_and_evaluate("face_small_synthetic", tmp_path / "run", data, verbose=0, overrides={
            "model.backbone_width": 8, "model.fpn_filters": 8, "model.head_filters": 8})
    assert _snapshot(data) == before and not (tmp_path / "run").exists()


def test_synthetic_set_is_reused_regenerated_or_refused_by_its_marker(tmp_path):
    root, _ = face_data.resolve(TINY_SET, tmp_path / "set")
    marker = synthetic_faces.read_marker(root)
    assert marker["complete"] and (marker["num_train"], marker["seed"]) == (1, 5)
    made = _snapshot(root)
    assert face_data.resolve(TINY_SET, root)[0] == root and _snapshot(root) == made  # reused
    other = DataConfig(dataset="synthetic", num_train=2, num_val=1, data_seed=5)
    with pytest.raises(ValueError, match=r"holds a synthetic face set made with other options "
                                         r"\(found, expected\): \{'num_train': \(1, 2\)\}"):
        face_data.resolve(other, root)
    assert _snapshot(root) == made
    # A set cut short (marker says incomplete) is regenerated, to the same bytes.
    (root / synthetic_faces.MARKER).write_text((root / synthetic_faces.MARKER).read_text()
                                               .replace('"complete": true', '"complete": false'))
    shutil.rmtree(root / "ground_truth")
    face_data.resolve(TINY_SET, root)
    assert _snapshot(root) == made
    # A set written before the marker existed is recognised by its layout and used as it is.
    (root / synthetic_faces.MARKER).unlink()
    unmarked = _snapshot(root)
    assert synthetic_faces.is_unmarked_set(root) and face_data.resolve(TINY_SET, root)[0] == root
    assert _snapshot(root) == unmarked


# ---- handgrad-train into an existing folder --------------------------------------------------

@pytest.mark.parametrize("config, overrides, message", [
    ("mlp", {}, r"holds a run of config 'mnist_cnn' \(task mnist, .*config\.json\); this "
                r"command asks for config 'mlp' \(task mnist\)\. Rerun with --config=mnist_cnn"),
    ("mnist_cnn", {"model.filters": (8, 4, 4)},
     r"holds a run of mnist_cnn whose training state this command could not resume: it changes "
     r"model\.filters=\(4, 4, 4\) -> \(8, 4, 4\)"),
    ("mnist_cnn", {"training.optimizer": "sgd"}, r"it changes training\.optimizer='adam' -> 'sgd'"),
], ids=["other_config", "other_model", "other_optimizer"])
def test_rerun_with_another_config_is_refused_before_writing(
        tiny_mnist_run, tiny_run_overrides, mnist_dir, tmp_path, config, overrides, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_mnist_run, run)
    before = _snapshot(run)
    if config == "mlp":
        tiny_run_overrides.pop("model.filters")
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config, run, mnist_dir, verbose=0,
                           overrides={**tiny_run_overrides, **overrides, "training.epochs": 3})
    assert _snapshot(run) == before


@pytest.mark.parametrize("files, message", [
    ({"notes.txt": "mine"}, r"--model_dir=.* is not empty \(notes\.txt\) and holds no "
                            r"config\.json written by handgrad-train: refusing"),
    ({"config.json": '{"lr": 1}'}, r"config\.json: not a config\.json written by handgrad-train"),
], ids=["other_files", "other_config_json"])
def test_train_refuses_a_folder_it_did_not_write(mnist_dir, tmp_path, tiny_run_overrides, files,
                                                message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0,
                           overrides=tiny_run_overrides)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    assert all((tmp_path / n).read_text() == t for n, t in files.items())


# ---- handgrad-export -------------------------------------------------------------------------

def test_export_refuses_a_folder_of_other_files(tiny_mnist_run, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "saved_model.pb").write_text("mine")
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = _snapshot(tiny_mnist_run), _snapshot(tmp_path)
    for target, shown in ((tiny_mnist_run, "backup, checkpoints, config.json"),
                          (tmp_path / "mine", "notes.txt")):
        with pytest.raises(ValueError, match=rf"--export_dir=.* holds files that are not an "
                                             rf"export \({shown}.*\): refusing to write among "
                                             rf"them"):
            export_lib.export_model(tiny_mnist_run, target)
    assert (_snapshot(tiny_mnist_run), _snapshot(tmp_path)) == before


def test_failed_export_leaves_the_previous_export(tiny_mnist_run, tmp_path, monkeypatch):
    """A failed export adds no version and changes none (TF Serving's versioned layout)."""
    assert export_lib.export_model(tiny_mnist_run, tmp_path) == tmp_path / "1"
    previous = _snapshot(tmp_path / "1")

    def fails_halfway(module, folder):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serving, "save", fails_halfway)
    with pytest.raises(OSError, match=r"the disk is full: .* while writing .*/2\. Nothing was "
                                         r"exported"):
        export_lib.export_model(tiny_mnist_run, tmp_path)
    assert _snapshot(tmp_path / "1") == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no temporary folder left

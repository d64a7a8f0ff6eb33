"""Bad options and bad files at the data pipelines: refused in one line naming the culprit,
before anything is written; photos read as a viewer shows them.

References are independent facts: the folder left on disk (nothing written, no marker), the
byte offsets of a file written here, PIL's own `ImageOps.exif_transpose`, and the upright copy of
the same photo with the boxes annotated on it."""

import re
from pathlib import Path

import numpy as np
import pytest

from handgrad.pipelines.generators import synthetic_faces
from handgrad.pipelines.generators import wider_geometry as wg

SYNTHETIC = {"num_train": 1, "num_val": 1, "seed": 0, "image_size": 64, "max_faces": 3,
             "quality": 90}


def _untouched(out_dir, existed):
    """The folder is as it was: absent, or (pre-created) empty; no marker anywhere."""
    if existed:
        return out_dir.is_dir() and not any(out_dir.iterdir())
    return not out_dir.exists()


@pytest.mark.parametrize("existed", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize("name,value,expected", [
    ("num_train", -5, ">= 1"), ("num_train", 0, ">= 1"), ("num_val", 0, ">= 1"),
    ("seed", -1, ">= 0"), ("image_size", 16, ">= 32"), ("max_faces", 0, ">= 1"),
    ("quality", 0, "in 1..100"), ("quality", 101, "in 1..100"),
    ("num_train", 2.5, ">= 1"), ("num_train", "3", ">= 1"), ("num_val", True, ">= 1"),
    ("seed", None, ">= 0"),
], ids=["num_train_negative", "num_train_zero", "num_val_zero", "seed_negative",
        "image_size_16", "max_faces_zero", "quality_zero", "quality_101", "num_train_float",
        "num_train_string", "num_val_bool", "seed_none"])
def test_synthetic_bad_option_writes_nothing(tmp_path, name, value, expected, existed):
    out_dir = tmp_path / "set"
    if existed:
        out_dir.mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{name} must be an integer {expected}. "
                                                   f"Received: {name}={value!r}")):
        synthetic_faces.generate(out_dir, **dict(SYNTHETIC, **{name: value}))
    assert _untouched(out_dir, existed)
    assert synthetic_faces.read_marker(out_dir) is None


@pytest.mark.parametrize("existed", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize("name,value,expected", [
    ("train_renders", 0, "train_renders must be an integer >= 1. Received: train_renders=0"),
    ("train_renders", -1, "train_renders=-1"), ("train_renders", "2", "train_renders='2'"),
    ("seed", -1, "seed must be an integer >= 0. Received: seed=-1"), ("seed", 1.5, "seed=1.5"),
    ("quality", 0, "quality must be an integer in 1..100"), ("quality", 101, "quality=101"),
    ("max_images_per_split", 0, "max_images_per_split must be an integer >= 1"),
    ("images", [], "images must name at least one 'event/name' layout"),
    ("images", "0--Parade/x", "images must be a list of 'event/name' keys"),
    ("images", ["0--Parade/nope"], "images: 1 keys are not in the source"),
], ids=["train_renders_zero", "train_renders_negative", "train_renders_string",
        "seed_negative", "seed_float", "quality_zero", "quality_101", "max_images_zero",
        "images_empty", "images_string", "images_unknown"])
def test_wider_geometry_bad_option_writes_nothing(wider_dir, tmp_path, name, value, expected,
                                                  existed):
    out_dir = tmp_path / "set"
    if existed:
        out_dir.mkdir()
    # One layout per split, so that a check that regressed renders two images, not 3 226.
    options = {"max_images_per_split": 1, name: value}
    with pytest.raises(ValueError, match=re.escape(expected)):
        wg.generate(out_dir, source=wider_dir, progress=False, **options)
    assert _untouched(out_dir, existed)
    assert wg.read_marker(out_dir) is None


def test_wider_geometry_bad_source_or_out_dir_writes_nothing(wider_dir, tmp_path):
    out_dir = tmp_path / "set"
    with pytest.raises(FileNotFoundError, match=re.escape(f"source={tmp_path / 'none'}")):
        wg.generate(out_dir, source=tmp_path / "none", progress=False)
    assert not out_dir.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    with pytest.raises(NotADirectoryError, match=re.escape(f"out_dir={a_file}")):
        wg.generate(a_file, source=wider_dir, max_images_per_split=1, progress=False)
    assert a_file.read_text() == "keep"


def _run_generator(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "handgrad.pipelines.generators.wider_geometry",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["seed_negative", "seed_not_a_number", "train_renders_zero",
                                  "quality_101", "missing_source", "out_dir_is_a_file",
                                  "foreign_folder"])
def test_wider_geometry_command_names_the_bad_argument_in_one_line(wider_dir, tmp_path, case):
    out_dir, source = tmp_path / "set", str(wider_dir)
    extra, expected = [], None
    if case == "seed_negative":
        extra, expected = ["--seed=-1"], "argument --seed: seed must be an integer >= 0"
    elif case == "seed_not_a_number":
        extra, expected = ["--seed=x"], "argument --seed: invalid int value: 'x'"
    elif case == "train_renders_zero":
        extra, expected = ["--train_renders=0"], "argument --train_renders: train_renders must"
    elif case == "quality_101":
        extra, expected = ["--quality=101"], "argument --quality: quality must be an integer in"
    elif case == "missing_source":
        source, expected = str(tmp_path / "none"), f"argument --source: source={tmp_path}/none"
    elif case == "out_dir_is_a_file":
        out_dir.write_text("keep")
        expected = f"argument --out_dir: out_dir={out_dir} exists and is not a folder"
    else:
        out_dir.mkdir()
        (out_dir / "notes.txt").write_text("keep")
        expected = f"argument --out_dir: out_dir={out_dir} is not empty (notes.txt)"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _run_generator(f"--out_dir={out_dir}", f"--source={source}",
                            "--max_images_per_split=1", *extra)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("case", ["latin1_path", "stray_byte_in_a_face_line"])
def test_non_utf8_annotation_file_names_the_file_line_and_offset(tmp_path, case):
    from handgrad.pipelines import wider_face

    lines = [b"0--Parade/a.jpg", b"1", b"1 2 3 4 0 0 0 0 0 0 ",
             b"0--Parade/caf\xe9.jpg" if case == "latin1_path" else b"0--Parade/b.jpg",
             b"1", b"5 6 7 8 0 0 0 0 0 0 " if case == "latin1_path" else b"5 6 7\xff8 0 0 0 0 0 0 "]
    raw = b"\n".join(lines) + b"\n"
    bad = 0xE9 if case == "latin1_path" else 0xFF
    offset = raw.index(bytes([bad]))
    lineno = 4 if case == "latin1_path" else 6
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:{lineno}: expected UTF-8 text. Received: byte 0x{bad:02x} at byte offset "
            f"{offset}")) as info:
        wider_face.parse_annotations(path)
    assert "\n" not in str(info.value)
    if case == "latin1_path":  # the same text re-saved as UTF-8 with a BOM parses
        path.write_bytes(b"\xef\xbb\xbf" + raw.decode("latin-1").encode("utf-8"))
        records = wider_face.parse_annotations(path)
        assert [r.path for r in records] == ["0--Parade/a.jpg", "0--Parade/caf\u00e9.jpg"]


# The stored pixels whose display (PIL's exif_transpose) is the upright photo, per orientation.
_STORED = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}
_BOX = (150, 20, 140, 170)  # x y w h of the astronaut's face, annotated on the upright photo


@pytest.fixture(scope="module")
def rotated_photos(tmp_path_factory):
    """A tiny WIDER layout: a real photo upright and stored rotated with an Orientation tag,
    as PNG (lossless) for every orientation and as JPEG for 6 (a phone held upright) and 8."""
    import skimage
    from PIL import Image, ImageOps

    upright = Image.fromarray(skimage.data.astronaut()[:384])  # 384 x 512: not square
    root = tmp_path_factory.mktemp("exif")
    folder = root / "WIDER_val" / "images" / "0--Parade"
    folder.mkdir(parents=True)
    names = []
    for ext in ("png", "jpg"):
        upright.save(folder / f"upright.{ext}", quality=95, subsampling=0)
        names.append(f"upright.{ext}")
        for tag in _STORED if ext == "png" else (6, 8):
            exif = Image.Exif()
            exif[0x0112] = tag
            stored = upright.transpose(getattr(Image.Transpose, _STORED[tag]))
            stored.save(folder / f"o{tag}.{ext}", exif=exif, quality=95, subsampling=0)
            names.append(f"o{tag}.{ext}")
            # The test's construction, checked against PIL's own reading of the tag.
            with Image.open(folder / f"o{tag}.{ext}") as saved:
                assert saved.getexif()[0x0112] == tag
                assert (saved.size != upright.size) == (tag >= 5)  # 5..8 swap width and height
                if ext == "png":
                    assert np.array_equal(np.asarray(ImageOps.exif_transpose(saved)),
                                          np.asarray(upright))
    split = root / "wider_face_split"
    split.mkdir()
    row = " ".join(map(str, _BOX)) + " 0 0 0 0 0 0 "
    (split / "wider_face_val_bbx_gt.txt").write_text(
        "".join(f"0--Parade/{n}\n1\n{row}\n" for n in names))
    return root, np.asarray(upright)


def test_photos_are_read_as_a_viewer_shows_them(rotated_photos):
    from PIL import Image, ImageOps

    from handgrad.pipelines import wider_face

    root, upright = rotated_photos
    x, y, w, h = _BOX
    box = np.array([[y, x, y + h, x + w]], np.float32)  # [ymin, xmin, ymax, xmax]
    examples = {path.numpy().decode(): (image.numpy(), boxes.numpy()) for image, boxes, path in
                wider_face.load_examples(root, "val", training=False)}
    assert len(examples) == 11
    jpeg_upright = examples["0--Parade/upright.jpg"][0].astype(np.int16)
    for name, (image, boxes) in examples.items():
        image = image.astype(np.int16)
        np.testing.assert_array_equal(boxes, box, err_msg=name)
        assert image.shape == upright.shape, name
        if name.endswith(".png"):
            np.testing.assert_array_equal(image, upright.astype(np.int16), err_msg=name)
            continue
        with Image.open(root / "WIDER_val" / "images" / name) as saved:
            shown = np.asarray(ImageOps.exif_transpose(saved).convert("RGB"), np.int16)
        # PIL's and TF's JPEG decoders differ by about 2 levels on average on this photo (IDCT
        # and chroma upsampling: 2.0 for the upright JPEG itself); a wrong orientation differs
        # by tens, checked with the photo turned half a turn.
        assert np.abs(image - shown).mean() < 3.0, name
        assert np.abs(image[::-1, ::-1] - shown).mean() > 20.0, name
        # The upright JPEG was compressed from the same pixels; only JPEG's loss differs.
        assert np.abs(image - jpeg_upright).mean() < 3.0, name
        assert np.abs(image - upright).mean() < 3.0, name


def test_exif_orientation_reads_the_tag_and_ignores_bad_bytes(rotated_photos):
    from handgrad.pipelines import images

    root, _ = rotated_photos
    folder = root / "WIDER_val" / "images" / "0--Parade"
    assert images.exif_orientation((folder / "o6.jpg").read_bytes()) == 6
    assert images.exif_orientation((folder / "upright.jpg").read_bytes()) == 1
    assert images.exif_orientation(b"not an image") == 1


@pytest.fixture
def no_tfds_download(monkeypatch):
    """Records, and refuses, any TFDS download; no HANDGRAD_MNIST_DIR fallback."""
    import tensorflow_datasets as tfds

    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self.name)
        raise AssertionError("the test tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    monkeypatch.delenv("HANDGRAD_MNIST_DIR", raising=False)
    return calls


@pytest.mark.parametrize("failure", ["dns", "connect"])
def test_offline_mnist_without_data_dir_fails_fast_in_one_line(tmp_path, monkeypatch,
                                                               no_tfds_download, failure):
    import socket
    import time

    import tensorflow_datasets as tfds

    from handgrad.pipelines import mnist

    def offline(*args, **kwargs):
        if failure == "dns":
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo" if failure == "dns" else "create_connection",
                        offline)
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    tfds_dir = tmp_path / "tensorflow_datasets"  # TFDS' default data dir, here
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tfds_dir))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"storage\.googleapis\.com:443 unreachable.*"
                       r"Pass data_dir \(--data_dir=\.\.\.\)") as info:
        mnist.load_arrays(None)
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value) and "offline?" in str(info.value)
    assert no_tfds_download == [] and not tfds_dir.exists()


def test_cut_mnist_download_leaves_no_half_written_data_dir(tmp_path, monkeypatch,
                                                            no_tfds_download):
    import tensorflow_datasets as tfds

    from handgrad.pipelines import mnist

    def cut(self, *args, **kwargs):  # what a download cut short leaves: partial files
        no_tfds_download.append(self.name)
        partial = Path(self.data_dir).parent / "incomplete.mnist"
        partial.mkdir(parents=True)
        (partial / "train.tfrecord").write_bytes(b"\0" * 10)
        (tfds_dir / "downloads").mkdir()
        (tfds_dir / "downloads" / "train-images.tmp").write_bytes(b"\0" * 10)
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", cut)
    monkeypatch.setattr(mnist, "_unreachable", lambda *args, **kwargs: None)  # "online"
    tfds_dir = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match=r"ConnectionResetError: .*Connection reset by peer"):
        mnist.load_arrays(None, tfds_data_dir=tfds_dir)
    assert no_tfds_download == ["mnist"] and not tfds_dir.exists()
    # An existing TFDS folder keeps what it held before, and only that.
    (tmp_path / "kept" / "other_dataset").mkdir(parents=True)
    tfds_dir = tmp_path / "kept"
    with pytest.raises(RuntimeError, match="Connection reset by peer"):
        mnist.load_arrays(None, tfds_data_dir=tfds_dir)
    assert sorted(p.name for p in tfds_dir.rglob("*")) == ["other_dataset"]

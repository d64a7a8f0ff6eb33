"""handgrad-detect under faults and odd files (export/README.md "Bad input" table): nothing a user
owns overwritten, no half-written file, photos as a viewer shows them, every image format Pillow
decodes, and every unreadable image skipped with its reason.

The stand-in detector (test_data_safety.WholeImageDetector) boxes its whole input, so a result
file must hold exactly its own image's upright height and width: the facts checked are the
images' own sizes, set here, and the files' bytes before and after.
"""

import errno
import pathlib
import re

import numpy as np
import PIL.Image
import pytest
from test_data_safety import _photo, _snapshot, face_export  # noqa: F401 (a fixture)

from handgrad.export.detect import detect_images
from handgrad.pipelines.wider_format import read_result_file
from handgrad.zoo.run.atomic import DiskFullError

ORIENTATION = 0x0112  # the EXIF tag


def _box_is_the_image(result, width, height):
    boxes, scores = read_result_file(result)
    np.testing.assert_allclose(boxes, [[0, 0, height, width]])
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)


# ---- item 2: nothing overwritten -----------------------------------------------------------

def test_single_file_refuses_its_own_folder_as_output(face_export, tmp_path):  # noqa: F811
    """`--images=t/family.png --output_dir=t`: the file's folder is the images folder, so the
    results (and t/family.png.png, which a user already has) would land among the photos."""
    _photo(tmp_path / "t" / "family.png", 40, 30)
    _photo(tmp_path / "t" / "family.png.png", 10, 10)  # the user's own file of that name
    before = _snapshot(tmp_path)
    for out in (tmp_path / "t", tmp_path / "t" / "results"):
        with pytest.raises(ValueError, match=r"--output_dir=.* is inside --images=.*/t: the "
                                             r"results would be written among the input images"):
            detect_images(face_export, tmp_path / "t" / "family.png", out)
    assert _snapshot(tmp_path) == before


def test_existing_files_are_refused_unless_overwrite(face_export, tmp_path):  # noqa: F811
    """A rerun into the same output_dir, or a user's file of a result's name, is refused before
    anything is written; `overwrite=True` replaces them (the results then hold the new image)."""
    _photo(tmp_path / "photos" / "a.jpg", 40, 30)
    _photo(tmp_path / "photos" / "b.png", 20, 10)
    out = tmp_path / "out"
    assert detect_images(face_export, tmp_path / "photos", out) == (2, 0)
    _photo(tmp_path / "photos" / "a.jpg", 50, 60)  # the photo changes
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match=r"--output_dir=.*out already holds 4 of the files "
                                              r"this run would write \(a\.jpg\.txt, a\.jpg\.png, "
                                              r"b\.png\.txt and 1 more\): refusing to overwrite "
                                              r"them\. Pass --overwrite"):
        detect_images(face_export, tmp_path / "photos", out)
    assert _snapshot(out) == before
    assert detect_images(face_export, tmp_path / "photos", out, overwrite=True) == (2, 0)
    _box_is_the_image(out / "a.jpg.txt", 50, 60)
    assert PIL.Image.open(out / "a.jpg.png").size == (50, 60)

    user = tmp_path / "user_out"
    _photo(user / "b.png.png", 7, 7)  # not a result: a user's picture
    before = _snapshot(user)
    with pytest.raises(FileExistsError, match=r"already holds 1 of the files .*\(b\.png\.png\)"):
        detect_images(face_export, tmp_path / "photos" / "b.png", user)
    assert _snapshot(user) == before


# ---- item 4: a full disk -------------------------------------------------------------------

def _fills_the_disk(original):
    """A write that puts half its bytes on the disk, then fails as a full disk does."""
    def write(self, data, *args, **kwargs):
        original(self, data[:len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return write


def test_full_disk_at_a_result_file_names_it_and_leaves_no_partial_file(
        face_export, tmp_path, monkeypatch):  # noqa: F811
    _photo(tmp_path / "photos" / "a.jpg", 40, 30)
    for name in ("write_bytes", "write_text"):
        monkeypatch.setattr(pathlib.Path, name, _fills_the_disk(getattr(pathlib.Path, name)))
    with pytest.raises(DiskFullError, match=r"\[Errno 28\] the disk is full: no space left on the "
                                            r"device \([\d.]+ [kMG]B free\) while writing "
                                            r".*out/a\.jpg\.txt \(nothing of it is left\)\. The "
                                            r"0 result file\(s\) written before it in .* are "
                                            r"complete; free some space and rerun with --overwrite"
                       ):
        detect_images(face_export, tmp_path / "photos", tmp_path / "out")
    assert _snapshot(tmp_path / "out") == {}  # neither a partial result nor a temporary file


def test_full_disk_at_a_png_stops_the_run_and_keeps_complete_results(
        face_export, tmp_path, monkeypatch):  # noqa: F811
    """Today's "a PNG that cannot be written is a warning" must not hide a full disk: the run
    stops, naming the PNG; the result file before it is complete; no partial PNG is left."""
    _photo(tmp_path / "photos" / "a.jpg", 40, 30)
    _photo(tmp_path / "photos" / "b.jpg", 20, 10)
    save = PIL.Image.Image.save

    def full_at_b(self, fp, *args, **kwargs):
        if "b.jpg" in str(fp):
            save(self, fp, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", full_at_b)
    with pytest.raises(DiskFullError, match=r"the disk is full: .* free\) while writing "
                                            r".*out/b\.jpg\.png .*The 2 result file\(s\) written"):
        detect_images(face_export, tmp_path / "photos", tmp_path / "out")
    assert sorted(_snapshot(tmp_path / "out")) == ["a.jpg.png", "a.jpg.txt", "b.jpg.txt"]
    _box_is_the_image(tmp_path / "out" / "b.jpg.txt", 20, 10)


# ---- item 6: EXIF orientation --------------------------------------------------------------

@pytest.mark.parametrize("orientation, turn", [(6, PIL.Image.Transpose.ROTATE_90),
                                               (8, PIL.Image.Transpose.ROTATE_270),
                                               (3, PIL.Image.Transpose.ROTATE_180)],
                         ids=["rotate_90_cw", "rotate_90_ccw", "upside_down"])
def test_photo_stored_turned_is_read_upright(face_export, tmp_path, orientation,  # noqa: F811
                                             turn):
    """A phone photo 30 wide x 40 tall, red above blue, stored turned with the EXIF tag saying
    how to show it: the result box is the upright 30 x 40 and the PNG shows red above blue."""
    upright = np.zeros((40, 30, 3), np.uint8)
    upright[:20, :, 0] = upright[20:, :, 2] = 255  # (H, W, 3): red top half, blue bottom half
    exif = PIL.Image.Exif()
    exif[ORIENTATION] = orientation
    (tmp_path / "photos").mkdir()
    PIL.Image.fromarray(upright).transpose(turn).save(tmp_path / "photos" / "phone.jpg",
                                                      exif=exif, quality=95)
    assert detect_images(face_export, tmp_path / "photos", tmp_path / "out") == (1, 0)
    _box_is_the_image(tmp_path / "out" / "phone.jpg.txt", 30, 40)
    drawn = np.asarray(PIL.Image.open(tmp_path / "out" / "phone.jpg.png").convert("RGB"))
    assert drawn.shape == (40, 30, 3)
    # below the score's text, inside the box's outline; JPEG moves colours by a few levels
    np.testing.assert_allclose(drawn[15, 15], (255, 0, 0), atol=40)
    np.testing.assert_allclose(drawn[30, 15], (0, 0, 255), atol=40)


# ---- item 9: formats, animations, names ----------------------------------------------------

def test_every_format_pillow_decodes_is_processed(face_export, tmp_path, caplog):  # noqa: F811
    photos = tmp_path / "photos"
    sizes = {"a.webp": (40, 30), "b.tiff": (50, 20), "c.TIF": (24, 36), "d.ppm": (16, 8),
             "e.gif": (30, 30)}
    for name, size in sizes.items():
        _photo(photos / name, *size)
    frames = [PIL.Image.new("RGB", (32, 16), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(photos / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (photos / "notes.txt").write_text("not an image")
    assert detect_images(face_export, photos, tmp_path / "out") == (6, 0)
    for name, (w, h) in {**sizes, "anim.gif": (32, 16)}.items():
        _box_is_the_image(tmp_path / "out" / f"{name}.txt", w, h)
    drawn = np.asarray(PIL.Image.open(tmp_path / "out" / "anim.gif.png").convert("RGB"))
    np.testing.assert_array_equal(drawn[13, 27], (250, 0, 0))  # the first frame, red
    assert re.search(r"anim\.gif is animated \(2 frames\): only its first frame is used",
                     caplog.text)
    assert re.search(r"not read: 1 file\(s\) below --images=.*photos with an extension of no "
                     r"image format Pillow decodes \(1 x \.txt\)", caplog.text)


def test_a_line_break_in_a_name_is_skipped_in_one_line(face_export, tmp_path,  # noqa: F811
                                                       caplog):
    """The WIDER result file's first line is the image's name: a name with a line break would
    make a file that reads back as another name and a count of "x"."""
    _photo(tmp_path / "photos" / "a.jpg", 40, 30)
    _photo(tmp_path / "photos" / "party\nx.jpg", 20, 10)
    assert detect_images(face_export, tmp_path / "photos", tmp_path / "out") == (1, 1)
    assert sorted(_snapshot(tmp_path / "out")) == ["a.jpg.png", "a.jpg.txt"]
    lines = [r.getMessage() for r in caplog.records if "party" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert re.search(r"skipped '.*party\\nx\.jpg': its name holds a line break, which the WIDER "
                     r"result format cannot hold", lines[0])


# ---- item 11: unreadable images ------------------------------------------------------------

def test_unreadable_images_are_skipped_and_counted_with_their_reason(
        face_export, tmp_path, monkeypatch, caplog):  # noqa: F811
    photos = tmp_path / "photos"
    _photo(photos / "good.jpg", 40, 30)
    _photo(photos / "x.jpg" / "inside.png", 20, 10)  # a folder named like an image: searched
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_bytes(b"my notes, not a picture")
    _photo(tmp_path / "whole.jpg", 200, 100)
    (photos / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:400])
    (photos / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    _photo(photos / "private.jpg", 40, 30)
    read_bytes = pathlib.Path.read_bytes

    def denied(self):  # as chmod 000 does for a user other than root (the tests run as root)
        if self.name == "private.jpg":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    assert detect_images(face_export, photos, tmp_path / "out") == (2, 5)
    assert sorted(_snapshot(tmp_path / "out")) == [
        "good.jpg.png", "good.jpg.txt", "x.jpg/inside.png.png", "x.jpg/inside.png.txt"]
    _box_is_the_image(tmp_path / "out" / "x.jpg" / "inside.png.txt", 20, 10)
    reasons = {"empty.jpg": "empty file", "notes.png": r"unknown image format",
               "cut.jpg": r"truncated \(", "private.jpg":
               "permission denied", "gone.jpg": r"broken symbolic link \(its target is missing\)"}
    for name, reason in reasons.items():
        assert re.search(rf"skipped .*{re.escape(name)}: {reason}", caplog.text), name
    assert "Graph execution error" not in caplog.text

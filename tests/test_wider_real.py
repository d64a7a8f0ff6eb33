"""Real WIDER FACE material: the full train ground truth parses completely, a partial copy of the
official layout reads exactly the photos present, and the benchmark's result files read back."""

import shutil

import numpy as np
import pytest

from handgrad.pipelines import wider_face, wider_format
from handgrad.zoo.face import wider_eval


def _independent_counts(path):
    """(images, face lines, faces, most faces in one image) of an annotation file, counted
    without the parser: a line ending in .jpg opens a record, the next line is its count, and a
    record with count 0 still has one placeholder line."""
    lines = path.read_text().splitlines()
    images = face_lines = faces = most = 0
    i = 0
    while i < len(lines):
        assert lines[i].endswith(".jpg"), (path, i + 1)
        count = int(lines[i + 1])
        images, faces, most = images + 1, faces + count, max(most, count)
        face_lines += max(count, 1)
        i += 2 + max(count, 1)
    return images, face_lines, faces, most


def test_full_train_ground_truth_parses_completely(wider_dir):
    path = wider_dir / "wider_face_train_bbx_gt.txt"
    records, stats = wider_face.parse_annotations(path, return_stats=True)
    images, face_lines, faces, most = _independent_counts(path)
    # shared/README: 12 880 images, 159 424 faces, up to 1 968 in one image
    assert (images, faces, most) == (12880, 159424, 1968)
    assert (stats.images, stats.face_lines) == (images, face_lines)
    assert stats.face_lines - stats.empty_images == faces
    assert stats.kept + stats.invalid + stats.degenerate == faces
    assert len(records) == images
    assert sum(len(r.boxes) for r in records) == stats.kept
    assert max(len(r.boxes) + int((r.attributes[:, 3] != 0).sum()) for r in records) <= most


def test_parser_literal_lines(tmp_path):
    path = tmp_path / "wider_face_train_bbx_gt.txt"
    path.write_text("0--Parade/0_Parade_marchingband_1_849.jpg\n1\n"
                    "449 330 122 149 0 0 0 \n"
                    "0--Parade/0_Parade_Parade_0_904.jpg\n2\n"
                    "361 98 263 339 0 0 0 0 0 0 \n"
                    "10 20 5 6 2 0 1 1 0 0 \n"
                    "1--Handshaking/1_Handshaking_Handshaking_1_357.jpg\n0\n"
                    "0 0 0 0 0 0 0 0 0 0 \n")
    records, stats = wider_face.parse_annotations(path, return_stats=True)
    assert [r.path for r in records] == ["0--Parade/0_Parade_marchingband_1_849.jpg",
                                         "0--Parade/0_Parade_Parade_0_904.jpg",
                                         "1--Handshaking/1_Handshaking_Handshaking_1_357.jpg"]
    # x y w h -> [y, x, y + h, x + w]; the second face of image 2 is flagged invalid; the first
    # line has the 7 numbers of the shared train file: x y w h blur invalid occlusion
    np.testing.assert_array_equal(records[0].boxes, [[330, 449, 479, 571]])
    np.testing.assert_array_equal(records[0].attributes, [[0, -1, -1, 0, 0, -1]])
    np.testing.assert_array_equal(records[1].boxes, [[98, 361, 437, 624]])
    assert records[2].boxes.shape == (0, 4)
    assert (stats.images, stats.face_lines, stats.invalid, stats.kept) == (3, 4, 1, 2)
    seven = tmp_path / "seven.txt"  # 7 numbers, the 6th the invalid flag: dropped
    seven.write_text("a/x.jpg\n2\n1 2 3 4 2 1 0\n5 6 7 8 1 0 2\n")
    records, stats = wider_face.parse_annotations(seven, return_stats=True)
    np.testing.assert_array_equal(records[0].boxes, [[6, 5, 14, 12]])
    np.testing.assert_array_equal(records[0].attributes, [[1, -1, -1, 0, 2, -1]])
    assert stats.invalid == 1


@pytest.fixture
def partial_layout(tmp_path, wider_dir):
    """The real train annotation file (12 880 images) beside a copy of 3 real train photos, in
    the layout `../shared/widerface` has (`real_train/<event>/<name>.jpg`)."""
    photos = sorted((wider_dir / "real_train").glob("*/*.jpg"))[:3]
    for photo in photos:
        dest = tmp_path / "real_train" / photo.parent.name / photo.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dest)
    shutil.copy(wider_dir / "wider_face_train_bbx_gt.txt", tmp_path)
    return tmp_path, [f"{p.parent.name}/{p.name}" for p in photos]


def test_partial_layout_reads_the_photos_present(partial_layout, caplog):
    root, present = partial_layout
    assert wider_face.images_dir(root, "train") == root / "real_train"
    records = wider_face.parse_annotations(root / "wider_face_train_bbx_gt.txt")
    # the absl logger's own level: an in-process absl command earlier in the run may raise it
    with caplog.at_level("INFO", logger="absl"):
        kept, absent = wider_face.present_records(records, wider_face.images_dir(root, "train"))
    assert sorted(r.path for r in kept) == sorted(present)
    assert absent == 12880 - 3
    assert "12877 absent" in caplog.text
    examples = list(wider_face.load_examples(root, "train", training=False))
    assert sorted(path.numpy().decode() for _, _, path in examples) == sorted(present)
    by_path = {r.path: r for r in records}
    for image, boxes, path in examples:
        record = by_path[path.numpy().decode()]
        np.testing.assert_array_equal(boxes.numpy(), record.boxes)
        assert image.shape[1] == 1024 and image.dtype == np.uint8  # WIDER photos: 1024 wide


def test_official_layout_still_preferred_and_none_present_is_an_error(partial_layout):
    root, _ = partial_layout
    (root / "WIDER_train" / "images").mkdir(parents=True)
    assert wider_face.images_dir(root, "train") == root / "WIDER_train" / "images"
    with pytest.raises(FileNotFoundError, match="None of the images listed"):
        wider_face.load_examples(root, "train", training=False)


def test_result_files_read_back_by_the_official_reader(tmp_path, wider_dir):
    """What `benchmarks/wider_real_bench.py` writes (`wider_format.write_results`) is read back
    by the reader the evaluation uses, and scores the official val ground truth's own boxes of
    two real_val photos as perfect."""
    images = {key: (key, gt, keep) for key, gt, keep in
              wider_eval.load_ground_truth(str(wider_dir / "ground_truth"))}
    keys = sorted(wider_format.image_key(p) for p in (wider_dir / "real_val").glob("*/*.jpg"))[:2]
    truth = [images[k] for k in keys]
    for key, gt, _ in truth:
        boxes = wider_format.xywh_to_yxyx(gt)  # (M, 4) from the .mat's x y w h
        scores = np.linspace(1.0, 0.5, len(gt))
        wider_format.write_results(tmp_path, key + ".jpg", boxes, scores)
    read = wider_eval.read_results(tmp_path)
    assert sorted(read) == keys
    for key, gt, _ in truth:
        boxes, scores = read[key]
        np.testing.assert_allclose(boxes, wider_format.xywh_to_yxyx(gt), atol=1e-3)
        np.testing.assert_allclose(scores, np.linspace(1.0, 0.5, len(gt)), atol=1e-6)
    aps = wider_eval.evaluate_images(tmp_path, truth)
    counted = [s for s in wider_eval.SETTINGS if sum(k[s].sum() for _, _, k in truth)]
    assert counted and all(aps[s] == pytest.approx(1.0) for s in counted)

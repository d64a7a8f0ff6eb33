"""WIDER FACE annotation parser (real val file + malformed copies) and the tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.pipelines import wider_face


@pytest.fixture(scope="module")
def val_parse(wider_dir):
    return wider_face.parse_annotations(wider_dir / "wider_face_val_bbx_gt.txt",
                                        return_stats=True)


def test_real_val_counts(val_parse):
    records, stats = val_parse
    # 3 226 images and 39 708 face lines; counted independently with awk over the file:
    # 585 lines have invalid = 1, 11 valid lines have w <= 0 or h <= 0 (4 of them are the
    # all-zero lines of images without faces, written there with a count of 1).
    assert (stats.images, stats.face_lines) == (3226, 39708)
    assert (stats.invalid, stats.degenerate) == (585, 11)
    assert stats.kept == 39708 - 585 - 11 == sum(len(r.boxes) for r in records)
    assert len(records) == 3226


def test_real_val_literal_boxes(val_parse):
    records, _ = val_parse
    first = records[0]
    assert first.path == "0--Parade/0_Parade_marchingband_1_465.jpg"
    # Line 3: "345 211 4 4 2 0 0 0 2 0" -> [y, x, y + h, x + w]; line 4 is invalid (dropped),
    # so the second kept box is line 5: "250 126 3 4 2 0 0 0 2 0".
    np.testing.assert_array_equal(first.boxes[:2], [[211, 345, 215, 349], [126, 250, 130, 253]])
    np.testing.assert_array_equal(first.attributes[0], [2, 0, 0, 0, 2, 0])
    assert first.boxes.dtype == np.float32
    last = records[-1]
    assert last.path == "9--Press_Conference/9_Press_Conference_Press_Conference_9_183.jpg"
    # "560 136 170 204 1 0 0 0 0 0"
    np.testing.assert_array_equal(last.boxes[2], [136, 560, 340, 730])
    empty = next(r for r in records if r.path == "0--Parade/0_Parade_Parade_0_275.jpg")
    assert empty.boxes.shape == (0, 4)


def test_find_annotation_file_flat_and_official(tmp_path, wider_dir):
    assert wider_face.find_annotation_file(wider_dir, "val").name == "wider_face_val_bbx_gt.txt"
    official = tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    official.parent.mkdir()
    official.write_text("")
    assert wider_face.find_annotation_file(tmp_path, "train") == official
    with pytest.raises(FileNotFoundError, match="wider_face_val_bbx_gt.txt"):
        wider_face.find_annotation_file(tmp_path, "val")


def test_zero_face_image_placeholder_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("a/x.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \nb/y.jpg\n2\n"
                    "1 2 3 4 0 0 0 0 0 0 \n5 6 0 4 0 0 0 0 0 0 \n")
    records, stats = wider_face.parse_annotations(path, return_stats=True)
    assert [r.path for r in records] == ["a/x.jpg", "b/y.jpg"]
    assert records[0].boxes.shape == (0, 4)
    np.testing.assert_array_equal(records[1].boxes, [[2, 1, 6, 4]])
    assert (stats.empty_images, stats.degenerate, stats.kept) == (1, 1, 1)


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("a/x.jpg\nabc\n", 2, "integer face count"),
        ("a/x.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "10 numbers"),
        ("a/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "face line 2 of 2"),
        ("a/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb/y.jpg\n-1\n", 5, "face count >= 0"),
        ("a/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "image path"),
    ],
    ids=["count_not_int", "short_face_line", "truncated", "negative_count", "extra_face"],
)
def test_malformed_file_names_file_and_line(tmp_path, text, line, expected):
    path = tmp_path / "bad_gt.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected) as info:
        wider_face.parse_annotations(path)
    assert f"bad_gt.txt:{line}:" in str(info.value)


def _write_mini_wider(root):
    """A 5-image WIDER layout: RGB/grey/CMYK JPEG, a PNG and a truncated JPEG."""
    images = root / "WIDER_val" / "images" / "0--Test"
    images.mkdir(parents=True)
    yy, xx = np.mgrid[0:100, 0:200]
    rgb = np.stack([xx * 255 / 199, yy * 255 / 99, np.full_like(xx, 60)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(images / "rgb.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(images / "grey.jpg")
    Image.fromarray(rgb).convert("CMYK").save(images / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((50, 25), 128, np.uint8)).save(images / "flat.png")
    Image.fromarray(rgb).save(root / "full.jpg")
    data = (root / "full.jpg").read_bytes()
    (images / "broken.jpg").write_bytes(data[: len(data) // 3])
    ann = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    ann.parent.mkdir()
    lines = []
    for name in ("rgb", "broken", "grey", "cmyk"):
        lines += [f"0--Test/{name}.jpg", "1", "20 10 40 30 0 0 0 0 0 0 "]
    lines += ["0--Test/flat.png", "0", "0 0 0 0 0 0 0 0 0 0 "]
    ann.write_text("\n".join(lines) + "\n")


def test_eval_dataset_decodes_skips_and_maps_boxes(tmp_path):
    _write_mini_wider(tmp_path)
    counter = wider_face.SkipCounter()
    ds = wider_face.make_dataset(tmp_path, "val", batch_size=1, training=False, eval_size=64,
                                 max_boxes=3, skip_counter=counter)
    out = [(x.numpy()[0], {k: v.numpy()[0] for k, v in y.items()}) for x, y in ds]
    assert counter.skipped == 1
    assert [y["image_path"].decode() for _, y in out] == [
        "0--Test/rgb.jpg", "0--Test/grey.jpg", "0--Test/cmyk.jpg", "0--Test/flat.png"]
    for image, labels in out[:3]:
        # 100 x 200 -> 32 x 64: the box x=20 y=10 w=40 h=30 -> [10, 20, 40, 60] * 0.32.
        np.testing.assert_allclose(labels["boxes"], [[3.2, 6.4, 12.8, 19.2], [-1] * 4, [-1] * 4],
                                   rtol=1e-6)
        assert labels["num_boxes"] == 1
        np.testing.assert_allclose(labels["scale"], [0.32, 0.32], rtol=1e-6)
        np.testing.assert_array_equal(labels["original_size"], [100, 200])
        assert not image[32:].any()
    # Decoded colours match PIL's decoding (an independent decoder, CMYK -> RGB included).
    for k, name in enumerate(("rgb", "grey", "cmyk")):
        pil = np.asarray(Image.open(tmp_path / f"WIDER_val/images/0--Test/{name}.jpg")
                         .convert("RGB"), np.float32) / 255
        reference = tf.image.resize(pil, (32, 64)).numpy()
        assert np.abs(out[k][0][:32, :64] - reference).mean() < 0.02, name
    grey = out[1][0][:32]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    # The gradient's red channel runs 0 -> 1 from left to right: no flip in evaluation mode.
    assert out[0][0][16, 2, 0] < 0.1 and out[0][0][16, 61, 0] > 0.9
    # The 50 x 25 grey PNG of value 128 -> 64 x 32, constant 128/255, zero padding to the right.
    flat_image, flat_labels = out[3]
    np.testing.assert_allclose(flat_image[:, :32], 128 / 255, rtol=1e-6)
    assert not flat_image[:, 32:].any()
    assert flat_labels["num_boxes"] == 0
    np.testing.assert_array_equal(flat_labels["boxes"], -np.ones((3, 4)))


def test_train_dataset_sizes_flips_and_target_fn(tmp_path):
    # 12 identical black 60 x 120 PNGs with a white block exactly under box [10, 20, 30, 50].
    images = tmp_path / "WIDER_train" / "images" / "1--Block"
    images.mkdir(parents=True)
    block = np.zeros((60, 120), np.uint8)
    block[10:30, 20:50] = 255
    lines = []
    for i in range(12):
        Image.fromarray(block).save(images / f"b{i}.png")
        lines += [f"1--Block/b{i}.png", "1", "20 10 30 20 0 0 0 0 0 0 "]
    (tmp_path / "wider_face_split").mkdir()
    (tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text("\n".join(lines))

    def target_fn(image, boxes, num_boxes):
        real = boxes[:num_boxes]
        inside = tf.reduce_mean(image[tf.cast(real[0, 0], tf.int32) + 2:
                                      tf.cast(real[0, 2], tf.int32) - 2,
                                      tf.cast(real[0, 1], tf.int32) + 2:
                                      tf.cast(real[0, 3], tf.int32) - 2])
        return {"box": real[0], "inside": inside}

    ds = wider_face.make_dataset(tmp_path, "train", batch_size=3, image_sizes=(60, 90, 120),
                                 seed=7, target_fn=target_fn)
    sizes, xmins = [], []
    for _epoch in range(3):
        for images_batch, labels in ds:
            size = images_batch.shape[1]
            sizes.append(size)
            factor = size / 120
            # The white block is under the box whether or not the image was flipped.
            np.testing.assert_allclose(labels["inside"].numpy(), 1.0, atol=1e-5)
            for box in labels["box"].numpy():
                flipped = [10, 120 - 50, 30, 120 - 20]
                assert (np.allclose(box, np.multiply([10, 20, 30, 50], factor), rtol=1e-5)
                        or np.allclose(box, np.multiply(flipped, factor), rtol=1e-5))
                xmins.append(box[1] / factor)
    assert len(sizes) == 12 and set(sizes) == {60, 90, 120}
    n_flipped = int(np.isclose(xmins, 70).sum())
    assert 0 < n_flipped < len(xmins)
    # The same seed gives the same sizes and flips.
    again = wider_face.make_dataset(tmp_path, "train", batch_size=3, image_sizes=(60, 90, 120),
                                    seed=7, target_fn=target_fn)
    assert [x.shape[1] for x, _ in again] == sizes[:4]


def test_from_tfds_example_converts_and_drops():
    example = {
        "image": tf.zeros((10, 20, 3), tf.uint8),
        "image/filename": tf.constant("0--Parade/x.jpg"),
        "faces": {
            "bbox": tf.constant([[0.1, 0.25, 0.5, 0.75], [0.2, 0.2, 0.2, 0.3], [0, 0, 1, 1]]),
            "invalid": tf.constant([False, False, True]),
        },
    }
    _, boxes, path = wider_face.from_tfds_example(example)
    np.testing.assert_allclose(boxes.numpy(), [[1, 5, 5, 15]], rtol=1e-6)
    assert path.numpy() == b"0--Parade/x.jpg"

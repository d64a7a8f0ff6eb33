"""Evaluation at original resolution: boxes come back in original pixels, exactly.

The detector is an oracle that returns the extent of the bright pixels of its input (one
detection per image), so its correct output is known independently of the code under test: the
ground-truth box of each non-square image. The reference for the AP is the official protocol
(`wider_eval`) on `.mat` files written from the same boxes."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from handgrad.pipelines.generators import synthetic_faces
from handgrad.zoo.face import evaluation, wider_eval
from handgrad.zoo.face.configs import DataConfig
from handgrad.zoo.face.retinanet.configs import FaceConfig, PostprocessConfig

# (height, width, face x y w h): non-square, sides not multiples of 64, faces off the grid.
IMAGES = {"0--Parade/wide": (300, 517, (101, 61, 199, 119)),
          "0--Parade/tall": (487, 190, (41, 253, 57, 170)),
          "1--Handshaking/small": (90, 70, (20, 10, 40, 40))}


class BrightBoxOracle:
    """Detects the bounding box of the pixels brighter than 0.5, with score 1."""

    input_multiple = 64
    sections = {"postprocess": PostprocessConfig(max_detections=5)}

    def __init__(self):
        self.sizes = []  # the input sizes it was called with

    def _record(self, size):
        self.sizes.append(tuple(int(v) for v in size.numpy()))

    def detect(self, images):
        tf.py_function(self._record, [tf.shape(images)[1:3]], [])  # runs inside tf.function too
        mask = images[..., 0] > 0.5  # (B, H, W)

        def extent(line):  # (B, S) bool -> first index, last index + 1
            idx = tf.range(tf.shape(line)[1], dtype=tf.float32)[None]
            return (tf.reduce_min(tf.where(line, idx, 1e9), axis=1),
                    tf.reduce_max(tf.where(line, idx, -1.0), axis=1) + 1)

        (y0, y1), (x0, x1) = extent(tf.reduce_any(mask, 2)), extent(tf.reduce_any(mask, 1))
        boxes = tf.stack([y0, x0, y1, x1], axis=-1)[:, None]  # (B, 1, 4)
        batch = tf.shape(images)[0]
        return {"boxes": tf.pad(boxes, [[0, 0], [0, 4], [0, 0]]),
                "scores": tf.pad(tf.ones([batch, 1]), [[0, 0], [0, 4]]),
                "num_detections": tf.ones([batch], tf.int32)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bright_boxes")
    entries = []
    for key, (height, width, (x, y, w, h)) in IMAGES.items():
        image = np.zeros((height, width, 3), np.uint8)
        image[y:y + h, x:x + w] = 255
        path = root / "WIDER_val" / "images" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        entries.append((f"{key}.png", np.array([[x, y, w, h, 0, 0, 0, 0, 0, 0]], np.int32)))
    split = root / "wider_face_split"
    split.mkdir()
    (split / "wider_face_val_bbx_gt.txt").write_text(synthetic_faces._annotation_text(entries))
    synthetic_faces.write_ground_truth(root / "ground_truth", entries)
    return root


def _truth_yxyx(key):
    _, _, (x, y, w, h) = IMAGES[key]
    return np.array([[y, x, y + h, x + w]], np.float64)


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((1.0, 2.0), True)])
def test_original_resolution_boxes_equal_truth_and_ap_is_one(data_dir, tmp_path, scales, flip):
    config = FaceConfig(data=DataConfig(dataset="wider", eval_mode="original",
                                        eval_scales=scales, eval_flip=flip))
    oracle = BrightBoxOracle()
    predictions, _ = evaluation.predict_wider(oracle, config, data_dir)
    assert sorted(predictions) == sorted(IMAGES)
    for key, (boxes, scores) in predictions.items():
        # every scale / mirror finds the same box, so one NMS leaves exactly one
        np.testing.assert_array_equal(boxes, _truth_yxyx(key))
        np.testing.assert_array_equal(scores, [1.0])
    # never resized: each image runs at its own size padded up to the next multiple of 64
    originals = {(-(-h // 64) * 64, -(-w // 64) * 64) for h, w, _ in IMAGES.values()}
    assert set(oracle.sizes) >= originals
    metrics = evaluation.evaluate(oracle, config, data_dir, tmp_path)
    assert metrics == {"val_images": 3, "ap_easy": 1.0, "ap_medium": 1.0, "ap_hard": 1.0}
    results = wider_eval.read_results(tmp_path / "wider_results")
    for key in IMAGES:
        np.testing.assert_allclose(results[key][0], _truth_yxyx(key), atol=1e-3)


def test_resize_mode_is_off_by_the_resize(data_dir):
    """The 640-style resize (here to 96) quantises the boxes: the original mode's exactness above
    is not a property of the oracle."""
    config = FaceConfig(data=DataConfig(dataset="wider", eval_mode="resize", eval_size=96))
    predictions, _ = evaluation.predict_wider(BrightBoxOracle(), config, data_dir)
    errors = [np.abs(predictions[k][0] - _truth_yxyx(k)).max() for k in IMAGES]
    assert max(errors) > 0.5

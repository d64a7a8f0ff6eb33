"""Geometry of `pipelines.augment`: boxes checked against hand-computed literals."""

import numpy as np
import pytest
import tensorflow as tf

from handgrad.pipelines import augment
from handgrad.pipelines import boxes as primitives


def test_flip_boxes_literal_and_twice_is_identity():
    boxes = np.array([[10.0, 20.0, 30.0, 50.0], [0.0, 0.0, 5.0, 100.0]], np.float32)
    flipped = primitives.flip_boxes_left_right(boxes, 100).numpy()
    # x -> 100 - x, and xmin/xmax swap roles: [20, 50] -> [50, 80]; [0, 100] -> [0, 100].
    np.testing.assert_array_equal(flipped, [[10, 50, 30, 80], [0, 0, 5, 100]])
    np.testing.assert_array_equal(primitives.flip_boxes_left_right(flipped, 100).numpy(), boxes)


def test_flip_image_and_boxes_twice_is_identity():
    rng = np.random.default_rng(0)
    image = rng.random((7, 11, 3)).astype(np.float32)
    boxes = np.array([[1.5, 2.25, 6.0, 9.75]], np.float32)
    once_image, once_boxes = augment.flip_left_right(image, boxes)
    np.testing.assert_array_equal(once_image.numpy(), image[:, ::-1])
    twice_image, twice_boxes = augment.flip_left_right(once_image, once_boxes)
    np.testing.assert_array_equal(twice_image.numpy(), image)
    np.testing.assert_array_equal(twice_boxes.numpy(), boxes)


@pytest.mark.parametrize(
    "shape, size, box, expected_box, expected_hw",
    [
        # 200 x 100 -> longer side 50: factor 1/4 on both axes.
        ((200, 100), 50, [40, 20, 120, 60], [10, 5, 30, 15], (50, 25)),
        # 99 x 150 -> 64: h' = round(99 * 64 / 150) = round(42.24) = 42, so sy = 42/99, sx = 64/150.
        ((99, 150), 64, [33, 75, 66, 150], [14, 32, 28, 64], (42, 64)),
        # upscaling 30 x 40 -> 80: factor 2.
        ((30, 40), 80, [3, 4, 13, 24], [6, 8, 26, 48], (60, 80)),
    ],
    ids=["down_by_4", "rounded_short_side", "up_by_2"],
)
def test_resize_keep_aspect_maps_known_box(shape, size, box, expected_box, expected_hw):
    image = tf.zeros(shape + (3,), tf.uint8)
    resized, boxes, scale = augment.resize_keep_aspect(image, [box], size)
    assert tuple(resized.shape[:2]) == expected_hw
    np.testing.assert_allclose(boxes.numpy(), [expected_box], rtol=1e-6)
    np.testing.assert_allclose(scale.numpy(), [expected_hw[0] / shape[0],
                                               expected_hw[1] / shape[1]], rtol=1e-7)


@pytest.mark.parametrize("flip", [False, True], ids=["no_flip", "flip"])
def test_resize_and_pad_keeps_box_on_its_pixels(flip):
    # A black 40 x 80 image with a white block exactly under the box [10, 20, 20, 40].
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:20, 20:40] = 255
    out, boxes, scale = augment.resize_and_pad(image, [[10.0, 20.0, 20.0, 40.0]], 160, flip=flip)
    out = out.numpy()
    # Factor 2: the resized image is 80 x 160 in the top-left of a 160 x 160 square.
    expected = [20, 80, 40, 120] if flip else [20, 40, 40, 80]
    np.testing.assert_allclose(boxes.numpy(), [expected], rtol=1e-6)
    np.testing.assert_allclose(scale.numpy(), [2.0, 2.0])
    y0, x0, y1, x1 = expected
    np.testing.assert_allclose(out[y0 + 2:y1 - 2, x0 + 2:x1 - 2], 1.0, atol=1e-6)
    outside = out[:80].copy()
    outside[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = 0.0
    np.testing.assert_allclose(outside, 0.0, atol=1e-6)
    # The padding (rows 80..159) is exactly zero.
    assert not out[80:].any()


def test_clip_boxes_literal():
    boxes = [[-5.0, 3.0, 50.0, 120.0], [10.0, -1.0, 20.0, 5.0]]
    np.testing.assert_array_equal(primitives.clip_boxes(boxes, 40, 100).numpy(),
                                  [[0, 3, 40, 100], [10, 0, 20, 5]])

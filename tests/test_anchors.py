"""Anchors: literal counts per level for the training sizes, literal boxes on a tiny image."""

import numpy as np
import pytest

from handgrad.zoo.face.retinanet import anchors


@pytest.mark.parametrize(
    "image_size, per_level, total",
    [
        ("512", [12288, 3072, 768, 192], 16320),  # 64^2 3, 32^2 3, 16^2 3, 8^2 3
        ("576", [15552, 3888, 972, 243], 20655),  # 72^2 3, 36^2 3, 18^2 3, 9^2 3
        ("640", [19200, 4800, 1200, 300], 25500),  # 80^2 3, 40^2 3, 20^2 3, 10^2 3
    ],
    ids=["size512", "size576", "size640"],
)
def test_anchor_counts_per_level(image_size, per_level, total):
    size = int(image_size)
    sizes = anchors.anchor_sizes()
    assert anchors.anchors_per_level(size, sizes, (1.0,)) == per_level
    assert anchors.generate_anchors(size, sizes, (1.0,)).shape == (total, 4)
    ids = anchors.level_ids(size, sizes, (1.0,)).numpy()
    assert np.bincount(ids).tolist() == per_level


def test_anchor_counts_two_ratios_640():
    assert anchors.anchors_per_level(640, anchors.anchor_sizes(), (1.0, 1.25)) == [
        38400, 9600, 2400, 600]


def test_anchor_sizes_span_seed_areas():
    sizes = anchors.anchor_sizes(14, 220, num_levels=4, scales_per_level=3)
    flat = [s for level in sizes for s in level]
    np.testing.assert_allclose(flat[0], 14.0)
    np.testing.assert_allclose(flat[-1], 220.0)
    np.testing.assert_allclose(flat[1] / flat[0], (220 / 14) ** (1 / 11))
    np.testing.assert_allclose(sizes[1][0], 14 * (220 / 14) ** (3 / 11))


def test_literal_boxes_tiny_image():
    # 16x16 image, strides 8 and 16, one 8-px anchor on P3 and one 16-px anchor on P4.
    boxes = anchors.generate_anchors(16, [(8.0,), (16.0,)], (1.0,), strides=(8, 16)).numpy()
    expected = [
        [0, 0, 8, 8], [0, 8, 8, 16], [8, 0, 16, 8], [8, 8, 16, 16],  # P3: rows then columns
        [0, 0, 16, 16],  # P4: one cell, centre (8, 8)
    ]
    np.testing.assert_allclose(boxes, expected)


def test_literal_boxes_sizes_and_ratios_order():
    # One 8x8 cell (stride 8), sizes (4, 8), ratios (1, 4): sizes outer, ratios inner.
    boxes = anchors.generate_anchors(8, [(4.0, 8.0)], (1.0, 4.0), strides=(8,)).numpy()
    expected = [
        [2, 2, 6, 6],  # size 4, ratio 1
        [0, 3, 8, 5],  # size 4, ratio 4: h = 4 * 2 = 8, w = 4 / 2 = 2
        [0, 0, 8, 8],  # size 8, ratio 1
        [-4, 2, 12, 6],  # size 8, ratio 4: h = 16, w = 4
    ]
    np.testing.assert_allclose(boxes, expected)


def test_odd_feature_size_uses_ceil():
    # 72 px at stride 64 -> ceil(72 / 64) = 2 cells per side.
    assert anchors.anchors_per_level(72, [(10.0,)], (1.0,), strides=(64,)) == [4]
    centres = anchors.generate_anchors(72, [(10.0,)], (1.0,), strides=(64,)).numpy()
    np.testing.assert_allclose(centres[:, 0] + 5, [32, 32, 96, 96])


def test_mismatched_levels_raise():
    with pytest.raises(ValueError, match="one tuple of sizes per stride"):
        anchors.generate_anchors(64, [(8.0,)], (1.0,), strides=(8, 16))


def test_non_square_image_literal_boxes():
    boxes = anchors.generate_anchors((16, 8), [(8.0,)], (1.0,), strides=(8,)).numpy()
    np.testing.assert_allclose(boxes, [[0, 0, 8, 8], [8, 0, 16, 8]])
    assert anchors.anchors_per_level((640, 512), anchors.anchor_sizes(), (1.0,)) == [
        15360, 3840, 960, 240]

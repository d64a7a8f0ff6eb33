"""`augment.CropPhotometricPolicy` and its pieces: crops against literal cases and a NumPy loop,
photometric steps against `colorsys` / NumPy, determinism for a seed, face counts."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from handgrad.pipelines import augment, detection


def _crop_numpy(boxes, y0, x0, side):
    """RetinaFace's `_crop` box rule, one face at a time."""
    kept, keep = [], []
    for ymin, xmin, ymax, xmax in boxes:
        cy, cx = (ymin + ymax) / 2 - y0, (xmin + xmax) / 2 - x0
        inside = 0 < cy < side and 0 < cx < side
        keep.append(inside)
        if inside:
            kept.append([min(max(v, 0), side) for v in (ymin - y0, xmin - x0, ymax - y0,
                                                         xmax - x0)])
    return np.asarray(kept, np.float32).reshape(-1, 4), np.asarray(keep)


def test_crop_literal():
    image = np.arange(10 * 12 * 3, dtype=np.int32).reshape(10, 12, 3)
    boxes = np.array([
        [2, 3, 6, 7],  # centre (4, 5) -> (3, 3) in the crop: kept, moved by (1, 2)
        [0, 0, 4, 4],  # centre x 2 -> 0 in the crop, on its border: dropped
        [5, 6, 9, 11],  # centre y 7 -> 6 = side, on its border: dropped
        [4, 5, 9, 10],  # centre (6.5, 7.5) -> (5.5, 5.5): kept, clipped to the crop
    ], np.float32)
    out, kept, keep = augment.crop(image, boxes, tf.constant([1, 2]), 6)
    np.testing.assert_array_equal(out.numpy(), image[1:7, 2:8])
    np.testing.assert_array_equal(keep.numpy(), [True, False, False, True])
    np.testing.assert_array_equal(kept.numpy(), [[1, 1, 5, 5], [3, 3, 6, 6]])


def test_crop_matches_numpy_rule_on_random_faces():
    rng = np.random.default_rng(0)
    yx = rng.uniform(-20, 300, (300, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(1, 80, (300, 2))], axis=1).astype(np.float32)
    for y0, x0, side in [(0, 0, 100), (37, 120, 64), (150, 10, 150)]:
        image = tf.zeros([320, 400, 3], tf.uint8)
        _, kept, keep = augment.crop(image, boxes, tf.constant([y0, x0]), side)
        want_kept, want_keep = _crop_numpy(boxes, y0, x0, side)
        np.testing.assert_array_equal(keep.numpy(), want_keep)
        np.testing.assert_allclose(kept.numpy(), want_kept, atol=1e-4)


@pytest.mark.parametrize(
    "boxes, expected",
    [
        # candidate 0: y [0, 30) x [0, 30); candidate 1: side 50 at
        # (floor(0.5 * 51), floor(0.99 * 151)) = (25, 149), i.e. y [25, 75] x [149, 199]
        ([[0, 0, 10, 10]], ((0, 0), 30, True)),
        ([[30, 150, 40, 160]], ((25, 149), 50, True)),
        ([[20, 150, 40, 160], [0, 0, 10, 31]], ((0, 0), 30, False)),  # no whole face in either
        (np.zeros((0, 4)), ((0, 0), 30, True)),  # no faces: the first candidate
    ],
    ids=["first_holds", "second_holds", "none_holds", "no_faces"],
)
def test_choose_crop_literal(boxes, expected):
    offset, side, found = augment.choose_crop(
        tf.constant(boxes, tf.float32), 100, 200, tf.constant([0.3, 0.5]),
        tf.constant([[0.0, 0.0], [0.5, 0.99]]))
    want_offset, want_side, want_found = expected
    assert bool(found) == want_found
    if want_found:
        np.testing.assert_array_equal(offset.numpy(), want_offset)
        assert int(side) == want_side


def _hsv_numpy(image, saturation, hue):
    out = np.empty_like(image, dtype=np.float64)
    for index in np.ndindex(image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*image[index])
        out[index] = colorsys.hsv_to_rgb((h + hue) % 1.0, min(s * saturation, 1.0), v)
    return out


@pytest.mark.parametrize("saturation, hue", [(1.0, 0.0), (1.4, 0.0), (0.5, 0.0), (1.0, 0.07),
                                             (1.0, -0.1), (1.3, -0.04), (0.6, 0.5)])
def test_saturation_hue_matches_colorsys(saturation, hue):
    rng = np.random.default_rng(1)
    image = rng.random((6, 7, 3)).astype(np.float32)
    image[0, :3] = [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]  # grays have no hue
    image[1, :3] = [[1.0, 0.0, 0.0], [0.2, 0.9, 0.9], [0.3, 0.3, 0.8]]  # ties of max / min
    out = augment.photometric(image, saturation=saturation, hue=hue).numpy()
    np.testing.assert_allclose(out, _hsv_numpy(image, saturation, hue), atol=2e-6)


@pytest.mark.parametrize("contrast_first", [True, False], ids=["contrast_first", "hsv_first"])
def test_photometric_matches_numpy_order_and_clipping(contrast_first):
    rng = np.random.default_rng(2)
    image = rng.random((5, 4, 3)).astype(np.float32)
    brightness, contrast, saturation, hue = 0.1, 1.4, 0.7, 0.05
    x = np.clip(image + brightness, 0, 1)
    if contrast_first:
        x = np.clip(x * contrast, 0, 1)
    x = np.clip(_hsv_numpy(x, saturation, hue), 0, 1)
    if not contrast_first:
        x = np.clip(x * contrast, 0, 1)
    out = augment.photometric(image, brightness, contrast, saturation, hue, contrast_first)
    np.testing.assert_allclose(out.numpy(), x, atol=3e-6)
    assert out.numpy().min() >= 0.0 and out.numpy().max() <= 1.0


def test_photometric_identity_values_leave_image_unchanged():
    image = np.random.default_rng(3).random((8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(augment.photometric(image).numpy(), image)


def _first(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), x) for x in dataset.take(n)]


def test_random_params_deterministic_for_a_seed():
    policy = augment.CropPhotometricPolicy((64, 96, 128), crop_tries=4)
    a, b = _first(policy.random_params(3, seed=5), 12), _first(policy.random_params(3, seed=5), 12)
    c = _first(policy.random_params(3, seed=6), 12)
    for x, y in zip(a, b, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    assert not np.array_equal(a[0]["crop_scales"], c[0]["crop_scales"])
    scales = np.concatenate([p["crop_scales"] for p in a])
    assert scales.min() >= 0.3 and scales.max() <= 1.0
    sizes = np.array([p["size"] for p in a]).reshape(4, 3)  # one size per batch of 3
    np.testing.assert_array_equal(sizes, sizes[:, :1].repeat(3, axis=1))
    assert set(sizes[:, 0]) <= {64, 96, 128}


def _block_image():
    """A black 300 x 400 image with a white block exactly under the face [100, 150, 140, 190]."""
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:140, 150:190] = 255
    return image, np.array([[100, 150, 140, 190], [0, 0, 10, 10]], np.float32)


@pytest.mark.parametrize("flip", [False, True], ids=["no_flip", "flip"])
def test_policy_moves_box_with_its_pixels(flip):
    image, boxes = _block_image()
    policy = augment.CropPhotometricPolicy((160,), photometric=False, crop_tries=1)
    params = policy.eval_params().take(1).get_single_element()
    # crop side floor(0.4 * 300) = 120 at (floor(0.5 * 181), floor(0.5 * 281)) = (90, 140):
    # the face moves to [10, 10, 50, 50], scaled by 160 / 120; the corner face is dropped.
    params.update(size=tf.constant(160), crop=tf.constant(True), flip=tf.constant(flip),
                  crop_scales=tf.constant([0.4]), crop_offsets=tf.constant([[0.5, 0.5]]))
    out, kept, scale = policy(image, boxes, params)
    f = 160 / 120
    want = [10 * f, 10 * f, 50 * f, 50 * f]
    if flip:
        want = [want[0], 160 - want[3], want[2], 160 - want[1]]
    np.testing.assert_allclose(kept.numpy(), [want], rtol=1e-5)
    np.testing.assert_allclose(scale.numpy(), [f, f])
    y0, x0, y1, x1 = np.round(want).astype(int)
    out = out.numpy()
    np.testing.assert_allclose(out[y0 + 2:y1 - 2, x0 + 2:x1 - 2], 1.0)
    out[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = 0.0
    np.testing.assert_allclose(out, 0.0, atol=1e-6)
    assert policy.counter.counts() == {"images": 1, "faces": 2, "dropped_by_crop": 1,
                                       "uncropped": 0}


def test_eval_is_the_seed_resize_and_pad():
    image, boxes = _block_image()
    ours = augment.CropPhotometricPolicy((128,), eval_size=192)
    seed = augment.ResizeFlipPolicy((128,), eval_size=192)
    a = ours(image, boxes, ours.eval_params().take(1).get_single_element())
    b = seed(image, boxes, seed.eval_params().take(1).get_single_element())
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_training_pipeline_deterministic_and_counts_every_face():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    yx = rng.uniform(0, 110, (40, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(2, 12, (40, 2))], axis=1).astype(np.float32)
    examples = tf.data.Dataset.from_tensors((image, boxes, "x.jpg")).repeat(6)

    def run():
        policy = augment.CropPhotometricPolicy((64,))
        counter = detection.FaceCounter("boxes", "dropped_empty", "dropped_by_cap")
        ds = detection.parse_examples(examples, policy, batch_size=3, training=True,
                                      max_boxes=25, seed=11, counter=counter)
        return _first(ds, 2), policy.counter.counts(), counter.counts()

    (batches, crops, boxes_count), (again, _, _) = run(), run()
    for x, y in zip(batches, again, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    num_boxes = np.concatenate([labels["num_boxes"] for _, labels in batches])
    # every face is in a batch, dropped by the crop, or dropped by the cap: none unaccounted
    assert crops["faces"] == 6 * 40
    assert boxes_count["boxes"] == crops["faces"] - crops["dropped_by_crop"]
    assert num_boxes.sum() == boxes_count["boxes"] - boxes_count["dropped_by_cap"] \
        - boxes_count["dropped_empty"]
    assert np.all(num_boxes <= 25)

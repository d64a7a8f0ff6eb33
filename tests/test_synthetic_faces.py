"""The synthetic WIDER-format generator: determinism, annotations that describe the pasted pixels,
the official text / .mat formats, and the WIDER parser, pipeline and evaluation running on it."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from handgrad.pipelines import wider_face, wider_format
from handgrad.pipelines.generators import synthetic_faces
from handgrad.zoo.face import evaluation, wider_eval

SEED, NUM_TRAIN, NUM_VAL, SIZE = 1, 3, 8, 160
EMPTY_VAL_IMAGES = (3, 7)  # images of seed 1's val split drawn with no face


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = synthetic_faces.generate(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=SEED,
                                       image_size=SIZE)
    return root, summary


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".jpg", ".txt")}


def test_deterministic_for_a_seed(synthetic, tmp_path):
    root, summary = synthetic
    again = synthetic_faces.generate(tmp_path / "a", num_train=NUM_TRAIN, num_val=NUM_VAL,
                                     seed=SEED, image_size=SIZE)
    assert again == summary
    first, second = _files(root), _files(tmp_path / "a")
    assert len(first) == NUM_TRAIN + NUM_VAL + 2 and first == second
    for name in ("wider_face_val", "wider_hard_val"):
        a = scipy.io.loadmat(root / "ground_truth" / f"{name}.mat")
        b = scipy.io.loadmat(tmp_path / "a" / "ground_truth" / f"{name}.mat")
        assert all(str(a[k]) == str(b[k]) for k in a if not k.startswith("__"))
    synthetic_faces.generate(tmp_path / "b", num_train=1, num_val=NUM_VAL, seed=SEED + 1,
                             image_size=SIZE)
    other = (tmp_path / "b" / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_text()
    assert other != (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_text()


def test_annotations_are_the_pasted_faces(synthetic):
    root, _ = synthetic
    records = wider_face.parse_annotations(
        wider_face.find_annotation_file(root, "val"), drop_invalid=False)
    faces, backgrounds = synthetic_faces.load_faces(), synthetic_faces.load_backgrounds()
    assert len(records) == NUM_VAL
    for i, record in enumerate(records):
        _, background, image, _ = synthetic_faces.compose_image(
            synthetic_faces.image_rng(SEED, "val", i), faces, backgrounds, SIZE)
        # The written JPEG is this image.
        written = np.asarray(Image.open(wider_face.images_dir(root, "val") / record.path),
                             np.float32) / 255
        assert written.shape == image.shape
        assert np.abs(written - image).mean() < 0.03
        # Pixels changed exactly inside the annotated boxes, and every box holds a face.
        changed = np.abs(image - background).max(axis=-1) > 0
        inside = np.zeros(changed.shape, bool)
        for ymin, xmin, ymax, xmax in record.boxes.astype(int):
            inside[ymin:ymax, xmin:xmax] = True
            assert changed[ymin:ymax, xmin:xmax].mean() > 0.5
            assert 10 <= xmax - xmin <= 250
            assert 0 <= ymin < ymax <= image.shape[0] and 0 <= xmin < xmax <= image.shape[1]
        assert not changed[~inside].any()
        assert (len(record.boxes) == 0) == (i in EMPTY_VAL_IMAGES)


def test_zero_face_image_is_written_like_the_official_files(synthetic):
    root, _ = synthetic
    text = synthetic_faces._annotation_text([("0--Coffee/a.jpg", np.zeros((0, 10)))])
    assert text == "0--Coffee/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
    lines = (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_text().splitlines()
    starts = [k for k, line in enumerate(lines) if line.endswith(".jpg")]
    for i in EMPTY_VAL_IMAGES:
        k = starts[i]
        assert lines[k + 1:k + 3] == ["0", "0 0 0 0 0 0 0 0 0 0 "]
    gt = wider_eval.load_ground_truth(str(root / "ground_truth"))
    for i in EMPTY_VAL_IMAGES:
        key, boxes, keep = gt[[k for k, _, _ in gt].index(
            wider_format.image_key(lines[starts[i]]))]
        np.testing.assert_array_equal(boxes, np.zeros((1, 4)))  # as in the official .mat
        assert not any(mask.any() for mask in keep.values())


def test_difficulty_lists_follow_the_documented_rule(synthetic):
    root, _ = synthetic
    records = wider_face.parse_annotations(
        wider_face.find_annotation_file(root, "val"), drop_invalid=False)
    by_key = {wider_format.image_key(r.path): r for r in records}
    gt = wider_eval.load_ground_truth(str(root / "ground_truth"))
    assert sorted(k for k, _, _ in gt) == sorted(by_key)
    totals = dict.fromkeys(wider_eval.SETTINGS, 0)
    for key, boxes, keep in gt:
        record = by_key[key]
        if len(record.boxes) == 0:
            continue
        height = record.boxes[:, 2] - record.boxes[:, 0]
        blur, occlusion = record.attributes[:, 0], record.attributes[:, 4]
        np.testing.assert_array_equal(keep["easy"], (height >= 50) & (occlusion == 0) & (blur < 2))
        np.testing.assert_array_equal(keep["medium"], (height >= 25) & (occlusion < 2))
        assert keep["hard"].all()
        # .mat boxes are the text file's x y w h.
        np.testing.assert_array_equal(boxes[:, :2], record.boxes[:, [1, 0]])
        for s in totals:
            totals[s] += keep[s].sum()
    assert 0 < totals["easy"] < totals["medium"] < totals["hard"]


def test_evaluation_and_pipeline_run_on_it(synthetic):
    root, _ = synthetic
    records = wider_face.parse_annotations(wider_face.find_annotation_file(root, "val"))
    # Ground truth submitted as predictions: AP 1 in the three settings.
    preds = {r.path: (r.boxes, np.linspace(1.0, 0.1, len(r.boxes))) for r in records}
    gt_dir = wider_eval.find_ground_truth_dir(root)
    assert wider_eval.evaluate(preds, gt_dir) == dict.fromkeys(wider_eval.SETTINGS, 1.0)
    # Missing the largest face of every image lowers recall in every setting.
    fewer = {}
    for path, (boxes, scores) in preds.items():
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = area < area.max() if len(area) else np.zeros(0, bool)
        fewer[path] = (boxes[keep], scores[keep])
    assert all(ap < 1.0 for ap in wider_eval.evaluate(fewer, gt_dir).values())
    # The evaluation pipeline gives boxes that map back to the annotations through `scale`.
    ds = wider_face.make_dataset(root, "val", batch_size=4, training=False, eval_size=128,
                                 max_boxes=32)
    seen = 0
    for _, labels in ds:
        for b in range(labels["boxes"].shape[0]):
            record = records[seen]
            assert labels["image_path"][b].numpy().decode() == record.path
            n = int(labels["num_boxes"][b])
            scale = np.tile(labels["scale"][b].numpy(), 2)
            np.testing.assert_allclose(labels["boxes"][b, :n].numpy() / scale, record.boxes,
                                       rtol=1e-5, atol=1e-3)
            seen += 1
    assert seen == NUM_VAL


def test_detector_results_map_back_and_evaluate(synthetic, tmp_path):
    root, _ = synthetic
    ds = wider_face.make_dataset(root, "val", batch_size=3, training=False, eval_size=96,
                                 max_boxes=40)
    batches = iter(ds)

    def oracle(images):
        # A "detector" that returns the pipeline's own boxes, in model-input pixels.
        _, labels = next(batches)
        k = labels["boxes"].shape[1]
        return labels["boxes"], np.tile(np.linspace(1, 0.5, k), (images.shape[0], 1)), \
            labels["num_boxes"]

    assert evaluation.write_dataset_predictions(oracle, ds, tmp_path) == NUM_VAL
    results = wider_eval.read_results(tmp_path)
    for record in wider_face.parse_annotations(wider_face.find_annotation_file(root, "val")):
        boxes, _ = results[wider_format.image_key(record.path)]
        # Mapped back through `scale` onto the original pixels (3 decimals in the files).
        np.testing.assert_allclose(boxes, record.boxes, atol=2e-3)
    gt_dir = wider_eval.find_ground_truth_dir(root)
    assert wider_eval.evaluate(tmp_path, gt_dir) == dict.fromkeys(wider_eval.SETTINGS, 1.0)

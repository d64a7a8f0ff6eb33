"""The WIDER-geometry generator against the real WIDER FACE validation ground truth.

References are the official files themselves, read here with scipy / plain text parsing: the
written boxes, attributes, annotation text and difficulty lists must equal the real ones; the
rendering is checked with NumPy image statistics (changed pixels, Laplacian energy)."""

import functools
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from handgrad.pipelines import wider_face
from handgrad.pipelines.generators import synthetic_faces
from handgrad.pipelines.generators import wider_geometry as wg
from handgrad.pipelines.generators import wider_geometry_render as render
from handgrad.zoo.face import wider_eval

SEED, RENDERS = 3, 2
SETTINGS = ("easy", "medium", "hard")
LABELS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@pytest.fixture(scope="module")
def real(wider_dir):
    """{"event/name": (rows (M, 10), {setting: 1-based gt indices})} from the official .mat."""
    gt = wider_dir / "ground_truth"
    full = scipy.io.loadmat(gt / "wider_face_val.mat")
    lists = {s: scipy.io.loadmat(gt / f"wider_{s}_val.mat")["gt_list"] for s in SETTINGS}
    out = {}
    for i, event in enumerate(full["event_list"][:, 0]):
        for j, name in enumerate(full["file_list"][i, 0][:, 0]):
            columns = [full["face_bbx_list"][i, 0][j, 0]]
            columns += [full[f"{n}_label_list"][i, 0][j, 0] for n in LABELS]
            settings = {s: lists[s][i, 0][j, 0].reshape(-1) for s in SETTINGS}
            out[f"{event[0]}/{name[0]}"] = (np.concatenate(columns, axis=1), settings)
    return out


def _overlapping(boxes):
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    ix = np.minimum(x2[:, None], x2[None]) > np.maximum(x1[:, None], x1[None])
    iy = np.minimum(y2[:, None], y2[None]) > np.maximum(y1[:, None], y1[None])
    return (ix & iy).sum() > len(boxes)


@pytest.fixture(scope="module")
def chosen(real):
    """Layouts that stress the geometry, found in the real files by their properties."""
    def odd(key):
        return int(key.split("--")[0]) % 2 == 1

    crowd = max(real, key=lambda k: len(real[k][0]))
    assert len(real[crowd][0]) == 709
    tiny = next(k for k, (r, _) in real.items() if odd(k) and len(r) < 60
                and (r[:, 2] <= 4).any() and _overlapping(r[:, :4]))
    tall = max(real, key=lambda k: (real[k][0][:, 1] + real[k][0][:, 3]).max())
    empty = next(k for k, (r, _) in real.items() if odd(k) and len(r) == 1 and not r.any())
    few = next(k for k, (r, _) in real.items() if odd(k) and 2 <= len(r) <= 4
               and r[:, 2].min() >= 40)
    return {"crowd": crowd, "tiny": tiny, "tall": tall, "empty": empty, "few": few}


@pytest.fixture(scope="module")
def generated(tmp_path_factory, wider_dir, chosen):
    root = tmp_path_factory.mktemp("wider_geometry")
    summary = wg.generate(root, source=wider_dir, seed=SEED, train_renders=RENDERS,
                          images=sorted(chosen.values()), progress=False)
    return root, summary


def _real_text_blocks(path):
    """{"event/name": [lines after the name]} of an official annotation file."""
    lines = path.read_text().splitlines()
    blocks, i = {}, 0
    while i < len(lines):
        count = int(lines[i + 1])
        blocks[lines[i].removesuffix(".jpg")] = lines[i + 1:i + 2 + max(count, 1)]
        i += 2 + max(count, 1)
    return blocks


def test_annotations_are_the_real_layouts(generated, chosen, real, wider_dir):
    root, summary = generated
    official = _real_text_blocks(wider_dir / "wider_face_val_bbx_gt.txt")
    seen = {}
    for split in ("train", "val"):
        written = _real_text_blocks(root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
        records = wider_face.parse_annotations(
            wider_face.find_annotation_file(root, split), drop_invalid=False)
        assert [r.path.removesuffix(".jpg") for r in records] == list(written)
        for record in records:
            key = record.path.removesuffix(".jpg")
            real_key = key.rsplit("_r", 1)[0] if split == "train" else key
            assert written[key] == official[real_key]  # the official lines, character for char
            rows = real[real_key][0]
            xywh = np.stack([record.boxes[:, 1], record.boxes[:, 0],
                             record.boxes[:, 3] - record.boxes[:, 1],
                             record.boxes[:, 2] - record.boxes[:, 0]], axis=1)
            np.testing.assert_array_equal(xywh, rows[:, :4])
            np.testing.assert_array_equal(record.attributes, rows[:, 4:])
            seen.setdefault(real_key, []).append(key)
    assert sorted(seen) == sorted(chosen.values())
    for key, names in seen.items():
        assert len(names) == (1 if int(key.split("--")[0]) % 2 else RENDERS)
    assert summary["train"]["images"] == RENDERS * summary["train"]["layouts"]


def test_canvas_is_1024_wide_and_holds_every_box(generated, chosen, real):
    root, _ = generated
    for key in chosen.values():
        split = "val" if int(key.split("--")[0]) % 2 else "train"
        name = key if split == "val" else f"{key}_r0"
        with Image.open(wider_face.images_dir(root, split) / f"{name}.jpg") as image:
            width, height = image.size
        boxes = real[key][0][:, :4]
        bottom = (boxes[:, 1] + boxes[:, 3]).max()
        assert width == 1024
        # The documented rule: the first of 683/768/1024/1366/1536 that holds every box.
        expected = min([h for h in (683, 768, 1024, 1366, 1536) if h >= bottom] or [bottom])
        assert height == expected


def test_faces_are_pasted_exactly_at_the_boxes(generated, chosen, real, wider_dir):
    root, _ = generated
    faces, photos = synthetic_faces.load_faces(), synthetic_faces.load_backgrounds()
    layouts = {layout.key: layout for layout in wg.load_source(wider_dir)[0]}
    for role in ("crowd", "tiny", "few"):
        key = chosen[role]
        split = wg.split_of(key.split("/")[0])
        background, image = render.render(real[key][0], seed=SEED, split=split,
                                          layout=layouts[key].index, render_index=0,
                                          faces=faces, photos=photos)
        name = key if split == "val" else f"{key}_r0"
        written = np.asarray(Image.open(wider_face.images_dir(root, split) / f"{name}.jpg"),
                             np.float32) / 255
        assert np.abs(written - image).mean() < 0.02  # the file is this render
        changed = np.abs(image - background).max(axis=-1) > 0  # (H, W)
        inside = np.zeros(changed.shape, bool)
        for x, y, w, h in real[key][0][:, :4]:
            inside[y:y + h, x:x + w] = True
            if w > 0 and h > 0:
                assert changed[y:y + h, x:x + w].any(), (key, x, y, w, h)
        assert not changed[~inside].any()


def test_deterministic_for_a_seed_and_renderable_alone(generated, chosen, real, wider_dir,
                                                      tmp_path):
    root, _ = generated
    keys = [chosen["tiny"], chosen["few"]]
    again = wg.generate(tmp_path / "a", source=wider_dir, seed=SEED, train_renders=RENDERS,
                        images=keys, progress=False)
    assert again["val"] == {"layouts": 2, "images": 2,
                            "faces": sum(len(real[k][0]) for k in keys)}
    other = wg.generate(tmp_path / "b", source=wider_dir, seed=SEED + 1, train_renders=RENDERS,
                        images=keys, progress=False)
    assert other == again
    for key in keys:
        rel = f"WIDER_val/images/{key}.jpg"
        # Rendered alone or among others, the same seed gives the same bytes; another seed not.
        assert (tmp_path / "a" / rel).read_bytes() == (root / rel).read_bytes()
        assert (tmp_path / "b" / rel).read_bytes() != (root / rel).read_bytes()
    text = "wider_face_split/wider_face_val_bbx_gt.txt"
    assert (tmp_path / "a" / text).read_bytes() == (tmp_path / "b" / text).read_bytes()
    marker = json.loads((tmp_path / "b" / wg.MARKER).read_text())
    assert marker["seed"] == SEED + 1 and marker["complete"] and marker["summary"] == other


def test_split_is_by_event_parity(real, wider_dir, generated):
    layouts, _ = wg.load_source(wider_dir)
    parts = wg.select(layouts)
    keys = {split: [layout.key for layout in parts[split]] for split in parts}
    assert not set(keys["train"]) & set(keys["val"])
    assert sorted(keys["train"] + keys["val"]) == sorted(real)
    for split, parity in (("train", 0), ("val", 1)):
        assert all(int(k.split("--")[0]) % 2 == parity for k in keys[split])
    root, _ = generated
    for split, parity in (("train", 0), ("val", 1)):
        events = {p.name for p in wider_face.images_dir(root, split).iterdir()}
        assert events and all(int(e.split("--")[0]) % 2 == parity for e in events)


def test_ground_truth_is_the_real_one_restricted_to_val(generated, chosen, real):
    root, _ = generated
    gt = root / "ground_truth"
    full = scipy.io.loadmat(gt / "wider_face_val.mat")
    val_keys = sorted(k for k in chosen.values() if int(k.split("--")[0]) % 2)
    written = []
    for s in SETTINGS:
        mat = scipy.io.loadmat(gt / f"wider_{s}_val.mat")
        for i, event in enumerate(mat["event_list"][:, 0]):
            for j, name in enumerate(mat["file_list"][i, 0][:, 0]):
                key = f"{event[0]}/{name[0]}"
                np.testing.assert_array_equal(mat["gt_list"][i, 0][j, 0].reshape(-1),
                                              real[key][1][s])
                np.testing.assert_array_equal(full["face_bbx_list"][i, 0][j, 0],
                                              real[key][0][:, :4])
                np.testing.assert_array_equal(full["occlusion_label_list"][i, 0][j, 0][:, 0],
                                              real[key][0][:, 8])
                written.append(key)
    assert sorted(written) == sorted(val_keys * len(SETTINGS))
    # The project's evaluation reads it: the counted faces as detections score AP 1.
    records = wider_face.parse_annotations(wider_face.find_annotation_file(root, "val"))
    preds = {r.path: (r.boxes, np.linspace(1.0, 0.5, len(r.boxes))) for r in records}
    aps = wider_eval.evaluate(preds, wider_eval.find_ground_truth_dir(root))
    assert aps == dict.fromkeys(SETTINGS, 1.0)


@functools.cache
def _faces_and_photos():
    return synthetic_faces.load_faces(), synthetic_faces.load_backgrounds()


def _paint(attributes, seed=11, size=(96, 80)):
    """One face painted on a flat grey canvas with a fixed generator; returns canvas, box."""
    h, w = size
    canvas = np.full((h + 40, w + 40, 3), 0.5, np.float32)
    box = (20, 20, w, h)
    render.paint_face(canvas, np.random.default_rng(seed), box, attributes, *_faces_and_photos())
    return canvas, box


def _laplacian_energy(image):
    grey = image.mean(axis=-1).astype(np.float64)
    lap = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1]
           - grey[1:-1, :-2] - grey[1:-1, 2:])
    return float((lap ** 2).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blur_level_lowers_high_frequencies(seed):
    energy = []
    for blur in (0, 1, 2):
        canvas, (x, y, w, h) = _paint([blur, 0, 0, 0, 0, 0], seed=seed)
        energy.append(_laplacian_energy(canvas[y:y + h, x:x + w]))
    assert energy[0] > 1.5 * energy[1] > 0 and energy[1] > 1.5 * energy[2] > 0


@pytest.mark.parametrize("level, low, high", [(1, 0.10, 0.30), (2, 0.35, 0.70)])
def test_occluder_covers_one_side_by_the_level(level, low, high):
    for seed in range(6):
        clear, (x, y, w, h) = _paint([0, 0, 0, 0, 0, 0], seed=seed)
        occluded, _ = _paint([0, 0, 0, 0, level, 0], seed=seed)
        diff = np.abs(occluded - clear).max(axis=-1) > 0  # (H, W)
        ys, xs = np.nonzero(diff)
        assert ys.min() >= y and ys.max() < y + h and xs.min() >= x and xs.max() < x + w
        rows, cols = ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()
        # A strip: the full box one way, a level-sized fraction from one side the other way.
        if rows == h and cols < w:
            fraction, at_side = cols / w, xs.min() == x or xs.max() == x + w - 1
        else:
            assert cols == w
            fraction, at_side = rows / h, ys.min() == y or ys.max() == y + h - 1
        assert at_side and low - 0.02 <= fraction <= high + 0.02
        assert diff[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean() > 0.9


def test_extreme_illumination_changes_brightness():
    ratios = []
    for seed in range(12):
        normal, (x, y, w, h) = _paint([0, 0, 0, 0, 0, 0], seed=seed)
        extreme, _ = _paint([0, 0, 1, 0, 0, 0], seed=seed)
        centre = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
        ratios.append(extreme[centre].mean() / normal[centre].mean())
    ratios = np.array(ratios)
    assert ((ratios < 0.5) | (ratios > 1.2)).all()
    assert (ratios < 0.5).any() and (ratios > 1.2).any()


def test_refuses_a_foreign_non_empty_folder(wider_dir, chosen, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="HANDGRAD_WIDER_GEOMETRY.json"):
        wg.generate(foreign, source=wider_dir, images=[chosen["few"]], progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    synthetic = tmp_path / "synthetic"
    synthetic_faces.generate(synthetic, num_train=1, num_val=1, seed=0, image_size=64)
    with pytest.raises(FileExistsError):
        wg.generate(synthetic, source=wider_dir, images=[chosen["few"]], progress=False)
    # A previous generated set is replaced, stale images included.
    ours = tmp_path / "ours"
    wg.generate(ours, source=wider_dir, images=[chosen["few"], chosen["tiny"]], progress=False)
    wg.generate(ours, source=wider_dir, images=[chosen["few"]], progress=False)
    images = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*.jpg"))
    assert images == [f"WIDER_val/images/{chosen['few']}.jpg"]


def test_bad_arguments_are_named(wider_dir, tmp_path):
    with pytest.raises(ValueError, match="images: 1 keys.*'0--Parade/nope'"):
        wg.generate(tmp_path / "a", source=wider_dir, images=["0--Parade/nope"], progress=False)
    with pytest.raises(ValueError, match="train_renders=-1"):
        wg.generate(tmp_path / "b", source=wider_dir, train_renders=-1, progress=False)
    with pytest.raises(FileNotFoundError, match="source="):
        wg.generate(tmp_path / "c", source=tmp_path, progress=False)

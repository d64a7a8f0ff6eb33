"""A synthetic, WIDER-format face data set built from real faces and real photos in scikit-image.

No WIDER FACE images can be downloaded here, so `generate` writes a stand-in with the same folder
layout, the same annotation text format and the same evaluation ground truth (.mat) as the real
set; the face detector trains and is evaluated on it through exactly the WIDER code paths.

Content (all shipped inside the scikit-image wheel, read from its data folder, never fetched):
- faces: the 100 real 25x25 grey face crops of `skimage.data.lfw_subset()` (LFW), colourised
  with a random skin tone, mirrored at random, lit brighter or darker, scaled to 10..250 px wide
  (log-uniform, height 1.1..1.3 x width as WIDER boxes are taller than wide) and pasted with a
  soft elliptical mask, so the box corners show background as in real face boxes;
- backgrounds: random crops of the photos in `BACKGROUNDS` (one WIDER "event" per photo),
  colour-jittered; grey photos are used as grey RGB images;
- clutter: 0..`max_faces` faces per image (8 % of images have none; otherwise geometric, mean
  about 6); faces never overlap one another; 30 % of faces get a solid occluder strip over one
  side and 40 % are Gaussian-blurred.

Attributes follow the WIDER annotation meanings: blur 0/1/2 (clear / normal blur, sigma =
2.5 % of face width, >= 0.6 px / heavy blur, sigma = 7 % of width, >= 1.5 px), occlusion 0/1/2
(none / strip covering <= 30 % of the box / more), illumination 1 when the brightness factor
is outside [0.6, 1.4], expression, invalid and pose 0.

Difficulty settings (`wider_{easy,medium,hard}_val.mat` `gt_list`), a stand-in for WIDER's
detection-rate based split, nested like the real ones:
- easy: box height >= 50 px, no occlusion, blur < 2;
- medium: box height >= 25 px, occlusion < 2;
- hard: every face.

Deterministic for a seed: image i of a split draws from `image_rng(seed, split, i)`.

`generate` writes only into an absent or empty folder or a synthetic set it wrote before
(`pipelines.generated`): the set carries `HANDGRAD_SYNTHETIC.json` (the generation options, and
`complete` once every file is written); a complete set from before the marker existed is
recognised by its layout (`is_unmarked_set`). Any other folder is refused (FileExistsError).
"""

import os
from pathlib import Path

import numpy as np
import scipy.io
import skimage
from PIL import Image, ImageFilter

from handgrad.pipelines.generators import markers

BACKGROUNDS = (
    "coffee.png", "rocket.jpg", "brick.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "motorcycle_left.png", "chelsea.png", "coins.png", "moon.png",
)
SKIN_TONES = np.array(
    [[1.00, 0.82, 0.68], [0.93, 0.72, 0.56], [0.80, 0.58, 0.42], [0.62, 0.42, 0.29],
     [0.45, 0.30, 0.20], [0.98, 0.78, 0.66]], np.float32)
_SPLIT_IDS = {"train": 0, "val": 1}
MARKER = "HANDGRAD_SYNTHETIC.json"
KIND = "synthetic face"
_GENERATOR = "handgrad.pipelines.synthetic_faces"  # the name its markers carry on disk
_OUTPUTS = ("WIDER_train", "WIDER_val", "wider_face_split", "ground_truth")


def image_rng(seed, split, index):
    """The random generator of image `index` of `split` ("train" / "val") for `seed`."""
    return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def _data_dir():
    return Path(os.path.dirname(skimage.__file__)) / "data"


def load_faces():
    """The 100 LFW face crops, (100, 25, 25) float32 in [0, 1] (the other 100 are non-faces)."""
    faces = np.load(_data_dir() / "lfw_subset.npy")[:100].astype(np.float32)
    return faces / 255.0 if faces.max() > 1.0 else faces


def load_backgrounds():
    """The `BACKGROUNDS` photos as uint8 (H, W, 3) arrays, in `BACKGROUNDS` order."""
    images = []
    for name in BACKGROUNDS:
        image = np.asarray(Image.open(_data_dir() / name).convert("RGB"))
        images.append(image)
    return images


def event_name(index):
    """WIDER-style event folder name for background `index`, e.g. `0--Coffee`."""
    stem = BACKGROUNDS[index].split(".")[0].replace("_", "")
    return f"{index}--{stem.capitalize()}"


def _background(rng, photo, height, width):
    """A random crop of `photo`, resized to (height, width), colour-jittered; float32 [0, 1]."""
    ph, pw = photo.shape[:2]
    frac = rng.uniform(0.4, 1.0)
    ch = max(8, int(ph * frac))
    cw = max(8, min(pw, int(ch * width / height)))
    y0 = rng.integers(0, ph - ch + 1)
    x0 = rng.integers(0, pw - cw + 1)
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.BILINEAR)
    image = np.asarray(crop, np.float32) / 255.0  # (H, W, 3)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    gains = rng.uniform(0.7, 1.3) * rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    return np.clip(image * gains, 0.0, 1.0)


def _face_patch(rng, face, w, h):
    """A colourised face resized to (h, w, 3) plus its attributes (blur, illumination)."""
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, size=3)
    if rng.random() < 0.5:
        face = face[:, ::-1]
    light = rng.uniform(0.45, 1.55)
    rgb = np.clip(tone * (0.3 + 0.9 * face[..., None]) * light, 0.0, 1.0)  # (25, 25, 3)
    patch = Image.fromarray((rgb * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    u = rng.random()
    blur = 0 if u < 0.6 else (1 if u < 0.85 else 2)
    if blur:
        sigma = max(0.6, 0.025 * w) if blur == 1 else max(1.5, 0.07 * w)
        patch = patch.filter(ImageFilter.GaussianBlur(sigma))
    illumination = int(light < 0.6 or light > 1.4)
    return np.asarray(patch, np.float32) / 255.0, blur, illumination


def _ellipse_alpha(h, w):
    """(h, w, 1) soft elliptical mask: 1 inside, 0 at the box corners, a 15 % feathered rim."""
    yy = (np.arange(h, dtype=np.float32) + 0.5) / h * 2.0 - 1.0
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w * 2.0 - 1.0
    r = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2) / 1.15
    return np.clip((1.0 - r) / 0.15, 0.0, 1.0)[..., None]


def _occlude(rng, patch):
    """Covers one side of `patch` (h, w, 3) with a solid strip; returns the occlusion label."""
    h, w = patch.shape[:2]
    frac = rng.uniform(0.1, 0.6)
    side = rng.integers(4)
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    if side < 2:  # top or bottom strip
        n = max(1, int(round(frac * h)))
        rows = slice(0, n) if side == 0 else slice(h - n, h)
        patch[rows] = colour
        covered = n / h
    else:  # left or right strip
        n = max(1, int(round(frac * w)))
        cols = slice(0, n) if side == 2 else slice(w - n, w)
        patch[:, cols] = colour
        covered = n / w
    return 1 if covered <= 0.3 else 2


def _overlaps(box, boxes):
    x, y, w, h = box
    return any(x < bx + bw and bx < x + w and y < by + bh and by < y + h
               for bx, by, bw, bh in boxes)


def compose_image(rng, faces, backgrounds, image_size, max_faces=30):
    """Draws one synthetic image.

    Returns:
        event: background index (the WIDER event of the image).
        background: (H, W, 3) float32, the image before any face was pasted.
        image: (H, W, 3) float32 in [0, 1], with the faces.
        rows: (N, 10) int32 WIDER annotation rows `x y w h blur expression illumination
            invalid occlusion pose`, one per pasted face.
    """
    event = int(rng.integers(len(backgrounds)))
    width = image_size
    height = int(round(image_size * rng.uniform(0.6, 1.0)))
    if rng.random() < 0.25:
        height, width = width, height
    background = _background(rng, backgrounds[event], height, width)
    image = background.copy()
    count = 0 if rng.random() < 0.08 else min(max_faces, int(rng.geometric(1 / 6)))
    rows, placed = [], []
    for _ in range(count):
        for _attempt in range(20):
            w = int(round(np.exp(rng.uniform(np.log(10), np.log(250)))))
            h = int(round(w * rng.uniform(1.1, 1.3)))
            if w > width or h > height:
                continue
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            if not _overlaps((x, y, w, h), placed):
                break
        else:
            continue
        patch, blur, illumination = _face_patch(rng, faces[rng.integers(len(faces))], w, h)
        occlusion = _occlude(rng, patch) if rng.random() < 0.3 else 0
        alpha = _ellipse_alpha(h, w)
        region = image[y:y + h, x:x + w]
        image[y:y + h, x:x + w] = alpha * patch + (1.0 - alpha) * region
        placed.append((x, y, w, h))
        rows.append([x, y, w, h, blur, 0, illumination, 0, occlusion, 0])
    return event, background, image, np.asarray(rows, np.int32).reshape(-1, 10)


def difficulty_masks(rows):
    """(easy, medium, hard) boolean masks over annotation rows (see module docstring)."""
    h, blur, occlusion = rows[:, 3], rows[:, 4], rows[:, 8]
    easy = (h >= 50) & (occlusion == 0) & (blur < 2)
    medium = (h >= 25) & (occlusion < 2)
    hard = np.ones(len(rows), bool)
    return easy, medium, hard


def _annotation_text(entries):
    """The official `wider_face_*_bbx_gt.txt` text for `[(path, rows), ...]`."""
    out = []
    for path, rows in entries:
        out.append(path)
        out.append(str(len(rows)))
        for row in rows if len(rows) else np.zeros((1, 10), np.int32):
            out.append(" ".join(str(int(v)) for v in row) + " ")
    return "\n".join(out) + "\n"


def _cell(items):
    """A MATLAB cell column (n, 1) from a list of arrays."""
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def write_ground_truth(gt_dir, entries):
    """Writes `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat` in the official layout.

    Same variables as the WIDER eval tools' files: cells `event_list`, `file_list`,
    `face_bbx_list` (int32 x y w h), the six `*_label_list` (uint8) and, in the three setting
    files, `gt_list` (1-based indices of the faces that count). A 0-face image gets one all-zero
    box, as in the official files.
    """
    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    events = sorted({path.split("/")[0] for path, _ in entries})
    by_event = {e: [(p, r) for p, r in entries if p.split("/")[0] == e] for e in events}
    labels = ["blur", "expression", "illumination", "invalid", "occlusion", "pose"]
    base = {"event_list": _cell([np.array([e]) for e in events])}
    base["file_list"] = _cell([
        _cell([np.array([Path(p).stem]) for p, _ in by_event[e]]) for e in events])
    padded = {e: [r if len(r) else np.zeros((1, 10), np.int32) for _, r in by_event[e]]
              for e in events}
    base["face_bbx_list"] = _cell([
        _cell([r[:, :4].astype(np.int32) for r in padded[e]]) for e in events])
    for k, name in enumerate(labels):
        base[f"{name}_label_list"] = _cell([
            _cell([r[:, 4 + k:5 + k].astype(np.uint8) for r in padded[e]]) for e in events])
    scipy.io.savemat(gt_dir / "wider_face_val.mat", base)
    for s, setting in enumerate(("easy", "medium", "hard")):
        gt = []
        for e in events:
            lists = []
            for _, rows in by_event[e]:
                keep = np.flatnonzero(difficulty_masks(rows)[s]) + 1 if len(rows) else []
                lists.append(np.asarray(keep, np.uint16 if len(rows) > 255 else np.uint8)
                             .reshape(-1, 1))
            gt.append(_cell(lists))
        scipy.io.savemat(gt_dir / f"wider_{setting}_val.mat", dict(base, gt_list=_cell(gt)))


def generation_options(*, num_train, num_val, seed, image_size=512, max_faces=30, quality=90):
    """The options `generate` records in the marker (its arguments, defaults filled in)."""
    return {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed),
            "image_size": int(image_size), "max_faces": int(max_faces), "quality": int(quality)}


def read_marker(out_dir):
    """The `HANDGRAD_SYNTHETIC.json` record of a set in `out_dir`, or None."""
    return markers.read_marker(out_dir, MARKER, _GENERATOR)


def is_ready(out_dir, options):
    """Whether `out_dir` holds a finished synthetic set of `options` (`generation_options`), also
    one written before the marker existed; ValueError for a finished set of other options."""
    return markers.is_ready(out_dir, MARKER, _GENERATOR, options, KIND,
                            recognise=is_unmarked_set)


def is_unmarked_set(out_dir):
    """Whether `out_dir` holds a complete set written before the marker existed: only this
    generator's outputs, both annotation files, the validation ground truth, and image folders
    named after `BACKGROUNDS` events only."""
    out_dir = Path(out_dir)
    names = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    split = out_dir / "wider_face_split"
    events = {event_name(i) for i in range(len(BACKGROUNDS))}
    folders = [p.name for s in ("train", "val")
               for p in (out_dir / f"WIDER_{s}" / "images").glob("*")]
    return bool(names and names <= set(_OUTPUTS) and folders and set(folders) <= events and
                all((split / f"wider_face_{s}_bbx_gt.txt").is_file() for s in ("train", "val"))
                and (out_dir / "ground_truth" / "wider_face_val.mat").is_file())


def generate(out_dir, *, num_train, num_val, seed, image_size=512, max_faces=30, quality=90):
    """Writes a WIDER-format synthetic face data set to `out_dir`.

    Writes `WIDER_{train,val}/images/<event>/<name>.jpg`,
    `wider_face_split/wider_face_{train,val}_bbx_gt.txt` and, for val, `ground_truth/
    wider_face_val.mat` + `wider_{easy,medium,hard}_val.mat` (read by `zoo.face.wider_eval`).

    Args:
        out_dir: output folder (created): absent, empty, or a synthetic set written before
            (replaced); any other folder raises FileExistsError before anything is written.
        num_train, num_val: images per split (>= 1 each).
        seed: integer; the same seed writes the same files.
        image_size: the longer image side in pixels (the shorter is 0.6..1.0 of it).
        max_faces: most faces per image.
        quality: JPEG quality, 1..100.

    Returns:
        `{"train": {"images": n, "faces": m}, "val": {...}}`.

    Raises:
        ValueError naming the option when one is not an integer in its range, before the
        folder is touched.
    """
    for name, value, low, high in (("num_train", num_train, 1, None),
                                   ("num_val", num_val, 1, None), ("seed", seed, 0, None),
                                   ("image_size", image_size, 32, None),
                                   ("max_faces", max_faces, 1, None),
                                   ("quality", quality, 1, 100)):
        markers.check_integer(name, value, low, high)
    options = generation_options(num_train=num_train, num_val=num_val, seed=seed,
                                 image_size=image_size, max_faces=max_faces, quality=quality)
    out_dir = markers.claim(out_dir, MARKER, _GENERATOR, options, _OUTPUTS,
                              recognise=is_unmarked_set)
    faces, backgrounds = load_faces(), load_backgrounds()
    summary = {}
    for split, num in (("train", num_train), ("val", num_val)):
        entries = []
        for i in range(num):
            rng = image_rng(seed, split, i)
            event, _, image, rows = compose_image(rng, faces, backgrounds, image_size, max_faces)
            name = event_name(event)
            rel = f"{name}/{name.split('--')[1].lower()}_{split}_{i:05d}.jpg"
            dest = out_dir / f"WIDER_{split}" / "images" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(dest, quality=quality)
            entries.append((rel, rows))
        split_dir = out_dir / "wider_face_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text(_annotation_text(entries))
        if split == "val":
            write_ground_truth(out_dir / "ground_truth", entries)
        summary[split] = {"images": num, "faces": int(sum(len(r) for _, r in entries))}
    markers.write_marker(out_dir, MARKER, _GENERATOR, options, complete=True, summary=summary)
    return summary

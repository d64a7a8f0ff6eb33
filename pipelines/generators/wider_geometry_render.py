"""Renders one WIDER layout: real LFW faces pasted at every ground-truth box of a real WIDER image.

Used by `pipelines.wider_geometry` (which reads the layouts and writes the data set). Every box
`x y w h` gets one face whose appearance follows that box's own WIDER attributes:

- size and place: the face crop (25x25 grey LFW, colourised with a random skin tone, mirrored at
  random) is resized to exactly `w x h` and blended into the box with the soft elliptical mask of
  `pipelines.synthetic_faces` (box corners show what lies below); faces are pasted in annotation
  order, so a later face covers an earlier one where boxes overlap; boxes with `w <= 0` or
  `h <= 0` paste nothing; parts of a box outside the canvas are clipped.
- pose (0 typical / 1 atypical): atypical faces keep only one side's 16 of 25 columns (a turned
  head shows one cheek) and are rotated by 15..35 degrees towards that side.
- illumination (0 normal / 1 extreme): brightness factor 0.7..1.3, or for extreme light, at
  even odds, 0.2..0.45 (dark) or 1.6..2.2 (over-exposed, clipped).
- occlusion (0 none / 1 partial / 2 heavy): an opaque strip of another photo's texture, from a
  random side of the box, covering 10..30 % (partial) or 35..70 % (heavy) of the box's rows or
  columns (WIDER: partial = 1..30 % of the face, heavy = more); at least one pixel row/column,
  so very small boxes round up.
- blur (0 clear / 1 normal / 2 heavy): a Gaussian blur of the whole box after pasting and
  occluding, sigma = max(0.6, 2.5 % of w) / max(1.5, 7 % of w) px (the synthetic set's rule).
- expression and invalid do not change the rendering (LFW crops cannot show exaggerated
  expressions; invalid faces are still faces in the real images).

Background: a random crop of one of the `synthetic_faces.BACKGROUNDS` photos, resized to the
canvas. Canvas: 1024 px wide (WIDER's width) and the smallest typical WIDER height of
`HEIGHTS` (3:2 landscape up to 2:3 portrait) that holds every box, else the boxes' bottom edge.

Randomness: part `k` of image (seed, split, layout, render) draws from
`part_rng(seed, split, layout, render, k)`: part 0 is the background, part 1 + i face i; each face
draws the same numbers whatever its attributes up to the occluder, so re-rendering one face with
other attributes changes only what those attributes change.
"""

import numpy as np
from PIL import Image, ImageFilter

from handgrad.pipelines.generators.synthetic_faces import SKIN_TONES, _background, _ellipse_alpha

WIDTH = 1024
HEIGHTS = (683, 768, 1024, 1366, 1536)  # 1024 x {3:2, 4:3, 1:1, 3:4, 2:3}
OCCLUDED_FRACTION = {1: (0.10, 0.30), 2: (0.35, 0.70)}
SPLIT_IDS = {"train": 0, "val": 1}
_TAG = 7  # keeps these streams apart from `synthetic_faces.image_rng` for the same seed


def part_rng(seed, split, layout, render, part):
    """The generator of `part` (0 background, 1 + i face i) of one rendered image."""
    return np.random.default_rng([_TAG, seed, SPLIT_IDS[split], layout, render, part])


def canvas_size(boxes):
    """(height, width) of the canvas for (M, 4) int `x y w h` boxes (see the module docstring)."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    real = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    bottom = int((boxes[real, 1] + boxes[real, 3]).max()) if real.any() else 0
    height = next((h for h in HEIGHTS if h >= bottom), bottom)
    return height, WIDTH


def sigma_for(blur, w):
    """Gaussian sigma in pixels for WIDER blur level `blur` on a box `w` px wide (0: none)."""
    if blur <= 0:
        return 0.0
    return max(0.6, 0.025 * w) if blur == 1 else max(1.5, 0.07 * w)


def _light(rng, illumination):
    """Brightness factor; always draws two numbers so later draws do not depend on the level."""
    u, dark = rng.random(), rng.random() < 0.5
    if not illumination:
        return 0.7 + 0.6 * u
    return 0.2 + 0.25 * u if dark else 1.6 + 0.6 * u


def _turned(face, left, angle):
    """An atypical-pose face: one side's 16 columns of the 25, rotated towards that side."""
    half = face[:, :16] if left else face[:, -16:]
    grey = Image.fromarray(np.round(half * 255).astype(np.uint8))
    fill = int(np.median(grey))
    turned = grey.rotate(angle if left else -angle, Image.BILINEAR, fillcolor=fill)
    return np.asarray(turned, np.float32) / 255.0


def face_patch(rng, faces, w, h, illumination, pose):
    """(h, w, 3) float32 colourised LFW face for a box of w x h px."""
    face = faces[rng.integers(len(faces))]  # (25, 25)
    if rng.random() < 0.5:
        face = face[:, ::-1]
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, size=3)
    light = _light(rng, illumination)
    left, angle = rng.random() < 0.5, rng.uniform(15.0, 35.0)
    if pose:
        face = _turned(face, left, angle)  # (25, 16)
    rgb = np.clip(tone * (0.3 + 0.9 * face[..., None]) * light, 0.0, 1.0)  # (25, cols, 3)
    patch = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(patch, np.float32) / 255.0


def _occluder(rng, photos, occlusion, h, w):
    """(rows, cols, texture): a strip from one side of an h x w box and its (n, m, 3) pixels."""
    frac = rng.uniform(*OCCLUDED_FRACTION[occlusion])
    side = int(rng.integers(4))
    photo = photos[rng.integers(len(photos))]
    if side < 2:  # top or bottom rows
        n = min(h, max(1, round(frac * h)))
        rows, cols = (slice(0, n) if side == 0 else slice(h - n, h)), slice(0, w)
        size = (w, n)
    else:  # left or right columns
        n = min(w, max(1, round(frac * w)))
        rows, cols = slice(0, h), (slice(0, n) if side == 2 else slice(w - n, w))
        size = (n, h)
    ph, pw = photo.shape[:2]
    ch, cw = min(ph, max(size[1], 8)), min(pw, max(size[0], 8))
    y0, x0 = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize(size, Image.BILINEAR)
    texture = np.asarray(crop, np.float32) / 255.0 * rng.uniform(0.5, 1.2)
    return rows, cols, np.clip(texture, 0.0, 1.0)


def paint_face(image, rng, box, attributes, faces, photos):
    """Pastes one face into `image` (H, W, 3) float32, in place, at `box` = x y w h.

    `attributes` are the box's six WIDER flags `blur expression illumination invalid occlusion
    pose`; see the module docstring for what each does.
    """
    x, y, w, h = (int(v) for v in box)
    blur, _, illumination, _, occlusion, pose = (int(v) for v in attributes)
    if w <= 0 or h <= 0:
        return
    patch = face_patch(rng, faces, w, h, illumination, pose)  # (h, w, 3)
    alpha = _ellipse_alpha(h, w)  # (h, w, 1)
    if occlusion > 0:
        rows, cols, texture = _occluder(rng, photos, min(occlusion, 2), h, w)
        patch[rows, cols] = texture
        alpha[rows, cols] = 1.0
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, image.shape[0]), min(x + w, image.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    inner = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    region = image[y0:y1, x0:x1]
    blended = alpha[inner] * patch[inner] + (1.0 - alpha[inner]) * region
    sigma = sigma_for(blur, w)
    if sigma:
        pil = Image.fromarray(np.round(blended * 255).astype(np.uint8))
        blended = np.asarray(pil.filter(ImageFilter.GaussianBlur(sigma)), np.float32) / 255.0
    image[y0:y1, x0:x1] = blended


def render(rows, *, seed, split, layout, render_index, faces, photos):
    """Renders one layout.

    Args:
        rows: (M, 10) int annotation rows `x y w h blur expression illumination invalid
            occlusion pose`, pasted in this order.
        seed, split, layout, render_index: name the image's random streams (`part_rng`).
        faces: (F, 25, 25) float32 LFW crops (`synthetic_faces.load_faces`).
        photos: background photos, uint8 (H, W, 3) (`synthetic_faces.load_backgrounds`).

    Returns:
        (background, image): (H, W, 3) float32 in [0, 1], before and after pasting the faces.
    """
    rows = np.asarray(rows).reshape(-1, 10)
    height, width = canvas_size(rows[:, :4])
    rng = part_rng(seed, split, layout, render_index, 0)
    background = _background(rng, photos[rng.integers(len(photos))], height, width)
    image = background.copy()
    for i, row in enumerate(rows):
        rng = part_rng(seed, split, layout, render_index, 1 + i)
        paint_face(image, rng, row[:4], row[4:], faces, photos)
    return background, image


def to_uint8(image):
    """(H, W, 3) float32 [0, 1] -> uint8, rounding to nearest."""
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)

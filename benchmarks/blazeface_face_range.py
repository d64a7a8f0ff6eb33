"""Which face sizes MediaPipe's BlazeFace finds: real faces shown at a range of sizes relative to
the image, through the same letterbox the export uses (`detect_faces`, MediaPipe's thresholds).

    python benchmarks/blazeface_face_range.py [--variants full_range,short_range]

For each photo (skimage astronaut, matplotlib's Grace Hopper, skimage camera), the face is
located once at full size by the full-range model (its box height h defines "face size"), then a
square of side h / f around it is cut (zero beyond the photo) for each fraction f; the face is
found when a detection overlaps its expected box with IoU > 0.5. One JSON line per variant and
photo: {"bench": "blazeface_face_range", "variant", "photo", "found": [f ...], "missed": [f ...],
"smallest_fraction", "smallest_input_px" (= f x S, the face height the network saw)}.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import skimage.data  # noqa: E402

from handgrad.zoo.face.blazeface import detect_faces, get_variant, import_blazeface  # noqa: E402

FRACTIONS = (0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2,
             0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def photos():
    grace = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {"astronaut": skimage.data.astronaut(),
            "grace_hopper": np.asarray(PIL.Image.open(grace).convert("RGB")),
            "camera": np.repeat(skimage.data.camera()[..., None], 3, axis=-1)}


def iou(a, b):
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.maximum(hi - lo, 0))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def crop_around(image, box, fraction):
    """A square of side h / fraction centred on `box` (zeros beyond the image), and the box in
    its pixels."""
    h = box[2] - box[0]
    side = int(round(h / fraction))
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    out = np.zeros((side, side, 3), np.uint8)
    ys, xs = slice(max(top, 0), min(top + side, image.shape[0])), \
        slice(max(left, 0), min(left + side, image.shape[1]))
    out[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left] = image[ys, xs]
    return out, box - np.array([top, left, top, left], np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="full_range,short_range")
    args = parser.parse_args()
    models = {v: import_blazeface(v) for v in args.variants.split(",")}
    reference = models.get("full_range") or import_blazeface("full_range")
    for name, image in photos().items():
        face = detect_faces(reference, image[None], "full_range")["boxes"][0, 0].numpy()
        for variant, model in models.items():
            found, missed = [], []
            for f in FRACTIONS:
                crop, box = crop_around(image, face, f)
                out = detect_faces(model, crop[None], variant)
                n = int(out["num_detections"][0])
                hit = any(iou(b, box) > 0.5 for b in out["boxes"][0, :n].numpy())
                (found if hit else missed).append(f)
            smallest = min(found) if found else None
            print(json.dumps({
                "bench": "blazeface_face_range", "variant": variant, "photo": name,
                "face_box": [round(float(v), 1) for v in face], "found": found,
                "missed": missed, "smallest_fraction": smallest,
                "smallest_input_px": None if smallest is None else round(
                    smallest * get_variant(variant).input_size, 1)}), flush=True)


if __name__ == "__main__":
    main()

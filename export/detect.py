"""`handgrad-detect`: run an exported face-detector SavedModel on images, write WIDER result files
and annotated PNGs. Needs only TensorFlow to run the model (the SavedModel holds the whole graph).

    handgrad-detect --saved_model=exports/face --images=photos/ --output_dir=detections/

For every image `<folder>/<name>.<ext>` (JPEG, PNG, BMP or GIF; a folder is searched recursively):
    output_dir/<folder>/<name>.txt   WIDER result format: name, count, `x y w h score` lines
    output_dir/<folder>/<name>.png   the image with its boxes and scores drawn
Images that cannot be decoded are reported and skipped; the count is printed at the end.
"""

import logging
from pathlib import Path

import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw
from tqdm import tqdm

from handgrad.pipelines.wider_format import image_key, write_results

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def list_images(path):
    """A file, or every image file below a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--images: {path} is neither an image file nor a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--images: no {sorted(IMAGE_SUFFIXES)} files below {path}")
    return files


def draw(image_path, boxes, scores, png_path):
    """Saves the image with `[ymin, xmin, ymax, xmax]` pixel boxes and their scores drawn."""
    image = Image.open(image_path).convert("RGB")
    canvas = ImageDraw.Draw(image)
    for (y0, x0, y1, x1), score in zip(boxes, scores):
        canvas.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=2)
        canvas.text((x0 + 2, max(y0 - 12, 0)), f"{score:.2f}", fill=(0, 255, 0))
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(png_path)


def detect_images(saved_model, images, output_dir, draw_boxes=True):
    """Runs the SavedModel's `image_bytes` signature on each image; returns (done, skipped)."""
    detect = tf.saved_model.load(str(saved_model)).signatures["image_bytes"]
    output_dir = Path(output_dir)
    done, skipped = 0, 0
    for path in tqdm(list_images(images), desc="detect", unit="img"):
        try:
            out = detect(image_bytes=tf.constant([path.read_bytes()]))
        except tf.errors.InvalidArgumentError as e:
            logging.warning("skipped %s: %s", path, e.message.splitlines()[0])
            skipped += 1
            continue
        n = int(out["num_detections"][0])
        boxes, scores = out["boxes"][0, :n].numpy(), out["scores"][0, :n].numpy()
        write_results(output_dir, path, boxes, scores)
        if draw_boxes:
            draw(path, boxes, scores, output_dir / f"{image_key(path)}.png")
        done += 1
    return done, skipped


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("saved_model", None, "Exported detector (handgrad-export).", required=True)
    flags.DEFINE_string("images", None, "An image file or a folder of images.", required=True)
    flags.DEFINE_string("output_dir", None, "Where to write results and PNGs.", required=True)
    flags.DEFINE_bool("draw", True, "Write annotated PNGs.")


def main(argv):
    del argv
    done, skipped = detect_images(FLAGS.saved_model, FLAGS.images, FLAGS.output_dir, FLAGS.draw)
    print(f"images={done} skipped={skipped} output_dir={FLAGS.output_dir}")


def run():
    _define_flags()
    app.run(main)


__all__ = ["detect_images", "draw", "list_images"]

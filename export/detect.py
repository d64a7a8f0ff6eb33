"""`handgrad-detect`: run an exported face-detector SavedModel on images, write WIDER result files
and annotated PNGs. Needs only TensorFlow to run the model (the SavedModel holds the whole graph).

    handgrad-detect --saved_model=exports/face --images=photos/ --output_dir=detections/

Every image below `--images` (JPEG, PNG, BMP or GIF; a folder is searched recursively) gets its
own results, at its path relative to `--images` with its extension kept, so `a.jpg` and `a.png`,
or `2019/party/img1.jpg` and `2020/party/img1.jpg`, never share a result:
    output_dir/<relative path>.txt   WIDER result format: name, count, `x y w h score` lines
    output_dir/<relative path>.png   the image with its boxes and scores drawn (`--draw`), and
                                     the keypoints of exports that return them (BlazeFace: eyes,
                                     nose tip, mouth, ear tragions) as red dots
e.g. `photos/party/img1.jpg` -> `detections/party/img1.jpg.txt` and `.../img1.jpg.png`.
An output_dir that is the `--images` folder or lies inside it is refused before anything is
written: results would land among the inputs (and be read as inputs by the next run). Images
that cannot be decoded are reported and skipped; the last line, `images=N skipped=M
output_dir=...`, counts the result files written (N) and the skipped images (M). A PNG that cannot
be written is a warning; its result file is kept. Errors are one `handgrad-detect: error: ...`
line (exit status 1; `--verbose` shows the traceback).
"""

import logging
from pathlib import Path

import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw
from tqdm import tqdm

from handgrad.pipelines.boxes import yxyx_to_xywh
from handgrad.zoo.run import cli

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
SIGNATURE = "image_bytes"


def list_images(path):
    """`(root, files)`: a file (root: its folder), or every image file below a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--images={path} is neither an image file nor a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--images={path}: no {sorted(IMAGE_SUFFIXES)} files below it")
    return path, files


def check_output_dir(images, output_dir):
    """Refuses an output_dir that is the --images folder or inside it (ValueError)."""
    images, out = Path(images).resolve(), Path(output_dir).resolve()
    if images.is_dir() and (out == images or images in out.parents):
        raise ValueError(
            f"--output_dir={output_dir} is inside --images={images}: the results would be "
            "written among the input images (and read as inputs by the next run). Choose an "
            "output_dir outside the images folder.")


def output_path(root, image, output_dir, suffix):
    """`output_dir/<image relative to root>` + suffix, extension kept: `a.jpg` -> `a.jpg.txt`."""
    relative = Path(image).relative_to(root)
    return Path(output_dir) / relative.parent / f"{relative.name}{suffix}"


def write_result_file(dest, name, boxes, scores):
    """One image's detections in the WIDER result format (see `pipelines.wider_format`)."""
    lines = [name, str(len(boxes))]
    for (x, y, w, h), s in zip(yxyx_to_xywh(boxes), scores, strict=True):
        lines.append(f"{x:.3f} {y:.3f} {w:.3f} {h:.3f} {s:.6f}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")


KEYPOINT_COLOUR = (255, 0, 0)


def draw(image_path, boxes, scores, png_path, keypoints=None):
    """Saves the image with `[ymin, xmin, ymax, xmax]` pixel boxes and their scores drawn, and
    `keypoints` `(D, K, 2)` `(y, x)` pixels (optional) as dots of radius 2."""
    image = Image.open(image_path).convert("RGB")
    canvas = ImageDraw.Draw(image)
    for (y0, x0, y1, x1), score in zip(boxes, scores):
        canvas.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=2)
        canvas.text((x0 + 2, max(y0 - 12, 0)), f"{score:.2f}", fill=(0, 255, 0))
    for y, x in [] if keypoints is None else keypoints.reshape(-1, 2):
        canvas.ellipse([x - 2, y - 2, x + 2, y + 2], fill=KEYPOINT_COLOUR)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(png_path, format="PNG")


def load_detector(saved_model):
    """The `image_bytes` signature of a face-detector export; errors name the folder."""
    saved_model = Path(saved_model)
    if not (saved_model / "saved_model.pb").is_file():
        raise FileNotFoundError(f"--saved_model={saved_model}: no saved_model.pb there; expected "
                                "a folder written by handgrad-export")
    signatures = tf.saved_model.load(str(saved_model)).signatures
    if SIGNATURE not in signatures:
        raise ValueError(
            f"--saved_model={saved_model} has no {SIGNATURE!r} signature (it has: "
            f"{', '.join(sorted(signatures)) or 'none'}): it is not a face-detector export. "
            "Export a face model_dir with handgrad-export.")
    return signatures[SIGNATURE]


def detect_images(saved_model, images, output_dir, draw_boxes=True):
    """Runs the SavedModel's `image_bytes` signature on each image; returns (done, skipped).

    `done` is the number of result files written (one per decoded image, see the module
    docstring for their names)."""
    check_output_dir(images, output_dir)
    root, files = list_images(images)
    detect = load_detector(saved_model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    done, skipped = 0, 0
    for path in tqdm(files, desc="detect", unit="img"):
        try:
            out = detect(image_bytes=tf.constant([path.read_bytes()]))
        except tf.errors.InvalidArgumentError as e:
            logging.warning("skipped %s: %s", path, e.message.splitlines()[0])
            skipped += 1
            continue
        n = int(out["num_detections"][0])
        boxes, scores = out["boxes"][0, :n].numpy(), out["scores"][0, :n].numpy()
        keypoints = out["keypoints"][0, :n].numpy() if "keypoints" in out else None
        write_result_file(output_path(root, path, output_dir, ".txt"), path.name, boxes, scores)
        done += 1
        if draw_boxes:
            png = output_path(root, path, output_dir, ".png")
            try:
                draw(path, boxes, scores, png, keypoints)
            except OSError as e:  # PIL's decode errors are OSErrors too
                logging.warning("could not write %s (%s); its result file is written", png, e)
    return done, skipped


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("saved_model", None, "Exported detector (handgrad-export).", required=True)
    flags.DEFINE_string("images", None, "An image file or a folder of images.", required=True)
    flags.DEFINE_string("output_dir", None, "Where to write results and PNGs (not inside "
                        "--images).", required=True)
    flags.DEFINE_bool("draw", True, "Write annotated PNGs.")
    cli.define_verbose()


def main(argv):
    with cli.one_line_errors("handgrad-detect", FLAGS.verbose):
        cli.no_extra_arguments(argv)
        done, skipped = detect_images(FLAGS.saved_model, FLAGS.images, FLAGS.output_dir,
                                      FLAGS.draw)
        print(f"images={done} skipped={skipped} output_dir={FLAGS.output_dir}")


def run():
    _define_flags()
    app.run(main)


__all__ = ["check_output_dir", "detect_images", "draw", "list_images", "output_path"]


if __name__ == "__main__":
    run()

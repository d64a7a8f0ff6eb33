"""`handgrad-detect`: run an exported face-detector SavedModel on images, write WIDER result files
and annotated PNGs. Needs only TensorFlow to run the model (the SavedModel holds the whole graph).

    handgrad-detect --saved_model=exports/face --images=photos/ --output_dir=detections/
        (exports/face: the folder handgrad-export writes versions into; its highest version is
        used, as TF Serving does, or name one: --saved_model=exports/face/2)

Which images: `--images` is one image file, or a folder searched recursively (linked folders too,
each real folder once) for every file with
an extension of a format Pillow decodes (JPEG, PNG, GIF, BMP, TIFF, WebP, ICO, PPM, ...:
`pipelines.images.readable_extensions`); the other files are named in one warning and not
counted. Each photo is read as a viewer shows it (`pipelines.images.read_image_upright`: the EXIF
Orientation tag applied) and its pixels go through the export's `serving_default` signature, so
a phone photo stored sideways is detected upright and its boxes are in the upright pixels (the
`image_bytes` signature decodes in the graph, where the tag is ignored). An animated image gives
its first frame, with a warning naming it.

Every image gets its own results, at its path relative to `--images` (a single file: relative to
its folder) with its extension kept, so `a.jpg` and `a.png`, or `2019/party/img1.jpg` and
`2020/party/img1.jpg`, never share a result:
    output_dir/<relative path>.txt   WIDER result format: name, count, `x y w h score` lines
    output_dir/<relative path>.png   the image with its boxes and scores drawn (`--draw`), and
                                     the keypoints of exports that return them (BlazeFace: eyes,
                                     nose tip, mouth, ear tragions) as red dots
e.g. `photos/party/img1.jpg` -> `detections/party/img1.jpg.txt` and `.../img1.jpg.png`.

Nothing a user owns is overwritten or polluted: an output_dir that is the images folder (a single
file's folder counts as one) or lies inside it is refused before anything is written (results
would land among the inputs, and be read as inputs by the next run); so is an output_dir already
holding any of the files this run would write, unless `--overwrite` (then they are replaced).
Every result file and PNG is written to a temporary file in its folder and renamed, so none is
ever left half-written; a full disk stops the run with one line naming the file and the free
space (the results written before it are complete).

Skipped and counted: an image that cannot be read, with the reason (empty file, unknown image
format, permission denied, truncated, a broken symbolic link, ...), and an image whose name holds
a line break (the WIDER format's first line is the name). The last line, `images=N skipped=M
output_dir=...`, counts the result files written (N) and the skipped images (M). A PNG that
cannot be written (other than for a full disk) is a warning; its result file is kept. Errors are
one `handgrad-detect: error: ...` line (exit status 1; `--verbose` shows the traceback).
"""

import errno
import logging
import os
from collections import Counter
from pathlib import Path

import tensorflow as tf
from absl import app, flags
from PIL import Image, ImageDraw
from tqdm import tqdm

from handgrad.export import versions
from handgrad.pipelines.boxes import yxyx_to_xywh
from handgrad.pipelines.images import UnreadableImageError, read_image_upright, readable_extensions
from handgrad.zoo.run import cli
from handgrad.zoo.run.atomic import DiskFullError, shown, write_atomically

SIGNATURE = "image_bytes"  # what marks a face-detector export (detect runs serving_default)


def list_images(path, output_dir=None):
    """`(root, files)`: a file (root: its folder), or every file below a folder whose extension
    is one of `readable_extensions()` (sorted; broken symbolic links included, to be reported).
    Files of other extensions are named in one warning. Linked folders are searched too, each
    real folder once; one that holds `output_dir` is refused as `check_output_dir` does."""
    path = Path(path)
    out = None if output_dir is None else os.path.realpath(output_dir)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--images={path} is neither an image file nor a folder")
    extensions = readable_extensions()
    files, others = [], Counter()

    def unlisted(error):
        logging.warning("could not list %s (%s): its images are not processed",
                        shown(error.filename), error.strerror)

    searched = set()
    for folder, subfolders, names in os.walk(path, onerror=unlisted, followlinks=True):
        real = os.path.realpath(folder)
        if real in searched:  # a link back up the tree, or two links to one folder
            logging.warning("not searched again: %s is %s, which is already searched",
                            shown(folder), shown(real))
            subfolders[:] = []
            continue
        if out is not None and (out == real or out.startswith(real.rstrip(os.sep) + os.sep)):
            raise ValueError(
                f"--output_dir={output_dir} is inside {shown(folder)} (a linked folder below "
                f"--images={path}): the results would be written among the input images. "
                "Choose an output_dir outside the images folders.")
        searched.add(real)
        for name in names:
            suffix = Path(name).suffix.lower()
            if suffix in extensions:
                files.append(Path(folder) / name)
            else:
                others[suffix or "(no extension)"] += 1
    if others:
        logging.warning("not read: %d file(s) below --images=%s with an extension of no image "
                        "format Pillow decodes (%s)", sum(others.values()), shown(path),
                        ", ".join(f"{n} x {s}" for s, n in sorted(others.items())))
    if not files:
        raise FileNotFoundError(f"--images={path}: no image files below it (extensions of the "
                                "formats Pillow decodes: .bmp, .gif, .jpeg, .jpg, .png, .tif, "
                                ".tiff, .webp, ...)")
    return path, sorted(files)


def check_output_dir(images, output_dir):
    """Refuses an output_dir that is the images folder or inside it (ValueError); the images
    folder of a single file is the file's folder."""
    images, out = Path(images).resolve(), Path(output_dir).resolve()
    folder = images if images.is_dir() else images.parent
    if out == folder or folder in out.parents:
        raise ValueError(
            f"--output_dir={output_dir} is inside --images={folder}: the results would be "
            "written among the input images (and read as inputs by the next run). Choose an "
            "output_dir outside the images folder.")


def output_path(root, image, output_dir, suffix):
    """`output_dir/<image relative to root>` + suffix, extension kept: `a.jpg` -> `a.jpg.txt`."""
    relative = Path(image).relative_to(root)
    return Path(output_dir) / relative.parent / f"{relative.name}{suffix}"


def check_nothing_overwritten(outputs, output_dir):
    """Refuses (FileExistsError) when any of `outputs` is an existing file: a previous run's
    results, or a user's file of the same name. A folder in the way is not refused here: its
    write fails later, as a warning for a PNG."""
    existing = [p for p in outputs if p.is_file() or p.is_symlink()]
    if existing:
        names = ", ".join(shown(p.relative_to(output_dir)) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"--output_dir={output_dir} already holds {len(existing)} of the files this run "
            f"would write ({names}{more}): refusing to overwrite them. Pass --overwrite to "
            "replace them, or choose another --output_dir.")


def write_result_file(dest, name, boxes, scores, overwrite=False):
    """One image's detections in the WIDER result format (see `pipelines.wider_format`); a name
    of undecodable bytes is written as those bytes."""
    lines = [name, str(len(boxes))]
    for (x, y, w, h), s in zip(yxyx_to_xywh(boxes), scores, strict=True):
        lines.append(f"{x:.3f} {y:.3f} {w:.3f} {h:.3f} {s:.6f}")
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    write_atomically(dest, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


KEYPOINT_COLOUR = (255, 0, 0)


def draw(pixels, boxes, scores, png_path, keypoints=None, overwrite=False):
    """Saves the image `pixels` (H, W, 3) uint8 with `[ymin, xmin, ymax, xmax]` pixel boxes and
    their scores drawn, and `keypoints` `(D, K, 2)` `(y, x)` pixels (optional) as dots of
    radius 2 (written atomically, `atomic.write_atomically`)."""
    image = Image.fromarray(pixels)
    canvas = ImageDraw.Draw(image)
    for (y0, x0, y1, x1), score in zip(boxes, scores):
        canvas.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=2)
        canvas.text((x0 + 2, max(y0 - 12, 0)), f"{score:.2f}", fill=(0, 255, 0))
    for y, x in [] if keypoints is None else keypoints.reshape(-1, 2):
        canvas.ellipse([x - 2, y - 2, x + 2, y + 2], fill=KEYPOINT_COLOUR)
    write_atomically(png_path, lambda tmp: image.save(tmp, format="PNG"),
                     overwrite=overwrite)


def load_detector(saved_model):
    """The `serving_default` signature (uint8 pixels) of a face-detector export, recognised by
    its `image_bytes` signature; errors name the folder. `saved_model` is a version folder, or
    an export folder of versions (its highest, the one TF Serving serves, is used)."""
    given, saved_model = Path(saved_model), versions.saved_model_path(saved_model)
    if saved_model != given:
        logging.info("using version %s of %s", saved_model.name, given)
    if not (saved_model / "saved_model.pb").is_file():
        raise FileNotFoundError(f"--saved_model={saved_model}: no saved_model.pb there; expected "
                                "a folder written by handgrad-export")
    try:
        signatures = tf.saved_model.load(str(saved_model)).signatures
    except (tf.errors.NotFoundError, FileNotFoundError) as e:  # variables/ deleted or cut short
        variables = saved_model / "variables"
        missing = [str(p.relative_to(saved_model)) for p in (variables / "variables.index",)
                   if not p.is_file()] + ([] if any(variables.glob("variables.data-*")) else
                                          ["variables/variables.data-*"])
        cause = (f"{', '.join(missing)} missing" if missing else
                 " ".join(str(e).split())[:200])
        raise FileNotFoundError(f"--saved_model={saved_model} is incomplete: {cause}. Export "
                                "it again with handgrad-export.") from None
    if SIGNATURE not in signatures or "serving_default" not in signatures:
        raise ValueError(
            f"--saved_model={saved_model} has no {SIGNATURE!r} signature (it has: "
            f"{', '.join(sorted(signatures)) or 'none'}): it is not a face-detector export. "
            "Export a face model_dir with handgrad-export.")
    return signatures["serving_default"]


def _tf_reason(error):
    """The line of a TF error that says what went wrong (not "Graph execution error:")."""
    lines = [line.strip() for line in error.message.splitlines()]
    said = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at", "<stack", "[[", "defined at"))]
    return (said or lines or [type(error).__name__])[0]


def _read(path):
    """(pixels, None), or (None, the reason to skip `path`)."""
    if len(f"{path.name}x".splitlines()) > 1:
        return None, ("its name holds a line break, which the WIDER result format cannot hold "
                      "(the name is its first line): rename the file")
    try:
        return read_image_upright(path), None
    except UnreadableImageError as e:
        return None, e.reason


def detect_images(saved_model, images, output_dir, draw_boxes=True, overwrite=False):
    """Runs the SavedModel on each image (upright pixels, `serving_default`); returns (done,
    skipped).

    `done` is the number of result files written (one per readable image, see the module
    docstring for their names); `skipped` the images that could not be read or named."""
    check_output_dir(images, output_dir)
    root, files = list_images(images, output_dir)
    output_dir = Path(output_dir)
    suffixes = (".txt", ".png") if draw_boxes else (".txt",)
    if not overwrite:
        check_nothing_overwritten(
            [output_path(root, f, output_dir, s) for f in files for s in suffixes], output_dir)
    created = not output_dir.exists()
    try:  # before the model loads (seconds): a wrong path is reported at once
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"--output_dir={output_dir} cannot be created: {e.strerror}") \
            from None
    try:
        detect = load_detector(saved_model)
    except BaseException:
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()  # a refused run leaves nothing behind
        raise
    done, skipped = 0, 0
    for path in tqdm(files, desc="detect", unit="img"):
        pixels, reason = _read(path)
        if pixels is not None:
            try:
                out = detect(images=tf.constant(pixels[None]))
            except tf.errors.InvalidArgumentError as e:
                reason = _tf_reason(e)
        if reason is not None:
            logging.warning("skipped %s: %s", shown(path), reason)
            skipped += 1
            continue
        n = int(out["num_detections"][0])
        boxes, scores = out["boxes"][0, :n].numpy(), out["scores"][0, :n].numpy()
        keypoints = out["keypoints"][0, :n].numpy() if "keypoints" in out else None
        try:
            write_result_file(output_path(root, path, output_dir, ".txt"), path.name, boxes,
                              scores, overwrite)
            done += 1
            if draw_boxes:
                png = output_path(root, path, output_dir, ".png")
                try:
                    draw(pixels, boxes, scores, png, keypoints, overwrite)
                except DiskFullError:
                    raise
                except OSError as e:
                    logging.warning("could not write %s (%s); its result file is written",
                                    shown(png), e)
        except DiskFullError as e:
            raise DiskFullError(errno.ENOSPC, f"{e.strerror} (nothing of it is left). The "
                                f"{done} result file(s) "
                                f"written before it in {output_dir} are complete; free some "
                                "space and rerun with --overwrite.") from None
    return done, skipped


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("saved_model", None, "Exported detector (handgrad-export).", required=True)
    flags.DEFINE_string("images", None, "An image file or a folder of images.", required=True)
    flags.DEFINE_string("output_dir", None, "Where to write results and PNGs (not inside "
                        "--images).", required=True)
    flags.DEFINE_bool("draw", True, "Write annotated PNGs.")
    flags.DEFINE_bool("overwrite", False, "Replace result files and PNGs that --output_dir "
                      "already holds (without it, the run is refused).")
    cli.define_verbose()


def after_ctrl_c(output_dir):
    """What a rerun does after Ctrl-C (the run is refused without --overwrite)."""
    return (f"the result files already in --output_dir={output_dir} are complete (each is "
            "written whole or not at all); rerun with --overwrite to redo the run")


def main(argv):
    with cli.one_line_errors("handgrad-detect", FLAGS.verbose,
                             interrupted=lambda: after_ctrl_c(FLAGS.output_dir)):
        cli.no_extra_arguments(argv)
        done, skipped = detect_images(FLAGS.saved_model, FLAGS.images, FLAGS.output_dir,
                                      FLAGS.draw, FLAGS.overwrite)
        print(f"images={done} skipped={skipped} output_dir={FLAGS.output_dir}")


def run():
    _define_flags()
    app.run(main)


__all__ = ["check_nothing_overwritten", "check_output_dir", "detect_images", "draw",
           "list_images", "output_path"]


if __name__ == "__main__":
    run()

"""`handgrad-export`: a trained model_dir -> SavedModel (+ .keras copy, + optional TFLite).

    handgrad-export --model_dir=runs/mnist_cnn --export_dir=exports/mnist_cnn [--tflite]
    handgrad-export --model_dir=runs/face --export_dir=exports/face --input_size=640 \\
        --score_threshold=0.5 --iou_threshold=0.4 --max_detections=750
    handgrad-export --pretrained=blazeface_full_range --export_dir=exports/blazeface
        (a pretrained detector, no model_dir: see pretrained.py)

Writes into export_dir:
    saved_model.pb, variables/   the SavedModel: signatures as in serving.py, custom gradients kept
    model.keras                  the Keras model (`keras.models.load_model` after `import handgrad`)
    model_float32.tflite, model_int8.tflite   with --tflite (see tflite.py)
Check an export with `saved_model_cli show --dir EXPORT_DIR --all`.

export_dir must be absent, empty, or a previous export (only the files above): anything else is
refused before anything is written. The export is written into a temporary sibling folder and
moved into place once complete (`write_export`), so a failed or interrupted export leaves the
previous one intact and TF Serving never sees half an export. Errors are one
`handgrad-export: error: ...` line (exit status 1; `--verbose` shows the traceback).
"""

import shutil
from pathlib import Path

from absl import app, flags

from handgrad.export import pretrained, serving, tflite
from handgrad.zoo.run import cli
from handgrad.zoo.run.model_dir import load_trained

EXPORT_FILES = {"saved_model.pb", "variables", "assets", "fingerprint.pb", "keras_metadata.pb",
                "model.keras", "model_float32.tflite", "model_int8.tflite"}


def check_export_dir(export_dir):
    """Raises ValueError when `export_dir` holds anything but a previous export."""
    path = Path(export_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--export_dir={path} is a file; expected a folder for the SavedModel.")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in EXPORT_FILES) \
        if path.is_dir() else []
    if foreign:
        raise ValueError(
            f"--export_dir={path} holds files that are not an export ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}): refusing to replace them. Use a new or "
            f"empty folder, e.g. {path / '1'}.")


def write_export(export_dir, write):
    """Calls `write(folder)` on a temporary sibling of `export_dir`, then moves the complete
    export into place (replacing a previous export); on failure the temporary folder is
    removed and `export_dir` is untouched. Returns `export_dir`."""
    export_dir = Path(export_dir)
    check_export_dir(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (export_dir.with_name(f"{p}{export_dir.name}") for p in (".tmp-", ".old-"))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if export_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        export_dir.rename(old)
    tmp.rename(export_dir)
    shutil.rmtree(old, ignore_errors=True)
    return export_dir


def export_model(model_dir, export_dir, config=None, tflite_modes=(), **serving_args):
    """Exports `model_dir/model.keras`; returns the export folder.

    Args:
        model_dir: a `handgrad-train` output folder. export_dir: where to write.
        config: a config name or object; default: the one saved in `model_dir/config.json`.
        tflite_modes: any of "float32", "int8".
        **serving_args: input_size, score_threshold, iou_threshold, max_detections (detector).
    """
    check_export_dir(export_dir)
    model, config = load_trained(model_dir, config)
    module = serving.build_module(model, config.task, **serving_args)

    def write(folder):
        serving.save(module, folder)
        shutil.copy2(Path(model_dir) / "model.keras", folder / "model.keras")
        for mode in tflite_modes:
            (folder / f"model_{mode}.tflite").write_bytes(tflite.convert(module, mode))

    return write_export(export_dir, write)


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("config", None, "Config name; default: model_dir/config.json.")
    flags.DEFINE_string("model_dir", None, "handgrad-train output folder.")
    flags.DEFINE_enum("pretrained", None, sorted(pretrained.PRETRAINED),
                      "Export a pretrained detector instead of a model_dir.")
    flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.", required=True)
    flags.DEFINE_bool("tflite", False, "Also write float32 and dynamic-range int8 TFLite files.")
    flags.DEFINE_integer("input_size", 640, "Detector: side of the square input (x 64).",
                         lower_bound=64)
    flags.DEFINE_float("score_threshold", 0.5, "Detector: lowest score kept.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("iou_threshold", 0.4, "Detector: NMS IoU threshold.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("max_detections", 750, "Detector: boxes kept per image.", lower_bound=1)
    cli.define_verbose()


def main(argv):
    del argv
    if (FLAGS.model_dir is None) == (FLAGS.pretrained is None):
        raise app.UsageError("Pass exactly one of --model_dir (a trained run) and --pretrained. "
                             f"Received: model_dir={FLAGS.model_dir!r}, "
                             f"pretrained={FLAGS.pretrained!r}")
    # flags left unset keep each model's own defaults (BlazeFace: MediaPipe's thresholds)
    given = {name: FLAGS[name].value for name in
             ("input_size", "score_threshold", "iou_threshold", "max_detections")
             if FLAGS[name].present}
    with cli.one_line_errors("handgrad-export", FLAGS.verbose):
        if FLAGS.pretrained:
            given.pop("input_size", None)  # fixed by the model (128 or 192)
            out = write_export(FLAGS.export_dir, lambda folder: pretrained.export_pretrained(
                FLAGS.pretrained, folder, **given))
        else:
            out = export_model(FLAGS.model_dir, FLAGS.export_dir, FLAGS.config,
                               tflite_modes=tflite.MODES if FLAGS.tflite else (), **given)
        print(f"export_dir={out}")


def run():
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

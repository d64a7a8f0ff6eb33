"""`handgrad-export`: a trained model_dir -> SavedModel (+ .keras copy, + optional TFLite).

    handgrad-export --model_dir=runs/mnist_cnn --export_dir=exports/mnist_cnn [--tflite]
    handgrad-export --model_dir=runs/face --export_dir=exports/face --input_size=640 \\
        --score_threshold=0.5 --iou_threshold=0.4 --max_detections=750
    handgrad-export --pretrained=retinaface_mobilenetv2 --export_dir=exports/retinaface [--tta]
    handgrad-export --pretrained=blazeface_full_range --export_dir=exports/blazeface
        (a pretrained detector, no model_dir: see pretrained.py)

Writes a new version folder of TF Serving's layout (versions.py), `export_dir/<n>` with n = 1 +
the highest version present (1 in a new folder), holding:
    saved_model.pb, variables/   the SavedModel: signatures as in serving.py, custom gradients kept
    model.keras                  the Keras model (`keras.models.load_model` after `import handgrad`)
    LOADING.md                   that hint, for a user who meets the file without handgrad
    model_float32.tflite, model_int8.tflite   with --tflite (see tflite.py)
and prints `export_dir=<that folder>`. Check it: `saved_model_cli show --dir DIR/1 --all`.

export_dir (links resolved: `current -> real` writes into `real`, the link stays) must be absent,
empty, or a folder of version folders: anything else, an export of the single-folder layout of
earlier releases (saved_model.pb directly in it) included, is refused before anything is written.
The version is written into a hidden temporary folder beside it (`.tmp-export-<n>`), flushed to
disk, and renamed into place in one rename: a server watching export_dir never sees half an
export, an earlier version is never changed, and a failed or killed export leaves the versions
that were there (a killed one's temporary folder is removed by the next export). Two exports
into one export_dir do not run at once: the second is refused naming the first
(`zoo/run/locking.py`). A full disk is reported naming the file and the free space
(`atomic.disk_full_error`). Errors are one `handgrad-export: error: ...` line (exit status 1;
`--verbose` shows the traceback).
"""

import os
import re
import shutil
from pathlib import Path

from absl import app, flags

from handgrad.export import pretrained, serving, tflite, versions
from handgrad.zoo.run import atomic, cli, locking, resilience
from handgrad.zoo.run.model_dir import load_trained

EXPORT_FILES = {"saved_model.pb", "variables", "assets", "fingerprint.pb", "keras_metadata.pb",
                "model.keras", resilience.LOAD_HINT_FILE, "model_float32.tflite",
                "model_int8.tflite"}
TMP_PREFIX = ".tmp-export-"
_VERSION = re.compile(r"^\d+$")


def check_export_dir(export_dir):
    """Raises ValueError unless `export_dir` (links resolved) is absent, empty, or a folder of
    version folders (module docstring)."""
    path = Path(export_dir)
    base = path.resolve()
    if base.exists() and not base.is_dir():
        raise ValueError(f"--export_dir={path} is a file; expected a folder for the SavedModel.")
    if not base.is_dir():
        return
    names = sorted(p.name for p in base.iterdir() if not p.name.startswith(TMP_PREFIX))
    foreign = [n for n in names if n not in EXPORT_FILES
               and not (_VERSION.match(n) and (base / n).is_dir())]
    if foreign:
        raise ValueError(
            f"--export_dir={path} holds files that are not an export ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}): refusing to write among them. Use a new or "
            "empty folder.")
    if set(names) & EXPORT_FILES:  # a single-folder export
        if _VERSION.match(base.name) and versions.versions(base.parent):
            raise ValueError(
                f"--export_dir={path} is version {base.name} of the export folder "
                f"{base.parent}: pass --export_dir={path.parent} to add the next version.")
        raise ValueError(
            f"--export_dir={path} holds an export in the single-folder layout of earlier "
            "releases (saved_model.pb directly in it); exports are now version folders, "
            f"{path}/<n>/saved_model.pb (TF Serving's layout), and an earlier export is never "
            f"changed. Use a new --export_dir, or move these files into {path}/1 first.")


def _fsync_tree(folder):
    """Flushes every file and folder below `folder` to disk, so that the rename publishes a
    complete export even across a power cut."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _named_file(error, tmp, final):
    """The file of `final` whose write raised `error` (a file below the temporary `tmp`, named by
    the OS error or TF's message), or `final` itself."""
    text = f"{getattr(error, 'filename', None) or ''} {error}"
    match = re.search(re.escape(str(tmp)) + r"(/[^\s;:,'\"]*)?", text)
    return final / match.group(1).lstrip("/") if match and match.group(1) else final


def write_export(export_dir, write):
    """Calls `write(folder)` on a temporary folder and renames it to the next version folder of
    `export_dir` (module docstring); on failure the temporary folder is removed and export_dir
    holds what it held. Returns the new version folder (`export_dir/<n>`)."""
    path = Path(export_dir)
    check_export_dir(path)  # before creating the lock beside it
    with locking.hold(path, "handgrad-export", flag="--export_dir"):
        check_export_dir(path)
        base = path.resolve()
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob(f"{TMP_PREFIX}*"):  # a killed export's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        version = str(max(versions.versions(base), default=0) + 1)
        tmp, final = base / f"{TMP_PREFIX}{version}", path / version
        try:
            write(tmp)
            _fsync_tree(tmp)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, Exception) and atomic.is_disk_full(e):
                full = atomic.disk_full_error(_named_file(e, tmp, final))
                raise atomic.DiskFullError(
                    full.errno, f"{full.strerror}. Nothing was exported: --export_dir={path} "
                    f"holds what it held before. Free some space and rerun.") from None
            raise
        os.rename(tmp, base / version)  # one rename: the version appears complete
    return final


def export_model(model_dir, export_dir, config=None, tflite_modes=(), **serving_args):
    """Exports `model_dir/model.keras` as the next version of `export_dir`; returns its folder.

    Args:
        model_dir: a `handgrad-train` output folder. export_dir: the versioned export folder.
        config: a config name or object; default: the one saved in `model_dir/config.json`.
        tflite_modes: any of "float32", "int8".
        **serving_args: input_size, score_threshold, iou_threshold, max_detections (detector);
            one that the model cannot honour is refused (ValueError).
    """
    check_export_dir(export_dir)
    model, config = load_trained(model_dir, config)
    module = serving.build_module(model, config.task, **serving_args)
    _check_input_size(module, serving_args.get("input_size"), f"--model_dir={model_dir}")

    def write(folder):
        serving.save(module, folder)
        shutil.copy2(Path(model_dir) / "model.keras", folder / "model.keras")
        resilience.write_load_hint(folder)
        for mode in tflite_modes:
            (folder / f"model_{mode}.tflite").write_bytes(tflite.convert(module, mode))

    return write_export(export_dir, write)


def _check_input_size(module, input_size, source):
    """Refuses an --input_size that the serving module does not use (ValueError)."""
    served = getattr(module, "input_size", None) or getattr(getattr(module, "spec", None),
                                                            "input_size", None)
    if input_size is not None and served != input_size:
        raise ValueError(
            f"--input_size={input_size} cannot be honoured for {source}: "
            + (f"its input is fixed at {served} x {served}" if served else
               "the model has no input size to set") + ". Leave --input_size out.")


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("config", None, "Config name; default: model_dir/config.json.")
    flags.DEFINE_string("model_dir", None, "handgrad-train output folder.")
    flags.DEFINE_enum("pretrained", None, sorted(pretrained.PRETRAINED),
                      "Export a pretrained detector instead of a model_dir.")
    flags.DEFINE_string("export_dir", None, "Versioned export folder (TF Serving's "
                        "--model_base_path): the export is written to its next version, "
                        "export_dir/<n>.", required=True)
    flags.DEFINE_bool("tflite", False, "Also write float32 and dynamic-range int8 TFLite files.")
    flags.DEFINE_integer("input_size", 640, "Detector: side of the square input (x 64); "
                         "refused for a model whose input size is fixed (BlazeFace: 128 or 192).",
                         lower_bound=64)
    flags.DEFINE_float("score_threshold", 0.5, "Detector: lowest score kept, in [0, 1): scores "
                       "are probabilities below 1, so 1 would export a model that keeps no box.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("iou_threshold", 0.4, "Detector: NMS drops a box overlapping a kept one by "
                       "more than this IoU, in (0, 1]: 0 would drop every box touching a kept one.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("max_detections", 750, "Detector: boxes kept per image (default 750; "
                         "pretrained: 1000 RetinaFace, 100 BlazeFace).", lower_bound=1)
    flags.DEFINE_bool("tta", False, "Serve the test-time recipe (two passes, box voting: "
                      "zoo/face/retinanet/tta.py); --pretrained=retinaface_mobilenetv2 only.")
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
    modes = tflite.MODES if FLAGS.tflite else ()
    with cli.one_line_errors("handgrad-export", FLAGS.verbose):
        if FLAGS.pretrained:
            given["tta"] = FLAGS.tta
            pretrained.check_arguments(FLAGS.pretrained, tflite_modes=modes,
                                       **given)  # before anything is written
            out = write_export(FLAGS.export_dir, lambda folder: pretrained.export_pretrained(
                FLAGS.pretrained, folder, tflite_modes=modes, **given))
        else:
            if FLAGS.tta:
                raise ValueError("--tta cannot be honoured for --model_dir: the test-time recipe "
                                 "is --pretrained=retinaface_mobilenetv2's. Leave --tta out.")
            out = export_model(FLAGS.model_dir, FLAGS.export_dir, FLAGS.config,
                               tflite_modes=modes, **given)
        print(f"export_dir={out}")


def run():
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""Every command reports an error as one line naming the file or argument (README "Bad input"
table): `<command>: error: <Type>: <message>`, exit status 1, no traceback unless `--verbose`;
Ctrl-C is `<command>: interrupted; ...` with exit status 130; results come before artefacts.

Each case runs the installed command line in a fresh process (`python -m <module>`), as a user
does; the model_dirs and exports are the tiny ones of `conftest.py` and `test_data_safety.py`.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from handgrad.export.export import export_model
from handgrad.zoo.run import cli

MODULES = {"handgrad-train": "handgrad.zoo.run.train", "handgrad-eval": "handgrad.zoo.run.evaluate",
           "handgrad-export": "handgrad.export.export", "handgrad-detect": "handgrad.export.detect"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("HANDGRAD_FAULT", None)


def _run(command, args, timeout=180, **env):
    proc = subprocess.run([sys.executable, "-m", MODULES[command], *args], capture_output=True,
                          text=True, env={**ENV, **env}, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _error_line(command, err):
    lines = [line for line in err.splitlines() if line.startswith(f"{command}: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def folders(tiny_mnist_run, tmp_path_factory):
    """A model_dir, its variants, exports and a photo folder, built once for all cases."""
    root = tmp_path_factory.mktemp("commands")
    run = root / "run"
    shutil.copytree(tiny_mnist_run, run)
    (root / "empty").mkdir()
    for name, damage in (("corrupt", "model.keras"), ("bad_json", "config.json")):
        shutil.copytree(run, root / name)
        (root / name / damage).write_bytes((root / name / damage).read_bytes()[:300])
    shutil.copytree(run, root / "png_blocked")
    (root / "png_blocked" / "confusion_matrix.png").unlink()
    (root / "png_blocked" / "confusion_matrix.png").mkdir()  # cannot be written as a file
    export_model(run, root / "mnist_export")  # version 1: mnist_export/1
    (root / "photos").mkdir()
    Image.new("RGB", (40, 30)).save(root / "photos" / "family.png")
    (root / "results").mkdir()
    (root / "results" / "family.png.txt").write_text("family\n0\n")  # a previous run's
    return root


MODEL_DIR_CASES = {
    "missing_model_dir": ("nope", [], r"FileNotFoundError: --model_dir=.*nope does not exist; "
                                     r"expected the output folder of handgrad-train\."),
    "empty_model_dir": ("empty", [], r"FileNotFoundError: .*empty/model\.keras not found; train "
                                     r"first with handgrad-train"),
    "corrupt_model_keras": ("corrupt", [], r"ValueError: .*corrupt/model\.keras is not a "
                                           r"\.keras file \(not a zip archive\): it is "
                                           r"truncated or damaged"),
    "invalid_config_json": ("bad_json", [], r"ValueError: .*bad_json/config\.json: not valid "
                                            r"JSON"),
    "model_dir_of_another_task": ("run", ["--config=face_small_synthetic"],
                                  r"ValueError: --model_dir=.*run holds a mnist model \(config "
                                  r"'mnist_cnn', config\.json\); the config given is a face "
                                  r"config"),
    "undotted_set_seed": ("run", ["--set=seed=1"], r"ValueError: config MnistConfig has no field "
                                                   r"'seed'\. Did you mean 'training\.seed'\?"),
}


@pytest.mark.parametrize("case", sorted(MODEL_DIR_CASES))
def test_eval_reports_a_bad_model_dir_in_one_line(folders, mnist_dir, case):
    folder, extra, message = MODEL_DIR_CASES[case]
    code, _, err = _run("handgrad-eval", [f"--model_dir={folders / folder}",
                                          f"--data_dir={mnist_dir}", *extra])
    assert code == 1 and re.match(rf"handgrad-eval: error: {message}",
                                  _error_line("handgrad-eval", err)), err[-3000:]


def test_eval_dotted_set_seed_works(folders, mnist_dir):
    code, out, err = _run("handgrad-eval", [f"--model_dir={folders / 'run'}",
                                            f"--data_dir={mnist_dir}", "--set=training.seed=1"])
    assert code == 0 and re.search(r"^test_accuracy=0\.\d{4}$", out, re.M), err[-3000:]


def test_eval_prints_the_results_when_a_plot_cannot_be_written(folders, mnist_dir):
    code, out, err = _run("handgrad-eval", [f"--model_dir={folders / 'png_blocked'}",
                                            f"--data_dir={mnist_dir}"])
    assert code == 0 and re.search(r"^test_accuracy=0\.\d{4}$", out, re.M), err[-3000:]
    assert re.search(r"could not write .*confusion_matrix\.png \(IsADirectoryError: .*\); the "
                     r"results above are complete", err) and "Traceback" not in err


@pytest.mark.parametrize("command, args, message", [
    ("handgrad-export", ["--model_dir={run}", "--export_dir={run}"],
     r"ValueError: --export_dir=.*run holds files that are not an export \(backup, "),
    ("handgrad-detect", ["--saved_model={mnist_export}/1", "--images={photos}",
                         "--output_dir={out}"],
     r"ValueError: --saved_model=.*mnist_export/1 has no 'image_bytes' signature \(it has: "
     r"serving_default\): it is not a face-detector export"),
    ("handgrad-detect", ["--saved_model={nope}", "--images={photos}", "--output_dir={out}"],
     r"FileNotFoundError: --saved_model=.*nope: no saved_model\.pb there"),
    ("handgrad-detect", ["--saved_model={mnist_export}/1", "--images={photos}",
                         "--output_dir={photos}/out"],
     r"ValueError: --output_dir=.*photos/out is inside --images=.*photos: the results would be "
     r"written among the input images"),
    ("handgrad-export", ["--pretrained=blazeface_full_range", "--input_size=640",
                         "--export_dir={out}"],
     r"ValueError: --input_size=640 cannot be honoured for --pretrained=blazeface_full_range: "
     r"its input is fixed at 192 x 192"),
    ("handgrad-export", ["--pretrained=blazeface_full_range", "--score_threshold=1.0",
                         "--export_dir={out}"],
     r"ValueError: --score_threshold must be in \[0, 1\): scores are probabilities below 1"),
    ("handgrad-export", ["--model_dir={run}", "--iou_threshold=0", "--export_dir={out}"],
     r"ValueError: --iou_threshold must be in \(0, 1\]: at 0 the NMS drops every box"),
    ("handgrad-detect", ["--saved_model={mnist_export}", "--images={photos}/family.png",
                         "--output_dir={photos}"],
     r"ValueError: --output_dir=.*photos is inside --images=.*photos: the results would be "
     r"written among the input images"),
    ("handgrad-detect", ["--saved_model={mnist_export}", "--images={photos}",
                         "--output_dir={results}"],
     r"FileExistsError: --output_dir=.*results already holds 1 of the files this run would "
     r"write \(family\.png\.txt\): refusing to overwrite them\. Pass --overwrite"),
], ids=["export_into_the_model_dir", "detect_with_an_mnist_export", "detect_missing_saved_model",
        "detect_output_inside_images", "export_pretrained_with_input_size",
        "export_score_threshold_1", "export_iou_threshold_0", "detect_single_file_into_its_folder",
        "detect_over_existing_results"])
def test_export_and_detect_report_errors_in_one_line(folders, command, args, message):
    paths = {name: folders / name
             for name in ("run", "mnist_export", "photos", "out", "nope", "results")}
    code, _, err = _run(command, [a.format(**paths) for a in args])
    assert code == 1 and re.match(rf"{command}: error: {message}",
                                  _error_line(command, err)), err[-3000:]
    assert sorted(p.name for p in (folders / "photos").iterdir()) == ["family.png"]
    assert not (folders / "out").exists()  # nothing exported or detected
    assert (folders / "results" / "family.png.txt").read_text() == "family\n0\n"


def _train_args(model_dir, mnist_dir, *extra):
    return ["--config=mnist_cnn", f"--model_dir={model_dir}", f"--data_dir={mnist_dir}",
            "--set=model.filters=4,4,4", "--set=data.train_limit=500",
            "--set=data.test_limit=100", "--set=training.validate_every_epoch=false", *extra]


@pytest.mark.parametrize("extra, env, message", [
    (["--steps=0"], {}, r"ValueError: training\.steps_per_epoch must be None or an int >= 1\. "
                        r"Received: training\.steps_per_epoch=0"),
    (["--epochs=2", "--steps=1"], {"HANDGRAD_FAULT": "disk_full_in_checkpoint:2"},
     r"DiskFullError: \[Errno 28\] the disk is full: no space left on the device \([\d.]+ [kMG]B "
     r"free\) while writing "
     r".*state-0002\.weights\.h5\. Training stopped after epoch 2; the last good checkpoint "
     r"\(epoch 1\) is kept in .*state-0001\.weights\.h5\. Free some space and rerun"),
], ids=["steps_0", "full_disk"])
def test_train_reports_errors_in_one_line(mnist_dir, tmp_path, extra, env, message):
    code, _, err = _run("handgrad-train", _train_args(tmp_path, mnist_dir, *extra), **env)
    assert code == 1 and re.match(rf"handgrad-train: error: {message}",
                                  _error_line("handgrad-train", err)), err[-3000:]


def test_verbose_shows_the_traceback(mnist_dir, tmp_path):
    code, _, err = _run("handgrad-train", _train_args(tmp_path, mnist_dir, "--steps=0",
                                                      "--verbose"))
    assert code == 1 and "Traceback (most recent call last)" in err
    assert "training.steps_per_epoch must be None or an int >= 1" in err


def test_ctrl_c_says_where_the_rerun_resumes_and_the_rerun_says_so(mnist_dir, tmp_path):
    args = _train_args(tmp_path, mnist_dir, "--epochs=100000", "--steps=1")
    # the child gets SIGINT's default action even when the tests run in the background, where
    # a shell starts them (and so this child) with SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", MODULES["handgrad-train"], *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "backup" / "latest.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = _error_line("handgrad-train", err)
    match = re.fullmatch(r"handgrad-train: interrupted; rerun the same command to resume from "
                         r"epoch (\d+)", line)
    assert proc.returncode == 130 and match, err[-3000:]
    epoch = int(match.group(1))
    # the same command with one epoch to go (a rerun may change the epochs; 100 000 is long)
    rerun = args[:-2] + [f"--epochs={epoch + 1}", "--steps=1"]
    code, out, err = _run("handgrad-train", rerun)
    assert code == 0 and re.search(rf"resuming from epoch {epoch} of {epoch + 1} \(.*backup/"
                                   rf"state-{epoch:04d}\.weights\.h5\)", err), err[-3000:]
    assert re.search(r"^test_accuracy=0\.\d{4}$", out, re.M)


class _StubTask:
    """Fixed metrics; writes `plot.png` into the folder it is given, or fails to as on a full
    disk when `full` is set."""

    def __init__(self, full):
        self.full, self.folders = full, []

    def evaluate(self, model, config, data_dir, model_dir):
        self.folders.append(model_dir)
        if model_dir is not None:
            path = Path(model_dir) / "plot.png"
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            path.write_bytes(b"png")
        return {"accuracy": 0.5}


def test_results_survive_a_full_temporary_folder(tmp_path, capsys, caplog):
    """Artefacts are staged in the system's temporary folder; when even that is full, the
    evaluation is redone without artefacts and its results printed, with a warning."""
    for full in (False, True):
        task = _StubTask(full)
        assert cli.evaluate_and_report(task, None, None, None, tmp_path) == {"accuracy": 0.5}
        assert capsys.readouterr().out == "accuracy=0.5000\n"
        assert (task.folders[-1] is None) == full and len(task.folders) == 1 + full
    assert (tmp_path / "plot.png").read_bytes() == b"png"  # from the first, unhindered run
    assert "could not write the artefacts (OSError: [Errno 28] No space left on device" \
        in caplog.text

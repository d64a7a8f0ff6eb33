"""A run's files where a user meets them without handgrad's help (issue 21, item 14): resuming in
a model_dir that cannot be written is refused in one line before training starts; model.keras
carries the hint to import handgrad beside it.

Tests run as root, for whom a folder without write permission is writable, so the command runs in
a fresh process whose `tempfile.TemporaryFile` fails in that folder as it does for another user
or on a read-only mount (EACCES)."""

import os
import shutil
import subprocess
import sys
import textwrap

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("HANDGRAD_FAULT", None)

READ_ONLY_TRAIN = textwrap.dedent("""
    import errno, sys, tempfile
    from pathlib import Path
    read_only, real = Path(sys.argv[1]).resolve(), tempfile.TemporaryFile

    def denied(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(read_only):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    tempfile.TemporaryFile = denied
    from handgrad.zoo.run import train
    sys.argv = ["handgrad-train", *sys.argv[2:]]
    train.run()
""")


def test_resume_in_read_only_model_dir_is_one_line(tiny_mnist_run, mnist_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_mnist_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = subprocess.run(
        [sys.executable, "-c", READ_ONLY_TRAIN, str(run), "--config=mnist_cnn",
         f"--model_dir={run}", f"--data_dir={mnist_dir}", "--epochs=3", "--steps=1",
         "--batch_size=50", "--set=model.filters=4,4,4", "--set=data.train_limit=500",
         "--set=data.test_limit=100", "--set=training.validate_every_epoch=false"],
        capture_output=True, text=True, env=ENV, timeout=180)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("handgrad-train: ")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert lines == [f"handgrad-train: error: PermissionError: --model_dir={run} is not writable: "
                     "Permission denied. Make it writable, or copy the run to a writable folder "
                     "and rerun there."], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Epoch" not in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_model_keras_has_the_loading_hint_beside_it_and_the_hint_works(tiny_mnist_run,
                                                                       tmp_path):
    """Keras alone cannot load model.keras (it only knows registered classes, and prints
    "Could not locate class ..." with no word of handgrad); `LOADING.md` beside the file says
    what to do, and its code, run as written in a fresh Python, loads the model."""
    hint = (tiny_mnist_run / "LOADING.md").read_text()
    assert "import handgrad" in hint
    bare = subprocess.run([sys.executable, "-c", "import keras; keras.models.load_model("
                           "'model.keras')"], cwd=tiny_mnist_run, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert bare.returncode != 0 and "Could not locate class" in bare.stderr
    code = textwrap.dedent("\n".join(line for line in hint.splitlines()
                                     if line.startswith("    ")))
    loaded = subprocess.run([sys.executable, "-c", code + "\nprint(model.count_params())"],
                            cwd=tiny_mnist_run, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    import keras

    import handgrad  # noqa: F401

    expected = keras.models.load_model(tiny_mnist_run / "model.keras").count_params()
    assert loaded.stdout.split()[-1] == str(expected)
    from handgrad.export.export import export_model

    version = export_model(tiny_mnist_run, tmp_path / "exports")  # model.keras copied there
    assert (version / "LOADING.md").read_text() == hint

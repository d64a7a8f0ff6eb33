"""Nothing lost under concurrency, kills and full disks; no export flag ignored (issue 21, items
1, 3, 4, 8, 11): a model_dir / export_dir lock, TF Serving's versioned export layout, a full disk
named with the free space, flags honoured or refused, an out-of-memory error in one line.

Each check compares with facts independent of the code under test: files on disk and their
bytes, exit codes, the pid of the process that holds a lock, the command's stderr line.
"""

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_data_safety import _snapshot

from handgrad.export import export as export_lib
from handgrad.export import pretrained, serving, tflite, versions
from handgrad.zoo.run import cli, locking, resilience
from handgrad.zoo.run.train import train_and_evaluate

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("HANDGRAD_FAULT", None)
HOLD = """
import sys, time
from handgrad.zoo.run import locking
with locking.hold(sys.argv[1], sys.argv[2], flag=sys.argv[3]):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder, command, flag):
    """A process holding `folder`'s lock, as a running command does; returns it once it holds."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command, flag],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _one_line(command, err):
    lines = [line for line in err.splitlines() if line.startswith(f"{command}: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- item 1: one command per folder ----------------------------------------------------------

def test_second_train_into_a_model_dir_in_use_is_refused_naming_the_holder(
        mnist_dir, tmp_path, tiny_run_overrides):
    """A second handgrad-train into a model_dir in use exits 1 in one line naming the holder's
    pid and host, writing nothing; once the holder is SIGKILLed the rerun trains."""
    model_dir = tmp_path / "runs" / "c"
    holder = _holder(model_dir, "handgrad-train", "--model_dir")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "handgrad.zoo.run.train", "--config=mnist_cnn",
             f"--model_dir={model_dir}", f"--data_dir={mnist_dir}", "--epochs=1", "--steps=1",
             "--set=model.filters=4,4,4"], capture_output=True, text=True, env=ENV, timeout=300)
        line = _one_line("handgrad-train", proc.stderr)
        assert proc.returncode == 1 and re.match(
            rf"handgrad-train: error: FolderInUseError: --model_dir={re.escape(str(model_dir))} "
            rf"is in use by another command: handgrad-train \(pid {holder.pid} on host "
            rf"{re.escape(socket.gethostname())}, since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d, `.*`\)\. "
            r"Wait for it to end, or use another --model_dir\.$", line), line
        assert not model_dir.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the OS dropped the killed holder's lock: a rerun is not blocked
    train_and_evaluate("mnist_cnn", model_dir, mnist_dir, verbose=0, overrides=tiny_run_overrides)
    assert (model_dir / "model.keras").is_file()
    assert not locking.lock_paths(model_dir)[1].exists()  # the info file goes with the lock


def test_export_into_an_export_dir_in_use_is_refused(tiny_mnist_run, tmp_path):
    base = tmp_path / "exports"
    with locking.hold(base, "handgrad-export", flag="--export_dir"):
        with pytest.raises(locking.FolderInUseError,
                           match=rf"--export_dir={re.escape(str(base))} is in use by another "
                                 rf"command: handgrad-export \(pid {os.getpid()} on host "):
            export_lib.export_model(tiny_mnist_run, base)
    assert not base.exists()
    assert export_lib.export_model(tiny_mnist_run, base) == base / "1"


def test_a_link_and_its_target_share_one_lock(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "current").symlink_to("real")
    with locking.hold(tmp_path / "real", "handgrad-train"):
        with pytest.raises(locking.FolderInUseError):
            with locking.hold(tmp_path / "current", "handgrad-train"):
                pass


# ---- item 3: TF Serving's versioned layout ---------------------------------------------------

def test_exports_add_versions_and_never_touch_an_earlier_one(tiny_mnist_run, tmp_path):
    base = tmp_path / "exports"
    first = export_lib.export_model(tiny_mnist_run, base)
    before = _snapshot(first)
    second = export_lib.export_model(tiny_mnist_run, base)
    assert (first, second) == (base / "1", base / "2")
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert _snapshot(first) == before
    assert {"saved_model.pb", "model.keras"} <= {p.name for p in second.iterdir()}
    assert versions.latest_version(base) == second == versions.saved_model_path(base)
    assert versions.saved_model_path(first) == first  # a version folder stands for itself
    f = tf.saved_model.load(str(second)).signatures["serving_default"]
    assert f(images=tf.zeros([2, 28, 28], tf.uint8))["probabilities"].shape == (2, 10)


def test_export_through_a_link_writes_into_its_target_and_keeps_the_link(tiny_mnist_run,
                                                                          tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "current").symlink_to("real")
    for _ in range(2):
        export_lib.export_model(tiny_mnist_run, tmp_path / "current")
    assert os.readlink(tmp_path / "current") == "real"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "current", "real"]  # no `.old-current`, no temporary folder


def test_a_killed_exports_leftover_is_never_a_version(tiny_mnist_run, tmp_path):
    """A process killed mid-export leaves only its hidden temporary folder: the server never sees
    it, and the next export removes it and writes a complete version."""
    base = tmp_path / "exports"
    export_lib.export_model(tiny_mnist_run, base)
    half = base / f"{export_lib.TMP_PREFIX}2"
    half.mkdir()
    (half / "saved_model.pb").write_bytes(b"half")
    assert versions.versions(base) == [1]
    out = export_lib.export_model(tiny_mnist_run, base)
    assert out == base / "2" and sorted(p.name for p in base.iterdir()) == ["1", "2"]
    tf.saved_model.load(str(out))


def test_single_folder_exports_and_version_folders_are_refused_with_the_way_out(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"--export_dir=.*old holds an export in the "
                                         r"single-folder layout .* Use a new --export_dir, or "
                                         r"move these files into .*old/1 first"):
        export_lib.check_export_dir(old)
    (tmp_path / "base" / "1").mkdir(parents=True)
    (tmp_path / "base" / "1" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"--export_dir=.*base/1 is version 1 of the export "
                                         r"folder .*base: pass --export_dir=.*base to add the "
                                         r"next version"):
        export_lib.check_export_dir(tmp_path / "base" / "1")


def test_export_dir_dot(tiny_mnist_run, tmp_path, monkeypatch):
    """`--export_dir=.` writes version 1 into the current folder; a current folder of other files
    is refused in one line (it said `PosixPath('.') has an empty name`)."""
    (tmp_path / "here").mkdir()
    proc = subprocess.run([sys.executable, "-m", "handgrad.export.export",
                           f"--model_dir={tiny_mnist_run}", "--export_dir=."],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path / "here",
                          timeout=300)
    assert proc.returncode == 0 and "export_dir=1\n" in proc.stdout, proc.stderr[-3000:]
    assert (tmp_path / "here" / "1" / "saved_model.pb").is_file()
    monkeypatch.chdir(tiny_mnist_run)
    with pytest.raises(ValueError, match=r"^--export_dir=\. holds files that are not an export "
                                         r"\(backup, checkpoints, config\.json"):
        export_lib.export_model(tiny_mnist_run, ".")


# ---- item 4: a full disk during export -------------------------------------------------------

def _fails_for_lack_of_space(error):
    def save(module, folder):
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"half")
        raise error(folder)
    return save


@pytest.mark.parametrize("error", [
    lambda folder: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                           str(folder / "variables" / "variables.data-00000-of-00001")),
    lambda folder: tf.errors.ResourceExhaustedError(  # what tf.saved_model.save raises
        None, None, f"{{{{function_node __wrapped__SaveV2}}}} {folder}/variables/"
                    "variables.data-00000-of-00001; No space left on device [Op:SaveV2]"),
], ids=["os_error", "tensorflow_error"])
def test_full_disk_during_export_names_the_file_and_the_free_space(
        tiny_mnist_run, tmp_path, monkeypatch, capsys, error):
    base = tmp_path / "exports"
    export_lib.export_model(tiny_mnist_run, base)
    before = _snapshot(base)
    monkeypatch.setattr(serving, "save", _fails_for_lack_of_space(error))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=12_000))
    with pytest.raises(SystemExit) as exit, cli.one_line_errors("handgrad-export"):
        export_lib.export_model(tiny_mnist_run, base)
    line = capsys.readouterr().err.strip()
    assert exit.value.code == 1 and line == (
        "handgrad-export: error: DiskFullError: [Errno 28] the disk is full: no space left on the "
        f"device (12 kB free) while writing {base}/2/variables/variables.data-00000-of-00001. "
        f"Nothing was exported: --export_dir={base} holds what it held before. Free some space "
        "and rerun.")
    assert _snapshot(base) == before and sorted(p.name for p in base.iterdir()) == ["1"]


def test_full_disk_while_writing_the_tflite_file(tiny_mnist_run, tmp_path, monkeypatch):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(resilience.DiskFullError,
                       match=r"the disk is full: no space left on the device \(.* free\) while "
                             r"writing .*exports/1/model_float32\.tflite\. Nothing was exported"):
        export_lib.export_model(tiny_mnist_run, tmp_path / "exports", tflite_modes=("float32",))
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == []


# ---- item 8: export flags honoured or refused ------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ({"input_size": 640}, r"--input_size=640 cannot be honoured for "
                          r"--pretrained=blazeface_full_range: its input is fixed at 192 x 192"),
    ({"score_threshold": 1.0}, r"--score_threshold must be in \[0, 1\): .* Received: "
                               r"score_threshold=1\.0"),
    ({"iou_threshold": 0.0}, r"--iou_threshold must be in \(0, 1\]: .* Received: "
                             r"iou_threshold=0\.0"),
], ids=["input_size_of_a_fixed_size_model", "score_threshold_1", "iou_threshold_0"])
def test_pretrained_export_refuses_what_it_cannot_honour(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        pretrained.export_pretrained("blazeface_full_range", tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def test_pretrained_export_honours_tflite_and_its_own_input_size(tmp_path):
    """--tflite with --pretrained writes the TFLite files (they were dropped); the float32 one
    runs the same network as the SavedModel's `forward`."""
    out = pretrained.export_pretrained("blazeface_short_range", tmp_path / "bf", input_size=128,
                                       tflite_modes=("float32",))
    x = np.random.default_rng(0).random((1, 128, 128, 3), np.float32)
    converted = tflite.run((out / "model_float32.tflite").read_bytes(), x)
    saved = tf.saved_model.load(str(out)).forward(tf.constant(x))
    for name in ("regressors", "classificators"):
        np.testing.assert_allclose(converted[name], saved[name].numpy(),
                                   atol=1e-4 * np.abs(saved[name].numpy()).max())


@pytest.mark.parametrize("args, message", [
    ({"score_threshold": 0.3}, r"--score_threshold cannot be honoured: a mnist model has no such "
                               r"setting"),
    ({"input_size": 320}, r"--input_size cannot be honoured: a mnist model"),
], ids=["threshold_for_mnist", "input_size_for_mnist"])
def test_detector_flags_for_a_classifier_are_refused(tiny_mnist_run, tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        export_lib.export_model(tiny_mnist_run, tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def test_input_size_of_a_fixed_size_detector_model_dir_is_refused():
    """A BlazeFace model_dir's serving module keeps its variant's size whatever it is given."""
    module = type("Module", (), {"spec": type("Spec", (), {"input_size": 128})})()
    with pytest.raises(ValueError, match=r"--input_size=640 cannot be honoured for "
                                         r"--model_dir=m: its input is fixed at 128 x 128"):
        export_lib._check_input_size(module, 640, "--model_dir=m")
    export_lib._check_input_size(module, 128, "--model_dir=m")
    export_lib._check_input_size(module, None, "--model_dir=m")


# ---- item 11: out of memory ------------------------------------------------------------------

def test_out_of_memory_is_one_line_naming_the_setting_to_lower(capsys):
    """TF's OOM error holds the Python stack of the graph node (1,000 characters were printed):
    one line naming the tensor and the setting to lower instead."""
    @tf.function
    def huge(n):
        return tf.reduce_sum(tf.zeros(tf.stack([n, n])))

    with pytest.raises(SystemExit) as exit, cli.one_line_errors(
            "handgrad-train", memory_setting="--batch_size (training.batch_size)"):
        huge(tf.constant(10 ** 7))
    line = capsys.readouterr().err.strip()
    assert exit.value.code == 1 and line == (
        "handgrad-train: error: OutOfMemoryError: a float tensor of shape [10000000, 10000000] "
        "(400000.0 GB) does not fit in the memory of CPU:0. Lower --batch_size "
        "(training.batch_size) and rerun.")

"""More bad inputs and faults, tried as a new user would (issue 21's closing request): each is
refused in one line naming the file or the argument, and nothing is lost.

References are independent facts: bytes and files written here, the folder left on disk, and
the command's exit status and stderr."""

import re

import pytest
from test_data_safety import face_export  # noqa: F401 (a fixture)

from handgrad.pipelines import wider_format


def test_non_utf8_result_file_names_the_file_line_and_offset(tmp_path):
    raw = b"caf\xe9\n1\n1 2 3 4 0.9\n"
    path = tmp_path / "0--Parade" / "cafe.txt"
    path.parent.mkdir()
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:1: expected UTF-8 text. Received: byte 0xe9 at byte offset 3")):
        wider_format.read_result_file(path)
    path.write_bytes(b"\xef\xbb\xbf" + raw.decode("latin-1").encode("utf-8"))  # re-saved
    boxes, scores = wider_format.read_result_file(path)
    assert boxes.tolist() == [[2, 1, 6, 4]] and scores.tolist() == [0.9]


# ---- MNIST: a --data_dir that is no folder ----------------------------------------------------

@pytest.mark.parametrize("kind", ["a_file", "missing"])
def test_mnist_data_dir_that_is_no_folder_says_so(tmp_path, kind):
    from handgrad.pipelines import mnist

    data_dir = tmp_path / "mnist"
    if kind == "a_file":
        data_dir.write_bytes(b"")
    what = "is a file, not a folder" if kind == "a_file" else "does not exist"
    with pytest.raises(FileNotFoundError, match=re.escape(f"data_dir={data_dir} {what}: expected "
                                                          "the folder holding the four official")):
        mnist.load_idx_split(data_dir, "train")


# ---- WIDER annotations: a count line that says more faces, an image listed twice ----------------

def _parse(tmp_path, text):
    from handgrad.pipelines import wider_face

    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(text)
    return path, lambda: wider_face.parse_annotations(path)


def test_count_line_saying_more_faces_than_follow_names_it(tmp_path):
    path, parse = _parse(tmp_path, "0--Parade/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n"
                                   "5 6 7 8 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:5: expected face line 3 of 3: line 2 says 3 faces, but only 2 follow before "
            "the next image path. Received: '0--Parade/b.jpg'")):
        parse()


def test_image_listed_twice_is_refused_naming_both_lines(tmp_path):
    """Parsed as two records, each image would train twice with half its faces each time (the
    other half taught as background)."""
    path, parse = _parse(tmp_path, "0--Parade/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
                                   "0--Parade/b.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n"
                                   "0--Parade/a.jpg\n1\n5 6 7 8 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}:7: expected each image listed once; 0--Parade/a.jpg is already listed on "
            "line 1: merge its faces into one record.")):
        parse()


# ---- handgrad-eval / handgrad-export while handgrad-train writes the model_dir -----------------

def test_eval_and_export_refuse_a_model_dir_being_trained(tmp_path):
    """Both read model_dir/model.keras, which a running training writes only when it ends: they
    used to evaluate or export the previous run's model (or say "rerun its handgrad-train
    command", which the lock then refuses) without a word."""
    import os
    import signal
    import subprocess
    import sys

    from handgrad.export import export as export_lib
    from handgrad.zoo.run import locking
    from handgrad.zoo.run.evaluate import evaluate_model_dir

    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)  # a first training, before its first epoch ends
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom handgrad.zoo.run import locking\n"
         f"with locking.hold({str(run)!r}, 'handgrad-train'):\n"
         "    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        assert holder.stdout.readline() == "held\n"
        busy = (rf"--model_dir={re.escape(str(run))} is being trained by handgrad-train "
                rf"\(pid {holder.pid} on host .*\): its model\.keras is written when that "
                r"training ends\. Wait for it to end, then rerun this command\.$")
        with pytest.raises(locking.FolderInUseError, match=busy):
            evaluate_model_dir(None, run)
        with pytest.raises(locking.FolderInUseError, match=busy):
            export_lib.export_model(run, tmp_path / "exports")
        assert not (tmp_path / "exports" / "1").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with pytest.raises(FileNotFoundError, match="model.keras not found; training has not "
                                                "finished: rerun"):  # no holder any more
        evaluate_model_dir(None, run)


# ---- handgrad-detect ---------------------------------------------------------------------------

def _photos(folder, *names):
    from PIL import Image

    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 10), (200, 120, 40)).save(folder / name)


def test_linked_folders_below_images_are_searched_once(face_export, tmp_path, caplog):  # noqa: F811
    """A linked folder (`photos/2019 -> /archive/2019`) was skipped without a word; a link back
    up the tree is searched once, with a warning, never in a loop."""
    from handgrad.export.detect import detect_images

    photos = tmp_path / "photos"
    _photos(photos, "a.png")
    _photos(tmp_path / "archive" / "2019", "b.png")
    (photos / "2019").symlink_to(tmp_path / "archive" / "2019")
    (photos / "2019" / "up").symlink_to(photos)  # archive/2019/up -> photos: a loop
    assert detect_images(face_export, photos, tmp_path / "out") == (2, 0)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.txt")
                  ) == ["2019/b.png.txt", "a.png.txt"]
    assert "not searched again: " in caplog.text and "2019/up is " in caplog.text


def test_output_dir_inside_a_linked_folder_is_refused(face_export, tmp_path):  # noqa: F811
    from handgrad.export.detect import detect_images

    photos = tmp_path / "photos"
    _photos(photos, "a.png")
    _photos(tmp_path / "archive", "b.png")
    (photos / "old").symlink_to(tmp_path / "archive")
    with pytest.raises(ValueError, match=r"--output_dir=.*archive/out is inside .*photos/old \(a "
                                         r"linked folder below --images=.*photos\): the results "
                                         r"would be written among the input images"):
        detect_images(face_export, photos, tmp_path / "archive" / "out")
    assert not (tmp_path / "archive" / "out").exists()


def test_saved_model_without_its_variables_is_named_incomplete(face_export, tmp_path):  # noqa: F811
    import shutil

    from handgrad.export.detect import detect_images

    damaged = tmp_path / "export"
    shutil.copytree(face_export, damaged)
    shutil.rmtree(damaged / "variables")
    _photos(tmp_path / "photos", "a.png")
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"--saved_model={damaged} is incomplete: variables/variables.index, "
            "variables/variables.data-* missing. Export it again with handgrad-export.")):
        detect_images(damaged, tmp_path / "photos", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a refused run leaves no empty output folder


def test_output_dir_that_cannot_be_created_is_named_before_the_model_loads(
        face_export, tmp_path, monkeypatch):  # noqa: F811
    from handgrad.export import detect

    _photos(tmp_path / "photos", "a.png")
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(detect, "load_detector", lambda path: pytest.fail("model loaded"))
    with pytest.raises(OSError, match=re.escape(f"--output_dir={tmp_path}/file/out cannot be "
                                                "created: Not a directory")):
        detect.detect_images(face_export, tmp_path / "photos", tmp_path / "file" / "out")


def test_ctrl_c_during_detect_says_how_to_rerun(capsys):
    from handgrad.export.detect import after_ctrl_c
    from handgrad.zoo.run import cli

    with pytest.raises(SystemExit) as exit, cli.one_line_errors(
            "handgrad-detect", interrupted=lambda: after_ctrl_c("out")):
        raise KeyboardInterrupt
    assert exit.value.code == 130 and capsys.readouterr().err.strip().endswith(
        "handgrad-detect: interrupted; the result files already in --output_dir=out are "
        "complete (each is written whole or not at all); rerun with --overwrite to redo the run")

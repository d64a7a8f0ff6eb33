"""The import contract of setup.cfg's [importlinter] section, checked by import-linter itself:
imports run layers <- losses <- zoo, pipelines <- zoo, zoo <- export; the model rooms never import
zoo.run; face detector families never import each other, and the floor of zoo.face none of them;
the tf.data readers never import the generators; command-line modules are leaves. The second
test plants a forbidden import in a copy of the package and shows that the contracts then fail.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("layers", "losses", "pipelines", "zoo", "export")


def _lint(cwd, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    script = ("import sys; from importlinter.cli import lint_imports; "
              "sys.exit(lint_imports(config_filename='setup.cfg'))")
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_package_keeps_its_import_contracts():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, broken", [
    ("pipelines/augment.py", "from handgrad.zoo.face import box_coder",
     "handgrad.pipelines.augment -> handgrad.zoo.face.box_coder"),
    ("zoo/face/blazeface/anchors.py", "from handgrad.zoo.face.retinanet import anchors",
     "handgrad.zoo.face.blazeface.anchors -> handgrad.zoo.face.retinanet.anchors"),
    ("zoo/face/data.py", "from handgrad.zoo.face.retinanet import anchors",
     "handgrad.zoo.face.data -> handgrad.zoo.face.retinanet.anchors"),
    ("pipelines/wider_face.py", "from handgrad.pipelines.generators import markers",
     "handgrad.pipelines.wider_face -> handgrad.pipelines.generators.markers"),
], ids=["pipelines_to_zoo", "family_to_family", "floor_to_family", "reader_to_generator"])
def test_contract_fails_on_a_planted_import(tmp_path, module, planted, broken):
    package = tmp_path / "src" / "handgrad"
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, package / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "__init__.py", package / "__init__.py")
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    target = package / module
    target.write_text(f"{planted}\n" + target.read_text())
    result = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert broken in result.stdout

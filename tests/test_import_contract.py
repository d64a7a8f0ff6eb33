"""The import contract of setup.cfg's [importlinter] section, checked by import-linter itself:
imports run layers <- losses <- zoo, pipelines <- zoo, zoo <- export; the model rooms never import
zoo.run; command-line modules are leaves. The second test plants a `pipelines -> zoo` import in a
copy of the package and shows that the same contracts then fail."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert "3 kept, 0 broken" in result.stdout


def test_contract_fails_on_a_pipelines_to_zoo_import(tmp_path):
    package = tmp_path / "src" / "handgrad"
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, package / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "__init__.py", package / "__init__.py")
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    augment = package / "pipelines" / "augment.py"
    planted = "import tensorflow as tf\n\nfrom handgrad.zoo.face import boxes\n"
    augment.write_text(augment.read_text().replace("import tensorflow as tf\n", planted, 1))
    result = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert "handgrad.pipelines.augment -> handgrad.zoo.face.boxes" in result.stdout

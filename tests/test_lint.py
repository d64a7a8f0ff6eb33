"""The code base stays ruff-clean (the configuration is .ruff.toml)."""

import shutil
import subprocess
from pathlib import Path


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: install the test extra (pip install -e '.[test]')"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([ruff, "check", "."], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

"""Shared fixtures: where the read-only `../shared` data lives, and TF set-up for the tests."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HANDGRAD_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        raise FileNotFoundError(
            f"The shared data folder is missing: expected {SHARED} "
            "(set HANDGRAD_SHARED to move it)."
        )
    return SHARED


@pytest.fixture(scope="session")
def mnist_dir(shared_dir):
    return shared_dir / "datasets" / "mnist"


@pytest.fixture(scope="session")
def wider_dir(shared_dir):
    return shared_dir / "widerface"

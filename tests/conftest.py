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


# A tiny MNIST run: 2 epochs of 1 step of 50 digits, a fig. 10 model of width 4.
TINY_RUN = {"model.filters": (4, 4, 4), "training.epochs": 2, "training.steps_per_epoch": 1,
            "training.batch_size": 50, "data.train_limit": 500, "data.test_limit": 100,
            "training.validate_every_epoch": False}


@pytest.fixture(scope="session")
def tiny_mnist_run(tmp_path_factory, mnist_dir):
    """A finished `mnist_cnn` model_dir of `TINY_RUN` (copy it before changing it)."""
    from handgrad.zoo.run.train import train_and_evaluate

    model_dir = tmp_path_factory.mktemp("tiny_mnist_run") / "run"
    train_and_evaluate("mnist_cnn", model_dir, mnist_dir, verbose=0, overrides=TINY_RUN)
    return model_dir


@pytest.fixture
def tiny_run_overrides():
    """The overrides of `tiny_mnist_run` (a fresh copy)."""
    return dict(TINY_RUN)

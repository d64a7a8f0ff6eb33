"""End-to-end MNIST training on the real digits: accuracy after a short run, reload and
re-evaluation, and resume from `model_dir` (in-process and through the `handgrad-train` CLI)."""

import csv
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from handgrad.zoo.mnist.models import build_mnist_cnn
from handgrad.zoo.run import registry
from handgrad.zoo.run.evaluate import evaluate_model_dir
from handgrad.zoo.run.train import train_and_evaluate

QUICK = {"data.test_limit": 1000, "training.validate_every_epoch": False}


def _history_epochs(model_dir):
    with open(model_dir / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_short_run_exceeds_95_percent_and_reloads(mnist_dir, tmp_path, capsys):
    # 300 steps of the seed's mini-batch 50 (15 000 digits, a quarter epoch): a wrong gradient in
    # any handgrad layer or loss keeps the model far below 95 %.
    metrics = train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0, overrides={
        "training.epochs": 1, "training.steps_per_epoch": 300, "training.batch_size": 50,
        "training.warmup_epochs": 0.1, "training.learning_rate": 2e-3, "model.bn_momentum": 0.9,
        **QUICK})
    assert metrics["test_accuracy"] > 0.95
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"test_accuracy={metrics['test_accuracy']:.4f}")
    # The saved model reloads (handgrad layers and losses registered) and scores the same.
    again = evaluate_model_dir(None, tmp_path, mnist_dir)
    assert again == metrics
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 10_000
    model = keras.models.load_model(tmp_path / "model.keras")
    assert [type(layer).__module__.split(".")[1] for layer in model.layers
            if "conv" in layer.name] == ["layers"] * 3  # handgrad.layers.Conv2D, not stock
    assert int(model.optimizer.iterations) == 300


def test_resume_continues_from_the_checkpoint(mnist_dir, tmp_path):
    quick = {"training.steps_per_epoch": 20, "training.batch_size": 50, "data.train_limit": 2000,
             "data.test_limit": 500, "training.validate_every_epoch": False}
    train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0,
                       overrides={"training.epochs": 1, **quick})
    first_checkpoint = (tmp_path / "checkpoints" / "epoch_001.weights.h5").stat().st_mtime_ns
    # Rerun with more epochs through the command line, as a user would after an interruption.
    cmd = [sys.executable, "-m", "handgrad.zoo.run.train", "--config=mnist_cnn",
           f"--model_dir={tmp_path}", f"--data_dir={mnist_dir}", "--epochs=2", "--steps=20",
           "--batch_size=50", "--set=data.train_limit=2000",
           "--set=data.test_limit=500", "--set=training.validate_every_epoch=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("test_accuracy=0.") and len(last) == len("test_accuracy=0.1234")
    # Resumed: only epoch index 1 was run the second time (a restart would log 0, 0, 1), the
    # epoch-1 checkpoint was not rewritten, and the optimizer state came back (40 steps, not 20).
    assert _history_epochs(tmp_path) == [0, 1]
    assert (tmp_path / "checkpoints" / "epoch_001.weights.h5").stat().st_mtime_ns == \
        first_checkpoint
    assert (tmp_path / "checkpoints" / "epoch_002.weights.h5").is_file()
    model = keras.models.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations) == 40


def test_handgrad_model_matches_its_stock_twin(mnist_dir):
    # The fig. 10 model from handgrad layers and from keras.layers, with the same weights: the
    # same forward pass and, one SGD step later, the same weights (gradients agree).
    from handgrad.pipelines.mnist import load_arrays

    x = load_arrays(mnist_dir)["test"][0][:32, :, :, None].astype(np.float32) / 255.0
    y = load_arrays(mnist_dir)["test"][1][:32]
    ours, stock = build_mnist_cnn((8, 16, 16)), build_mnist_cnn((8, 16, 16), layers=keras.layers)
    stock.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours.predict(x, verbose=0), stock.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)
    from handgrad.losses import SparseCategoricalCrossentropy

    for model, loss in ((ours, SparseCategoricalCrossentropy()),
                        (stock, keras.losses.SparseCategoricalCrossentropy())):
        model.compile(keras.optimizers.SGD(0.1), loss)
        model.train_on_batch(x, y)
    for a, b in zip(ours.get_weights(), stock.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_bad_override_names_the_known_fields(tmp_path):
    with pytest.raises(ValueError, match=r"has no field 'training\.epoch'.*training\.epochs"):
        train_and_evaluate("mnist_cnn", tmp_path, overrides={"training.epoch": 3})
    assert registry.get_config("mlp").task == "mnist"

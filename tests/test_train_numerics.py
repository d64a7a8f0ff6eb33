"""Training numerics: mixed precision (mixed_float16 + Keras' loss scaling) and the NaN/Inf stop.

Mixed precision reference: the same short run in float32 from the same seed. float16 keeps 11
significant bits; both runs start from the same weights and batches, and each epoch's mean loss
agrees to 5 %: ten Adam steps already amplify float16 rounding and the thread-order noise of
oneDNN's reductions (measured: first-epoch means 1.993 vs 2.040, 2.3 %, in some runs and < 1 %
in others); test accuracy to 5 points (measured: 0.636-0.646 vs 0.648 on 500 digits). A float16
softmax or a missing loss scale would show as Inf/NaN losses or as a loss stuck near log(10).
"""

import csv
import json
import math
import re

import numpy as np
import pytest

from handgrad.zoo.run.resilience import NonFiniteLossError, read_latest
from handgrad.zoo.run.train import train_and_evaluate

TINY = {"model.filters": (8, 16, 16), "training.batch_size": 50, "data.train_limit": 2000,
        "data.test_limit": 500, "training.validate_every_epoch": False,
        "model.bn_momentum": 0.9, "training.warmup_epochs": 0.0}


def _history(model_dir):
    with open(model_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_mixed_precision_trains_without_nan_and_keeps_the_head_float32(mnist_dir, tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # both runs start from the same weights and batches
    three = {**TINY, "training.epochs": 3, "training.steps_per_epoch": 10}
    mixed = train_and_evaluate("mnist_cnn", tmp_path / "mixed", mnist_dir, verbose=0,
                               mixed_precision=True, overrides=three)
    keras.utils.set_random_seed(0)
    reference = train_and_evaluate("mnist_cnn", tmp_path / "fp32", mnist_dir, verbose=0,
                                   overrides=three)
    losses = [float(r["loss"]) for r in _history(tmp_path / "mixed")]
    losses32 = [float(r["loss"]) for r in _history(tmp_path / "fp32")]
    assert all(math.isfinite(v) for v in losses)
    np.testing.assert_allclose(losses, losses32, rtol=5e-2)
    assert losses[-1] < losses[0] - 0.3  # it learns
    assert abs(mixed["test_accuracy"] - reference["test_accuracy"]) < 0.05
    assert keras.config.dtype_policy().name == "float32"  # the global policy was restored
    run = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert run["run"]["mixed_precision"] and run["run"]["optimizer"] == "LossScaleOptimizer"
    model = keras.models.load_model(tmp_path / "mixed" / "model.keras")
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["conv1"] == policies["bn1"] == "mixed_float16"
    assert policies["logits"] == policies["probabilities"] == "float32"


def test_nan_stops_with_step_and_last_finite_loss_and_keeps_the_checkpoint(mnist_dir, tmp_path):
    quick = {**TINY, "training.steps_per_epoch": 5}
    train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0,
                       overrides={**quick, "training.epochs": 1})
    first_model = (tmp_path / "model.keras").read_bytes()
    # Resume for a second epoch with an absurd learning rate: the weights blow up to Inf.
    with pytest.raises(NonFiniteLossError) as info:
        train_and_evaluate("mnist_cnn", tmp_path, mnist_dir, verbose=0, overrides={
            **quick, "training.epochs": 2, "training.learning_rate": 1e30})
    message = str(info.value)
    match = re.search(r"became (nan|inf) at step (\d+); last finite loss: ([0-9.e+-]+)\.",
                      message)
    assert match, message
    assert 6 <= int(match[2]) <= 10  # a step of the second epoch (the first one ran steps 1-5)
    assert 0.1 < float(match[3]) < 1e6
    assert "epoch 1" in message and "state-0001.weights.h5" in message
    assert read_latest(tmp_path / "backup") == {"epoch": 1, "file": "state-0001.weights.h5"}
    assert not (tmp_path / "checkpoints" / "epoch_002.weights.h5").exists()
    assert (tmp_path / "model.keras").read_bytes() == first_model  # not overwritten

"""Task-agnostic evaluation of a trained `model_dir`, and the `handgrad-eval` command.

    handgrad-eval --config=mnist_cnn --model_dir=/tmp/mnist_cnn [--data_dir=DIR]

Loads `model_dir/model.keras` (written by `handgrad-train`), asks the config's task to evaluate
it (MNIST: accuracy on the 10 000 test digits and `model_dir/confusion_matrix.png`), and prints
the metrics, one `name=value` per line, the task's headline metric last. Without `--config`, the
config saved by training in `model_dir/config.json` is used.
"""

import dataclasses
import json
from pathlib import Path

import keras

import handgrad.layers  # noqa: F401  (registers the layers for loading model.keras)
import handgrad.losses  # noqa: F401  (registers the losses)
from handgrad.zoo import configs
from handgrad.zoo.train import apply_overrides, format_metrics


def saved_config(model_dir):
    """The config that `train_and_evaluate` saved in `model_dir/config.json`."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"zoo/evaluate.py: {path} not found; pass --config or train into "
                                "this model_dir first.")
    saved = json.loads(path.read_text())
    name = saved.get("config_name") or next(
        (n for n in configs.CONFIGS if saved.get("model", "").startswith(f"handgrad.zoo.{n}:")),
        None)
    if name is None:
        raise ValueError(f"zoo/evaluate.py: cannot tell which config {path} belongs to; "
                         "pass --config.")
    config = configs.get_config(name)
    fields = {f.name for f in dataclasses.fields(config)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields}
    return dataclasses.replace(config, **values)


def load_trained(model_dir, config=None):
    """`(model, config)` of a `handgrad-train` output folder.

    Args:
        model_dir: holds `model.keras` (and `config.json`, used when `config` is None).
        config: a config name, a config dataclass, or None.
    """
    model_path = Path(model_dir) / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found; train first with "
                                "handgrad-train --model_dir=...")
    if config is None:
        config = saved_config(model_dir)
    elif isinstance(config, str):
        config = configs.get_config(config)
    return keras.models.load_model(model_path), config


def evaluate_model_dir(config, model_dir, data_dir=None, **overrides):
    """Re-measures a trained model: loads `model_dir/model.keras` and runs the task's evaluate.

    Args:
        config: a config name, a config dataclass, or None (use `model_dir/config.json`).
        model_dir: the training output folder. data_dir: as for training.
        **overrides: config fields to replace (e.g. `test_limit=1000`).
    Returns: the task's metrics dict (also printed as `name=value` lines).
    """
    model, config = load_trained(model_dir, config)
    config = apply_overrides(config, **overrides)
    metrics = configs.get_task(config).evaluate(model, config, data_dir, model_dir)
    print(format_metrics(metrics), flush=True)
    return metrics


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    evaluate_model_dir(f.config, f.model_dir, f.data_dir)


def run():
    """Console entry point `handgrad-eval`."""
    from absl import app, flags

    flags.DEFINE_string("config", None, f"Config name ({', '.join(sorted(configs.CONFIGS))}); "
                        "default: the one saved in model_dir/config.json.")
    flags.DEFINE_string("model_dir", None, "Folder holding model.keras (from handgrad-train).")
    flags.DEFINE_string("data_dir", None, "Dataset folder (MNIST: the IDX files); default: TFDS.")
    flags.mark_flag_as_required("model_dir")
    app.run(main)


if __name__ == "__main__":
    run()

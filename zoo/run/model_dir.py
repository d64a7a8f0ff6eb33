"""A training output folder (`model_dir`): its `config.json` and its trained `model.keras`.

`config.json` holds {"config_name", "task", "config": {section: {field: value}}, "run": {what the
run used: strategy, replicas, mixed precision, optimizer}}. A folder written by handgrad 0.1
holds a flat config (every field at the top level); `saved_config` converts it (see
`registry.from_saved`), so old model_dirs still evaluate and export.
"""

import dataclasses
import json
from pathlib import Path

import keras

import handgrad.layers  # noqa: F401  (registers the layers for loading model.keras)
import handgrad.losses  # noqa: F401  (registers the losses)
from handgrad.zoo.run import registry


def config_record(name, config, **run):
    """The dict written to `config.json`."""
    return {"config_name": name, "task": config.task,
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "task"},
            "run": run}


def write_config(model_dir, record):
    """Writes `config.json` (see the module docstring)."""
    (Path(model_dir) / "config.json").write_text(json.dumps(record, indent=2, default=str))


def update_run(model_dir, **values):
    """Adds `values` to the "run" part of `model_dir/config.json` (what the run used)."""
    path = Path(model_dir) / "config.json"
    record = json.loads(path.read_text())
    record["run"] = {**record.get("run", {}), **values}
    write_config(model_dir, record)


def read_record(model_dir):
    """The parsed `config.json`, or None when there is none; ValueError naming the file when it
    is not valid JSON."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); it was written by handgrad-train.") \
            from None


def saved_config(model_dir):
    """The config that `handgrad-train` saved in `model_dir/config.json` (new or 0.1 format)."""
    path = Path(model_dir) / "config.json"
    record = read_record(model_dir)
    if record is None:
        raise FileNotFoundError(f"{path} not found; pass --config or train into this "
                                "model_dir first.")
    name = record.get("config_name")
    if name is None:
        raise ValueError(f"{path} names no config (no 'config_name'); pass --config.")
    return registry.from_saved(name, record.get("config", record))


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
        config = registry.get_config(config)
    return keras.models.load_model(model_path), config

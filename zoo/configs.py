"""Named experiment configs: `get_config("mnist_cnn")` -> a config object for `handgrad-train`.

Each name maps to a `module:function` returning a fresh config (a dataclass); the module is
imported only when its config is asked for. Every config has a `task` attribute naming the task
class in `TASKS` that knows how to build its model, data and evaluation (see `zoo/train.py`).
"""

import importlib

CONFIGS = {
    "mnist_cnn": "handgrad.zoo.mnist_cnn:get_config",
    "mlp": "handgrad.zoo.mlp:get_config",
    "face_small_synthetic": "handgrad.zoo.face_configs:face_small_synthetic",
    "face_resnet50_wider": "handgrad.zoo.face_configs:face_resnet50_wider",
}

TASKS = {
    "mnist": "handgrad.zoo.mnist_task:MnistTask",
    "face": "handgrad.zoo.face_task:FaceTask",
}


def _load(spec):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_config(name):
    """Returns a fresh config for `name`; raises ValueError listing the known names."""
    if name not in CONFIGS:
        raise ValueError(f"Unknown config {name!r}. Known configs: {', '.join(sorted(CONFIGS))}")
    return _load(CONFIGS[name])()


def get_task(config):
    """Returns the task object (model, data, evaluation) for a config."""
    if config.task not in TASKS:
        raise ValueError(f"Unknown task {config.task!r}. Known tasks: {', '.join(sorted(TASKS))}")
    return _load(TASKS[config.task])()

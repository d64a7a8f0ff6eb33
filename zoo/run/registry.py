"""Named configs and tasks, found where they are defined, and dotted `--set` overrides.

    get_config("face_small_synthetic")            -> a fresh `FaceConfig`
    apply_overrides(config, {"anchors.min_size": "10", "training.epochs": 2})
    get_task(config)                              -> the task object (model, data, evaluation)

Every family declares itself in its own `configs.py` below `handgrad/zoo/` (found by walking the
folder, so a new family needs no line here): `TASK` (its task name), `TASK_CLASS`
("module:Class" that builds, feeds and evaluates its models, imported only when asked for),
`CONFIGS` ({name: function returning a fresh config}; or `NAMED_CONFIGS`, the module holding
them), `rules()` (the rule of every field,
checked by `config_rules.check`) and `is_flat` / `from_flat` (reading handgrad 0.1 configs).
"""

import dataclasses
import functools
import importlib
import typing
from pathlib import Path

from handgrad import zoo
from handgrad.zoo.run import config_rules


@functools.cache
def families():
    """{task name: its configs module}, for every `configs.py` below `handgrad/zoo/` that
    declares a `TASK`."""
    root = Path(zoo.__file__).parent
    found = {}
    for path in sorted(root.rglob("configs.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = importlib.import_module(".".join(("handgrad.zoo", *parts)))
        task = getattr(module, "TASK", None)
        if task is not None:
            if task in found:
                raise ValueError(f"task {task!r} is declared twice: {found[task].__name__} and "
                                 f"{module.__name__}")
            found[task] = module
    return found


def _named_configs(module):
    """A family's `CONFIGS`: in its configs module, or in the module its `NAMED_CONFIGS` names
    (where the named configs would make the configs module too long to read)."""
    if hasattr(module, "CONFIGS"):
        return module.CONFIGS
    return importlib.import_module(module.NAMED_CONFIGS).CONFIGS


def configs():
    """{config name: function returning a fresh config}, of every family."""
    named = {}
    for module in families().values():
        for name, make in _named_configs(module).items():
            if name in named:
                raise ValueError(f"config {name!r} is declared twice ({module.__name__})")
            named[name] = make
    return named


def _load(spec):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_config(name):
    """Returns a fresh config for `name`; raises ValueError listing the known names."""
    known = configs()
    if name not in known:
        raise ValueError(f"Unknown config {name!r}. Known configs: {', '.join(sorted(known))}")
    return known[name]()


def family(config):
    """The configs module of `config`'s task."""
    if config.task not in families():
        raise ValueError(f"Unknown task {config.task!r}. Known tasks: "
                         f"{', '.join(sorted(families()))}")
    return families()[config.task]


def get_task(config):
    """Returns the task object (model, data, evaluation) for a config."""
    return _load(family(config).TASK_CLASS)()


def _coerce(value, default, field_type, name):
    """Converts a command-line string to the type of a config field."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    if value.lower() == "none":
        return None
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} expects true/false. Received: {value!r}")
        return value.lower() in ("true", "1")
    try:
        if isinstance(default, tuple | list) or "tuple" in str(field_type):
            return tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v)
                         for v in value.split(","))
        if isinstance(default, int) or "int" in str(field_type):
            return int(value)
        if isinstance(default, float) or "float" in str(field_type):
            return float(value)
    except ValueError:
        raise ValueError(f"{name} expects a value like {default!r}. Received: {value!r}") from None
    return value


def _fields(section):
    return {f.name: f for f in dataclasses.fields(section)}


def _replace(section, path, value, full_name, prefix=""):
    """`section` with the field at the dotted `path` replaced (string values converted)."""
    name, _, rest = path.partition(".")
    fields = _fields(section)
    if not prefix and name == "task":
        raise ValueError(f"'task' is fixed by the config ({section.task}); choose another "
                         "--config instead of --set=task=...")
    if name not in fields:
        dotted = sorted(_dotted_names(section, prefix))
        meant = [d for d in dotted if d.endswith(f".{full_name}")]
        hint = f" Did you mean {' or '.join(repr(d) for d in meant)}?" if meant else ""
        raise ValueError(f"config {type(section).__name__} has no field {full_name!r}.{hint} "
                         f"Known fields: {', '.join(d for d in dotted if d != 'task')}")
    current = getattr(section, name)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{full_name!r}: {name!r} is a value, not a section.")
        return dataclasses.replace(section, **{name: _replace(current, rest, value, full_name,
                                                              f"{prefix}{name}.")})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"{full_name!r} is a section; set one of its fields, e.g. "
                         f"{full_name}.{next(iter(_fields(current)))}=...")
    hints = typing.get_type_hints(type(section))
    return dataclasses.replace(section, **{name: _coerce(value, current, hints.get(name),
                                                         full_name)})


def _dotted_names(config, prefix=""):
    for name in _fields(config):
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            yield from _dotted_names(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def apply_overrides(config, overrides, keep_none=False):
    """A copy of `config` with the dotted fields of `overrides` replaced.

    Args:
        config: a config dataclass with section dataclasses.
        overrides: {"section.field": value}; string values (from the command line) are
            converted to the field's type. An unknown name raises ValueError listing the known
            dotted names.
        keep_none: set None values too (default: a None value means "not given", as an unset
            command-line flag).
    """
    for name, value in overrides.items():
        if value is not None or keep_none:
            config = _replace(config, name, value, name)
    return config


def validate(config):
    """Checks every field of `config` against its family's `rules()` (`config_rules.check`): a
    value no run can use raises ValueError naming its dotted field. Returns `config`."""
    return config_rules.check(config, family(config).rules())


def resolve_config(config, overrides=None):
    """A config object from a name or a config, with `overrides` applied, validated."""
    if isinstance(config, str):
        config = get_config(config)
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a config name or a dataclass. "
                        f"Received: {type(config).__name__}")
    return validate(apply_overrides(config, overrides or {}))


def from_saved(name, saved):
    """The config named `name` with the values of a saved dict: nested sections, or a handgrad
    0.1 flat dict (converted by its task's configs module)."""
    config = get_config(name)
    module = family(config)
    if module.is_flat(saved):
        sections = module.from_flat(saved)
    else:
        sections = {k: v for k, v in saved.items() if isinstance(v, dict)}
    overrides = {f"{section}.{field}": tuple(value) if isinstance(value, list) else value
                 for section, fields in sections.items() for field, value in fields.items()}
    return validate(apply_overrides(config, overrides, keep_none=True))

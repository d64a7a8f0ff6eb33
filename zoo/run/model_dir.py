"""A training output folder (`model_dir`): its `config.json`, its trained `model.keras`, and what
may be written into it.

`config.json` holds {"config_name", "task", "config": {section: {field: value}}, "run": {what the
run used: strategy, replicas, mixed precision, optimizer}}. A folder written by handgrad 0.1
holds a flat config (every field at the top level); `saved_config` converts it (see
`registry.from_saved`), so old model_dirs still evaluate and export.

Nothing a user owns is overwritten: `check_can_train` (called before anything is written) accepts
only an absent or empty folder, or one holding a config.json written by handgrad-train for a run
this command can resume: the same config, and the same values of the fields that shape the saved
training state (`RESUME_FIXED`).
"""

import dataclasses
import json
import tempfile
import zipfile
from pathlib import Path

import keras

import handgrad.layers  # noqa: F401  (registers the layers for loading model.keras)
import handgrad.losses  # noqa: F401  (registers the losses)
from handgrad.zoo.run import atomic, locking, registry

# Fields whose change makes a saved training state unloadable (variable shapes) or silently
# dropped (Keras skips an optimizer state with other slots): a rerun may not change them.
RESUME_FIXED = ("model.", "anchors.", "training.optimizer", "run.mixed_precision")


def config_record(name, config, **run):
    """The dict written to `config.json`."""
    return {"config_name": name, "task": config.task,
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "task"},
            "run": run}


def write_config(model_dir, record):
    """Writes `config.json` (see the module docstring), atomically."""
    atomic.write_json_atomically(Path(model_dir) / "config.json", record)


def read_record(model_dir):
    """The parsed `config.json`, or None when there is none; ValueError naming the file when it
    is not a JSON object with a config name and a task."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the config.json written by "
                         "handgrad-train.") from None
    if not isinstance(record, dict) or not {"config_name", "task"} <= set(record):
        raise ValueError(f"{path}: not a config.json written by handgrad-train (expected a JSON "
                         "object with 'config_name', 'task' and 'config').")
    return record


def saved_config(model_dir):
    """The config that `handgrad-train` saved in `model_dir/config.json` (new or 0.1 format)."""
    path = Path(model_dir) / "config.json"
    record = read_record(model_dir)
    if record is None:
        raise FileNotFoundError(f"{path} not found; pass --config or train into this "
                                "model_dir first.")
    if record["config_name"] is None:
        raise ValueError(f"{path} names no config ('config_name' is null); pass --config.")
    try:
        return registry.from_saved(record["config_name"], record.get("config", record))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _flat(config, run):
    """{dotted name: value} of a config's fields, plus `run.<key>` entries."""
    out = {f"run.{k}": v for k, v in run.items()}
    for section, fields in dataclasses.asdict(config).items():
        if isinstance(fields, dict):
            out.update({f"{section}.{k}": v for k, v in fields.items()})
    return out


def check_writable(model_dir):
    """Raises PermissionError naming `model_dir` and the cause when it, or one of the folders of
    an earlier run in it (backup/, checkpoints/, logs/), cannot take a new file: otherwise
    resuming there fails after the first epoch inside TF with a PermissionDeniedError. Tried by
    creating (and removing) a file, since os.access answers yes for root on a folder without
    write permission and knows nothing of read-only mounts."""
    model_dir = Path(model_dir)
    for folder in (model_dir, *(model_dir / name for name in ("backup", "checkpoints", "logs"))):
        if not folder.is_dir():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            where = "" if folder == model_dir else f" ({folder.name}/)"
            raise PermissionError(
                f"--model_dir={model_dir} is not writable{where}: {e.strerror or e}. Make it "
                "writable, or copy the run to a writable folder and rerun there.") from e


def check_can_train(model_dir, record, config):
    """Raises ValueError, before anything is written, when `model_dir` cannot take this run
    (PermissionError when it cannot be written, `check_writable`).

    Accepted: an absent or empty folder (hidden files and other workers' `worker_*` folders
    aside), or one whose config.json is a run of the same config (`record["config_name"]`) with
    the same `RESUME_FIXED` values. The message names both configs or the differing fields.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise ValueError(f"--model_dir={model_dir} is a file; expected a folder (new or from "
                         "an earlier handgrad-train run).")
    check_writable(model_dir)
    saved = read_record(model_dir) if model_dir.is_dir() else None
    if saved is None:
        foreign = sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(
            (".", "worker_"))) if model_dir.is_dir() else []
        if foreign:
            raise ValueError(
                f"--model_dir={model_dir} is not empty ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}) and holds no config.json written by "
                "handgrad-train: refusing to write a run among files it did not write. Use a "
                "new or empty folder.")
        return
    path = model_dir / "config.json"
    new_name, old_name = record["config_name"], saved["config_name"]
    if saved["task"] != config.task or (new_name is not None and new_name != old_name):
        raise ValueError(
            f"--model_dir={model_dir} holds a run of config {old_name!r} (task {saved['task']}, "
            f"{path}); this command asks for config {new_name or type(config).__name__!r} (task "
            f"{config.task}). Rerun with --config={old_name} to resume it, or use another "
            "--model_dir.")
    before = _flat(saved_config(model_dir), saved.get("run", {}))
    after = _flat(config, record.get("run", {}))
    differ = [f"{name}={before[name]!r} -> {after[name]!r}" for name in sorted(after)
              if name.startswith(RESUME_FIXED) and name in before and before[name] != after[name]]
    if differ:
        raise ValueError(
            f"--model_dir={model_dir} holds a run of {old_name} whose training state this "
            f"command could not resume: it changes {', '.join(differ)}. Use the saved values "
            f"({path}) or another --model_dir.")


def load_model_file(path):
    """`keras.models.load_model(path)`, with errors that name the file and what is wrong."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras file (not a zip archive): it is truncated or "
                         "damaged. Rerun the handgrad-train command of this model_dir: it "
                         "rewrites model.keras from the last training state.")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # Keras raises many kinds for a damaged archive
        raise ValueError(f"{path} could not be loaded ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}).") from None


def load_trained(model_dir, config=None):
    """`(model, config)` of a `handgrad-train` output folder.

    Args:
        model_dir: holds `model.keras` (and `config.json`, used when `config` is None).
        config: a config name, a config dataclass, or None. Its task must be the saved run's.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model_dir={model_dir} does not exist; expected the output "
                                "folder of handgrad-train.")
    model_path = model_dir / "model.keras"
    busy = locking.holder(model_dir)
    if busy is not None:  # its model.keras is an earlier run's, or not yet written
        raise locking.FolderInUseError(
            f"--model_dir={model_dir} is being trained by {busy}: its model.keras is written "
            "when that training ends. Wait for it to end, then rerun this command.")
    if not model_path.is_file():
        hint = ("training has not finished: rerun its handgrad-train command to resume it"
                if (model_dir / "backup").is_dir() else
                "train first with handgrad-train --model_dir=...")
        raise FileNotFoundError(f"{model_path} not found; {hint}.")
    record = read_record(model_dir)
    if config is None:
        config = saved_config(model_dir)
    elif isinstance(config, str):
        config = registry.get_config(config)
    if record is not None and record["task"] != config.task:
        raise ValueError(
            f"--model_dir={model_dir} holds a {record['task']} model (config "
            f"{record['config_name']!r}, config.json); the config given is a {config.task} "
            "config. Leave --config out to use the saved one.")
    return load_model_file(model_path), config

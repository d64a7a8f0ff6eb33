"""Crash-safe checkpoints, a NaN/Inf stop and bit-reproducible runs for `train.py`.

Crash safety (`AtomicBackup`): at the end of every epoch the whole training state (weights,
optimizer slots and step counter: Keras' `save_weights` of a compiled model) is written to a
temporary file in `model_dir/backup/`, flushed to disk, and renamed to
`state-<epoch>.weights.h5`; only then is the pointer `backup/latest.json` replaced, again by
write-to-temporary + `os.replace` (atomic on POSIX). A process killed at any instant therefore
leaves `latest.json` naming a complete state; a half-written temporary is never named and is
deleted on the next start. The per-epoch weights `checkpoints/epoch_NNN.weights.h5` (the same
content) are written the same way, and so are `model.keras` and `config.json`.

Resuming (`Resume`, the first callback of a run): the state named by `latest.json` is loaded and
training continues at the epoch after it (epochs run after it are redone: the resume granularity
is one epoch); the log says `resuming from epoch N of M (<state file>)`. When the pointer is
missing, empty or invalid, or its state file is damaged (truncated, unreadable), the newest state
that loads (backup states, then the per-epoch checkpoints) is used, and a warning names the
damaged file, why it was passed over, and the state used instead. A state of another model (other
shapes) is an error, never silently skipped.

Every file is written through `atomic.write_atomically` (a temporary file, `fsync`, a rename);
a full disk raises `atomic.DiskFullError` naming the file and the free space, after removing the
temporary file, and the last good state stays named by `latest.json`. The `HANDGRAD_FAULT` hooks
that kill or fill the disk halfway through a checkpoint are described in `atomic.py`.

NaN/Inf (`NonFiniteGuard`): after every training step the loss is checked; on the first NaN or
Inf, training stops, no checkpoint of that epoch is written (the last good one stays the one
named by `latest.json`), and `train_and_evaluate` raises `NonFiniteLossError` naming the step
and the last finite loss (Keras reports the running mean of the epoch's losses after each step;
that is the value quoted).

Determinism (`enable_determinism`): `keras.utils.set_random_seed(seed)` (Python, NumPy, TF and
Keras seeds: initial weights, shuffling, augmentation) plus
`tf.config.experimental.enable_op_determinism()` (no non-deterministic kernels; tf.data keeps
its element order). Two CPU runs with the same seed and flags then give bit-identical weights.
Op determinism is process-wide and slows some GPU kernels down.
"""

import errno
import json
import logging
import math
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from handgrad.zoo.run import cli
from handgrad.zoo.run.atomic import (
    DiskFullError,
    write_atomically,
    write_json_atomically,
)

LATEST = "latest.json"
_EPOCH = re.compile(r"^(?:state-|epoch_)(\d+)\.weights\.h5$")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss; the message names the step and last finite loss."""


def enable_determinism(seed):
    """Seeds Python, NumPy, TF and Keras with `seed` and turns on TF op determinism."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _state_bytes(model, like):
    """Expected size of a state file: the newest existing one's, else the variables' bytes."""
    if like is not None and like.is_file():
        return like.stat().st_size
    variables = list(model.variables) + list(getattr(model.optimizer, "variables", []))
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_weights_atomically(model, path, fault_epoch=None, like=None):
    """`model.save_weights(path)` through a temporary file and a rename (`write_atomically`);
    `like`: a previous state file whose size predicts this one's."""
    write_atomically(path, lambda tmp: model.save_weights(str(tmp), overwrite=True),
                     needed=_state_bytes(model, like), fault_epoch=fault_epoch)


# Keras finds a class of a .keras file only among registered ones (serialization_lib imports a
# module by its recorded name only for keras' own packages), so a Python that has not imported
# handgrad fails with "Could not locate class 'Conv2D'" and no hint: the hint sits beside the file.
LOAD_HINT = """This folder's model.keras uses handgrad's layers (hand-derived gradients).
Load it with

    import handgrad  # registers handgrad's layers, losses and models with Keras
    import keras
    model = keras.models.load_model("model.keras")

Without `import handgrad`, Keras stops at "Could not locate class 'Conv2D'" (or another handgrad
class): it only knows the classes registered in the running Python.
"""
LOAD_HINT_FILE = "LOADING.md"


def write_load_hint(folder):
    """Writes `LOAD_HINT` as `folder/LOADING.md`, beside a model.keras (atomically)."""
    target = Path(folder) / LOAD_HINT_FILE
    write_atomically(target, lambda tmp: Path(tmp).write_text(LOAD_HINT),
                     needed=len(LOAD_HINT))


def save_model_atomically(model, path):
    """`model.save(path)` (a `.keras` file) through a temporary file and a rename, with the
    loading hint (`LOADING.md`) beside it."""
    write_atomically(path, lambda tmp: model.save(str(tmp)), needed=_state_bytes(model, None))
    write_load_hint(Path(path).parent)


def read_latest(backup_dir):
    """The `latest.json` record `{"epoch": E, "file": name}`, or None when there is none.

    Raises ValueError naming the file when it is empty or invalid or names a missing state.
    """
    path = Path(backup_dir) / LATEST
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        epoch, name = int(record["epoch"]), str(record["file"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is empty or invalid (expected "
                         '{"epoch": E, "file": "state-....weights.h5"})') from None
    if not (Path(backup_dir) / name).is_file():
        raise ValueError(f"{path} names {name}, which is missing")
    return {"epoch": epoch, "file": name}


def saved_states(backup_dir, checkpoint_dir=None):
    """`[(epoch, path)]` of every saved training state, newest epoch first (a backup state
    before the per-epoch checkpoint of the same epoch)."""
    found = []
    for rank, folder in enumerate((backup_dir, checkpoint_dir)):
        if folder is None or not Path(folder).is_dir():
            continue
        for path in Path(folder).iterdir():
            match = _EPOCH.match(path.name)
            if match and path.is_file():
                found.append((-int(match.group(1)), rank, path))
    return [(-neg, path) for neg, _, path in sorted(found)]


def restore(model, backup_dir, checkpoint_dir=None):
    """Loads the newest intact training state into `model`; returns `(epoch, path)` or None.

    The state named by `latest.json` comes first; when the pointer or its file is damaged, the
    next states are tried newest first and a warning names what was passed over and why, and
    the state used. Raises ValueError when states exist but none loads (naming each and why),
    or when a state holds another model (other variable shapes).
    """
    problems = []
    try:
        record = read_latest(backup_dir)
    except ValueError as e:
        record, problems = None, [str(e)]
    candidates = saved_states(backup_dir, checkpoint_dir)
    if record is not None:
        named = (record["epoch"], Path(backup_dir) / record["file"])
        candidates = [named] + [c for c in candidates if c[1] != named[1]]
    elif candidates and not problems:
        problems.append(f"{Path(backup_dir) / LATEST} is missing")
    for epoch, path in candidates:
        try:
            model.load_weights(str(path))
        except (OSError, KeyError) as e:
            problems.append(f"{path} cannot be read ({' '.join(str(e).split())})")
            continue
        except ValueError as e:
            raise ValueError(
                f"cannot resume from {path}: it holds the training state of another model or "
                f"optimizer ({' '.join(str(e).split())[:300]}). Rerun with the config and "
                "flags of the run that wrote it, or use another --model_dir.") from None
        if problems:
            logging.warning("%s; resuming from the newest intact state, %s (epoch %d)",
                            "; ".join(problems), path, epoch)
        return epoch, path
    if problems:
        raise ValueError(f"no intact training state to resume from: {'; '.join(problems)}. "
                         f"Nothing in {backup_dir} can be loaded: move it aside to start "
                         "training over.")
    return None


def resume_hint(backup_dir):
    """What a rerun of an interrupted training command does (for the Ctrl-C line)."""
    try:
        record = read_latest(backup_dir)
    except ValueError:
        record = None
    if record is None:
        return "no epoch had finished; rerun the same command to start again"
    return f"rerun the same command to resume from epoch {record['epoch']}"


class Resume(keras.callbacks.Callback):
    """The first callback of a run: restores the newest intact state (`restore`) and sets the
    initial epoch; logs `resuming from epoch N of M (<file>)`; then calls `then()` (train.py
    writes config.json there: only once the state has loaded, nothing else having been written).

    Args: backup_dir, checkpoint_dir: as for `AtomicBackup`. then: optional callable.
    """

    def __init__(self, backup_dir, checkpoint_dir=None, then=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.then = then
        self.resumed_epoch = 0

    def on_train_begin(self, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.backup_dir, self.checkpoint_dir):
            for stale in folder.glob(".tmp-*") if folder and folder.is_dir() else ():
                stale.unlink()  # left by a process killed mid-write
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        found = restore(self.model, self.backup_dir, self.checkpoint_dir)
        if found is not None:
            self.resumed_epoch = found[0]
            self.model._initial_epoch = found[0]  # as keras.callbacks.BackupAndRestore
            logging.info("resuming from epoch %d of %s (%s)", found[0],
                         self.params.get("epochs", "?"), found[1])
        if self.then is not None:
            self.then()


class AtomicBackup(keras.callbacks.Callback):
    """Resumable training state, written atomically at the end of every epoch (last callback).

    Args:
        backup_dir: folder for `state-<epoch>.weights.h5` and `latest.json`.
        checkpoint_dir: if given, also writes `epoch_NNN.weights.h5` there.
        keep: how many states to keep (older ones are deleted after the pointer moved).
        guard: a `NonFiniteGuard`; nothing is written once it has tripped.
    """

    def __init__(self, backup_dir, checkpoint_dir=None, keep=2, guard=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.keep = keep
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.tripped:
            return
        done = epoch + 1
        name = f"state-{done:04d}.weights.h5"
        states = sorted(self.backup_dir.glob("state-*.weights.h5"))
        with cli.deferred_interrupt():  # a finished epoch is not lost to a Ctrl-C
            self._write(done, name, states)

    def _write(self, done, name, states):
        try:
            save_weights_atomically(self.model, self.backup_dir / name, fault_epoch=done,
                                    like=states[-1] if states else None)
            write_json_atomically(self.backup_dir / LATEST, {"epoch": done, "file": name})
            for old in sorted(self.backup_dir.glob("state-*.weights.h5"))[:-self.keep]:
                old.unlink()
            if self.checkpoint_dir is not None:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
                save_weights_atomically(self.model,
                                        self.checkpoint_dir / f"epoch_{done:03d}.weights.h5",
                                        like=self.backup_dir / name)
        except DiskFullError as e:
            raise DiskFullError(errno.ENOSPC, f"{e.strerror}. Training stopped after epoch "
                                f"{done}; {last_good_state(self.backup_dir)} Free some space "
                                "and rerun the same command to resume.") from None


def last_good_state(backup_dir):
    """A sentence naming the state a rerun resumes from."""
    try:
        record = read_latest(backup_dir)
    except ValueError as e:
        return f"{e}: a rerun resumes from the newest intact state."
    if record is None:
        return "no epoch had finished, so there is no checkpoint."
    return (f"the last good checkpoint (epoch {record['epoch']}) is kept in "
            f"{Path(backup_dir) / record['file']}.")


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss; remembers the step and last finite loss."""

    def __init__(self):
        super().__init__()
        self.tripped = False
        self.last_finite = None
        self.bad_step = None
        self.bad_value = None

    def on_train_batch_end(self, batch, logs=None):
        loss = None if logs is None else logs.get("loss")
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer else batch + 1
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            self.last_finite = loss
            return
        self.tripped = True
        self.bad_step = step
        self.bad_value = loss
        self.model.stop_training = True

    def error(self, backup_dir=None):
        """The `NonFiniteLossError` describing the trip."""
        state = "" if backup_dir is None else last_good_state(backup_dir)
        where = f" {state[:1].upper()}{state[1:]}" if state else ""
        last = "none (the first step was already non-finite)" if self.last_finite is None \
            else f"{self.last_finite:.6g}"
        return NonFiniteLossError(
            f"the training loss became {self.bad_value} at step {self.bad_step}; "
            f"last finite loss: {last}. Training stopped.{where} Lower the learning rate, "
            "check the input data, or use --mixed_precision=false.")

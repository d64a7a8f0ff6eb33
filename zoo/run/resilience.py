"""Crash-safe checkpoints, a NaN/Inf stop and bit-reproducible runs for `train.py`.

Crash safety (`AtomicBackup`): at the end of every epoch the whole training state (weights,
optimizer slots and step counter: Keras' `save_weights` of a compiled model) is written to a
temporary file in `model_dir/backup/`, flushed to disk, and renamed to
`state-<epoch>.weights.h5`; only then is the pointer `backup/latest.json` replaced, again by
write-to-temporary + `os.replace` (atomic on POSIX). A process killed at any instant therefore
leaves `latest.json` naming a complete state; a half-written temporary is never named and is
deleted on the next start. On start, the state named by `latest.json` is loaded and training
continues at the epoch after it (epochs run after it are redone: the resume granularity is one
epoch). The per-epoch weights `checkpoints/epoch_NNN.weights.h5` are written the same way.

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

Fault injection for the crash test: the environment variable `HANDGRAD_FAULT` set to
`kill_in_checkpoint:<E>` SIGKILLs the process halfway through writing the backup of epoch E
(the temporary file is truncated to half, as an interrupted write leaves it). Unset, nothing
happens.
"""

import json
import math
import os
import signal
from pathlib import Path

import keras
import tensorflow as tf

LATEST = "latest.json"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss; the message names the step and last finite loss."""


def enable_determinism(seed):
    """Seeds Python, NumPy, TF and Keras with `seed` and turns on TF op determinism."""
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _fsync_replace(tmp, final):
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _fault(kind):
    """The integer of `HANDGRAD_FAULT=<kind>:<N>`, or None."""
    name, _, value = os.environ.get("HANDGRAD_FAULT", "").partition(":")
    return int(value) if name == kind and value else None


def write_json_atomically(path, data):
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data))
    _fsync_replace(tmp, path)


def save_weights_atomically(model, path, fault_epoch=None):
    """`model.save_weights(path)` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")  # keeps the .weights.h5 suffix Keras asks for
    model.save_weights(str(tmp), overwrite=True)
    if fault_epoch is not None and _fault("kill_in_checkpoint") == fault_epoch:
        with open(tmp, "rb+") as f:
            f.truncate(tmp.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    _fsync_replace(tmp, path)


def read_latest(backup_dir):
    """The `latest.json` record `{"epoch": E, "file": name}` or None when there is none."""
    path = Path(backup_dir) / LATEST
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not (Path(backup_dir) / record["file"]).is_file():
        raise FileNotFoundError(f"{path} names {record['file']}, which is "
                                "missing; delete the backup folder to start over.")
    return record


class AtomicBackup(keras.callbacks.Callback):
    """Resumable training state, written atomically at the end of every epoch.

    Args:
        backup_dir: folder for `state-<epoch>.weights.h5` and `latest.json`.
        checkpoint_dir: if given, also writes `epoch_NNN.weights.h5` (model weights only) there.
        keep: how many states to keep (older ones are deleted after the pointer moved).
        guard: a `NonFiniteGuard`; nothing is written once it has tripped.
    """

    def __init__(self, backup_dir, checkpoint_dir=None, keep=2, guard=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.keep = keep
        self.guard = guard
        self.resumed_epoch = 0

    def on_train_begin(self, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.backup_dir.glob(".tmp-*"):  # left by a process killed mid-write
            stale.unlink()
        record = read_latest(self.backup_dir)
        if record is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self.backup_dir / record["file"]))
        self.resumed_epoch = int(record["epoch"])
        self.model._initial_epoch = self.resumed_epoch  # as keras.callbacks.BackupAndRestore

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.tripped:
            return
        done = epoch + 1
        name = f"state-{done:04d}.weights.h5"
        save_weights_atomically(self.model, self.backup_dir / name, fault_epoch=done)
        write_json_atomically(self.backup_dir / LATEST, {"epoch": done, "file": name})
        states = sorted(self.backup_dir.glob("state-*.weights.h5"))
        for old in states[:-self.keep]:
            old.unlink()
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_weights_atomically(self.model,
                                    self.checkpoint_dir / f"epoch_{done:03d}.weights.h5")


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
        where = ""
        if backup_dir is not None:
            record = read_latest(backup_dir)
            where = (f" The last good checkpoint (epoch {record['epoch']}) is kept in "
                     f"{Path(backup_dir) / record['file']}." if record else
                     " No epoch had finished, so there is no checkpoint.")
        last = "none (the first step was already non-finite)" if self.last_finite is None \
            else f"{self.last_finite:.6g}"
        return NonFiniteLossError(
            f"the training loss became {self.bad_value} at step {self.bad_step}; "
            f"last finite loss: {last}. Training stopped.{where} Lower the learning rate, "
            "check the input data, or use --mixed_precision=false.")

"""One command at a time per output folder: an exclusive lock on a `--model_dir` or `--export_dir`.

    with locking.hold(model_dir, "handgrad-train", flag="--model_dir"):
        ...  # the whole run

The lock is an OS file lock (`filelock.FileLock`: `flock` on POSIX) on `.<folder name>.lock`
beside the folder (the folder itself may not exist yet, and a file inside it would be a file the
run did not write); links are resolved first, so `current -> real` and `real` share one lock.
The OS drops the lock when its process ends, however it ends: a lock left by a killed process
never blocks a rerun. The holder writes who it is (pid, host, command line, since when) into
`.<folder name>.lock.json` beside the lock, so that a second command is refused in one line
naming it:

    FolderInUseError: --model_dir=runs/c is in use by another command: handgrad-train (pid 4242
    on host gpu1, since 2026-05-01 10:02:11, `handgrad-train --config=mnist_cnn ...`). Wait for
    it to end, or use another --model_dir.

The lock file stays after release (deleting it would let two processes lock two different files
of one name); the info file is removed on release.
"""

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
from pathlib import Path

import filelock

from handgrad.zoo.run import atomic


class FolderInUseError(OSError):
    """Another live process holds the folder's lock; the message names it."""


def lock_paths(folder):
    """(lock file, info file) of `folder` (links resolved): siblings of the folder."""
    folder = Path(folder).resolve()
    parent, name = (folder.parent, folder.name) if folder.name else (folder, "")
    return parent / f".{name}.lock", parent / f".{name}.lock.json"


def _holder(info_path):
    """A sentence naming the process that holds the lock, from its info file."""
    try:
        info = json.loads(info_path.read_text())
        argv = info["argv"] if len(info["argv"]) <= 200 else info["argv"][:200] + " ..."
        return (f"{info['command']} (pid {info['pid']} on host {info['host']}, since "
                f"{info['since']}, `{argv}`)")
    except (OSError, ValueError, KeyError, TypeError):
        return f"a process that has not (yet) written {info_path}"


def holder(folder):
    """A sentence naming the live process that holds `folder`'s lock, or None when none does.

    For commands that only read a folder another command writes (handgrad-eval and
    handgrad-export read a --model_dir): the lock is taken and released at once, and no lock
    file is created where there is none (no command has ever locked the folder)."""
    lock_path, info_path = lock_paths(folder)
    if not lock_path.is_file():
        return None
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return _holder(info_path)
    except OSError:
        return None  # a lock file this user cannot open is no sign of a live writer
    lock.release()
    return None


@contextlib.contextmanager
def hold(folder, command, flag="--model_dir"):
    """Holds the exclusive lock of `folder` while the block runs.

    Args:
        folder: the output folder (need not exist; its parent is created).
        command: the command's name, recorded for a refused second command (`handgrad-train`).
        flag: how the folder was given, for the message (`--model_dir`, `--export_dir`).
    Raises `FolderInUseError` at once (without waiting) when another process holds it.
    """
    lock_path, info_path = lock_paths(folder)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(lock_path), timeout=0)
        lock.acquire()
    except filelock.Timeout:
        raise FolderInUseError(
            f"{flag}={folder} is in use by another command: {_holder(info_path)}. Wait for it to "
            f"end, or use another {flag}.") from None
    except OSError as e:
        raise OSError(e.errno, f"cannot create the lock file {lock_path} that keeps two commands "
                      f"from writing into {flag}={folder} at once: {e.strerror}") from None
    try:
        atomic.write_json_atomically(info_path, {
            "command": command, "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            "argv": shlex.join(sys.argv)})
        yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()

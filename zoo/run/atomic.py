"""Files written whole or not at all, and a full disk reported in one line naming the file.

`write_atomically(path, write)` is the one writer of every file the commands write (training
states, `model.keras`, `config.json`, lock records, handgrad-detect's result files and PNGs):
`write(tmp)` writes a temporary sibling `.tmp-<pid>-<name>` (the suffix is kept, as Keras'
`save_weights` and `save` require; the pid keeps two processes apart), the file is flushed to
disk (`fsync`) and renamed over `path` with `os.replace` (atomic on POSIX). A process killed at
any instant leaves `path` as it was plus, at worst, a `.tmp-*` file that the next training start
deletes (`resilience.Resume`). On any failure the temporary file is removed.

Full disk: a write that fails with ENOSPC / EDQUOT raises `DiskFullError` "the disk is full: no
space left on the device (12 kB free) while writing <path>"; with `needed`, a free space below
it is refused before a byte is written ("1 kB free, about 2.0 MB needed"). h5py reports its
failed clean-up of a half-written file on stderr; that noise is dropped (the error itself is
raised once). `is_disk_full` and `disk_full_error` let writers that do not go through here
(handgrad-export's SavedModel) report a full disk the same way.

Fault injection for the tests, through the environment variable `HANDGRAD_FAULT`:
`kill_in_checkpoint:<E>` SIGKILLs the process halfway through writing the backup of epoch E (the
temporary file is truncated to half, as an interrupted write leaves it);
`disk_full_in_checkpoint:<E>` makes that write fail as on a full disk (half a temporary file
written, then OSError ENOSPC). Unset, nothing happens.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import tensorflow as tf

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A file write failed for lack of disk space (errno ENOSPC); the message names the file
    and the free space."""


def shown(path):
    """`path` for a one-line message: as it is, or escaped (`ascii`) when it holds a line break
    or other unprintable characters (undecodable bytes of a file name)."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def size_text(n):
    """`n` bytes as `12 kB`, `2.0 MB`, `1.5 GB`."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else (
        f"{n / 1e3:.0f} kB")


def free_bytes(path):
    """Free bytes on the disk of `path` (of its nearest existing folder)."""
    folder = Path(path).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _disk_full(path, detail):
    return DiskFullError(errno.ENOSPC, f"the disk is full: {detail} while writing {shown(path)}")


def is_disk_full(error):
    """Whether `error` is a write that failed for lack of space: an OSError ENOSPC / EDQUOT, or
    TensorFlow's error for one (a ResourceExhaustedError carrying the OS's message, e.g. from
    `tf.saved_model.save`)."""
    if isinstance(error, OSError):
        return error.errno in _FULL
    return isinstance(error, tf.errors.OpError) and any(os.strerror(n) in str(error)
                                                        for n in _FULL)


def disk_full_error(path):
    """The `DiskFullError` of a write of `path` that failed for lack of space, naming the free
    space left."""
    return _disk_full(path, f"no space left on the device ({size_text(free_bytes(path))} free)")


def _check_free_space(path, needed):
    free = free_bytes(path)
    if needed is not None and free < needed:
        raise _disk_full(path, f"{size_text(free)} free, about {size_text(needed)} needed")


@contextlib.contextmanager
def _h5py_cleanup_noise_dropped_on_failure():
    """Holds back stderr and unraisable-exception reports while a file is written.

    After a failed write h5py's object destructors print a traceback per object (Cython prints
    it, then reports it as unraisable); the write error itself is raised, so on failure these
    are dropped. On success whatever was written to stderr is passed on.
    """
    held, previous_hook = io.StringIO(), sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        with contextlib.redirect_stderr(held):
            yield
        sys.stderr.write(held.getvalue())  # reached on success only
    finally:
        sys.unraisablehook = previous_hook


def _fault(kind):
    """The integer of `HANDGRAD_FAULT=<kind>:<N>`, or None."""
    name, _, value = os.environ.get("HANDGRAD_FAULT", "").partition(":")
    return int(value) if name == kind and value else None


def _inject_fault(tmp, epoch):
    if epoch in (_fault("kill_in_checkpoint"), _fault("disk_full_in_checkpoint")):
        with open(tmp, "rb+") as f:
            f.truncate(tmp.stat().st_size // 2)
    if _fault("kill_in_checkpoint") == epoch:
        os.kill(os.getpid(), signal.SIGKILL)
    if _fault("disk_full_in_checkpoint") == epoch:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))


def write_atomically(path, write, *, needed=None, overwrite=True, fault_epoch=None):
    """Calls `write(tmp)` for a temporary sibling of `path`, flushes it, renames it to `path`.

    Args:
        path: the final file (its folder is created). write: writes a file at the path given.
        needed: bytes the file is expected to take (checked against the free space first).
        overwrite: when False, a file that exists at `path` by the time of the rename (one that
            appeared since the caller's check) is a FileExistsError.
        fault_epoch: the epoch for the `HANDGRAD_FAULT` hooks (module docstring), or None.
    On any failure the temporary file is removed and `path` is untouched; a full disk raises
    `DiskFullError` naming `path` and the free space.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # keeps .weights.h5, .keras
    _check_free_space(path, needed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _h5py_cleanup_noise_dropped_on_failure():
            write(tmp)
            if fault_epoch is not None:
                _inject_fault(tmp, fault_epoch)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if not overwrite and (path.is_file() or path.is_symlink()):
            raise FileExistsError(f"{shown(path)} appeared during the run: refusing to "
                                  "overwrite it")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FULL:
            raise disk_full_error(path) from None
        raise


def write_json_atomically(path, data):
    """`data` as indented JSON at `path` (`write_atomically`)."""
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2,
                                                                      default=str)))

"""Folders written by the data-set generators (`synthetic_faces`, `wider_geometry`).

Each generated folder holds a marker file (`HANDGRAD_SYNTHETIC.json`,
`HANDGRAD_WIDER_GEOMETRY.json`) naming its generator, the options it was made with, whether it
is complete, and a summary. A generator writes only into a folder it may own (`claim`): absent,
empty, or holding its own marker, whose previous outputs are then replaced; anything else (a
user's photos, the MNIST folder, a real WIDER FACE copy) is refused before anything is written.
The marker is written first with `"complete": false` and rewritten with `true` last, so a set
cut short by a crash is regenerated rather than used.
"""

import json
import shutil
from pathlib import Path

import numpy as np


def check_integer(name, value, low, high=None):
    """Raises ValueError naming `name` unless `value` is an integer (not a bool) in
    `low..high`. Generators call it for every option before `claim`, so a bad option writes
    nothing (no folder, no marker)."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            or (high is not None and value > high)):
        expected = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {expected}. Received: {name}={value!r}")


def read_marker(out_dir, marker, generator):
    """The marker dict that `generator` wrote in `out_dir`, or None (absent, unreadable, or
    another generator's)."""
    path = Path(out_dir) / marker
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("generator") == generator else None


def is_finished(marker_record, options, data_dir, kind):
    """Whether a generator's marker (`read_marker`) describes a finished set made with `options`.

    None or an unfinished set -> False (generate it); a finished set made with other options ->
    ValueError naming them (never overwritten); a finished matching set -> True (use it).
    """
    if marker_record is None or not marker_record.get("complete"):
        return False
    differ = {k: (marker_record.get(k), v) for k, v in options.items()
              if marker_record.get(k) != v}
    if differ:
        raise ValueError(f"data_dir={data_dir} holds a {kind} set made with other options "
                         f"(found, expected): {differ}. Use another data_dir.")
    return True


def is_ready(out_dir, marker, generator, options, kind, recognise=None):
    """Whether `out_dir` holds a finished set of `generator` made with `options` (False: absent
    or unfinished, generate it; ValueError: finished with other options), or, with no marker, a
    complete set that `recognise(out_dir)` knows from before markers existed."""
    record = read_marker(out_dir, marker, generator)
    if is_finished(record, options, out_dir, kind):
        return True
    return (record is None and recognise is not None and Path(out_dir).is_dir()
            and recognise(out_dir))


def write_marker(out_dir, marker, generator, options, *, complete, summary=None):
    """Writes `out_dir/marker`: {"generator", **options, "complete", "summary"}."""
    record = {"generator": generator, **options, "complete": complete, "summary": summary}
    (Path(out_dir) / marker).write_text(json.dumps(record, indent=1) + "\n")


def claim(out_dir, marker, generator, options, outputs, recognise=None):
    """Makes `out_dir` ready for `generator`; returns it as a Path.

    Args:
        out_dir: the folder to generate into.
        marker, generator: the marker file's name and the generator's name.
        options: the generation options, recorded in the (incomplete) marker written here.
        outputs: the names the generator writes at the top of `out_dir` (removed when the
            folder already holds a set of this generator).
        recognise: optional `f(out_dir) -> bool` recognising a complete set of this generator
            written before markers existed (by its layout).
    Raises NotADirectoryError when `out_dir` is a file, FileExistsError when it is a non-empty
    folder that is not a set of this generator.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir={out_dir} exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        ours = read_marker(out_dir, marker, generator) is not None or (
            recognise is not None and recognise(out_dir))
        if not ours:
            found = sorted(p.name for p in out_dir.iterdir())
            raise FileExistsError(
                f"out_dir={out_dir} is not empty ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}) and has no {marker} from {generator}: "
                "refusing to write into a folder that is not a set it generated. Use a new or "
                "empty folder.")
        for name in outputs:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, marker, generator, options, complete=False)
    return out_dir

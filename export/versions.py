"""TF Serving's versioned layout of an export folder: `BASE/<version>/saved_model.pb`.

    exports/face/            the folder TF Serving watches (`--model_base_path`)
        1/  saved_model.pb, variables/, model.keras ...   a complete export
        2/  ...                                            a later one: TF Serving serves the
                                                           highest version
A version is a folder whose name is a non-negative integer (TF Serving's convention; other names
are ignored by the server). `handgrad-export` adds version `1 + the highest present`, written
into a hidden temporary folder beside it and renamed into place in one rename, and never changes
an earlier version (export.py).
"""

import re
from pathlib import Path

_VERSION = re.compile(r"^\d+$")


def versions(base):
    """The version numbers of the version folders in `base` (links resolved), ascending; [] for
    a folder without any, or a missing one."""
    base = Path(base).resolve()
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if _VERSION.match(p.name) and p.is_dir())


def latest_version(base):
    """The folder of the highest version in `base` (what TF Serving serves), or None."""
    base = Path(base)
    names = [p.name for p in base.resolve().iterdir() if _VERSION.match(p.name) and p.is_dir()] \
        if base.is_dir() else []
    return base / max(names, key=int) if names else None


def saved_model_path(path):
    """The SavedModel folder that `path` stands for: `path` itself when it holds saved_model.pb
    (a version folder, or an export of the single-folder layout), else its highest version
    (`latest_version`), else `path` (for the caller's "no saved_model.pb" error)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    return latest_version(path) or path

"""Writing results safely: atomic replaces and never-overwritten numbered files.

A failure halfway through a write must never corrupt or lose what was already written, so
every file is written to a temporary sibling and then renamed over its target in one step.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import UsageError


def umask_mode(mode: int) -> int:
    """`mode` as the process umask leaves it (what open() and mkdir() would create)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` via a temporary file and an atomic rename (the file gets the
    usual umask permissions, not the temporary file's owner-only ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode(0o666))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def new_numbered_path(directory: str | Path, stem: str, suffix: str) -> Path:
    """A path `directory/NNNN_stem.suffix` that does not exist yet (claimed atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name.split("_", 1)[0]) for p in directory.glob(f"*_{stem}{suffix}")
                if p.name.split("_", 1)[0].isdigit()]
    number = max(existing, default=0) + 1
    while True:
        path = directory / f"{number:04d}_{stem}{suffix}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            number += 1
            continue
        os.close(fd)
        return path


def _not_a_folder(path: Path) -> Path | None:
    """The first existing path among `path` and its parents when it is not a folder."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def ensure_dir(path: str | Path, flag: str) -> Path:
    """Create the output folder `path` (given by option `flag`) now, before any work is done;
    a path under a file, a device or a read-only place is a one-line UsageError."""
    path = Path(path)
    if blocker := _not_a_folder(path):
        raise UsageError(f"{flag} {path}: {blocker} is a file, not a folder; pass another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create that folder "
                         f"({exc.strerror or type(exc).__name__}); pass another {flag}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: the folder is not writable; pass another {flag}")
    return path


def ensure_file_target(path: str | Path, flag: str) -> Path:
    """Check, before any work is done, that a file can be written at `path` (given by option
    `flag`): not a folder, its folder created and writable; else a one-line UsageError."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; pass a file path, e.g. {flag} "
                         f"{path / 'baseline.json'}")
    ensure_dir(path.parent, flag)
    return path


def write_error(path: str | Path, exc: OSError, kept: str) -> UsageError:
    """The one-line error for a write to `path` that failed (a full disk, a read-only place),
    saying what was kept (`kept`)."""
    return UsageError(f"cannot write {path} ({exc.strerror or type(exc).__name__}); {kept}")

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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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

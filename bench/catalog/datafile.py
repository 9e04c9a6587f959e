"""Data files as tasks: a `.csv` or `.npz` file named by its path wherever a task name goes.

A file task is written as one string, the *task reference*: the file's absolute path, and,
when the defaults are overridden, a query `?label=COLUMN&kind=KIND` (`/data/houses.csv?label=
price&kind=regression`). That string is what a RunSpec and every stored run record hold; tables
show the short name `display_name` gives (the file's stem). Reading validates everything once
(missing or unreadable file, unknown extension, ragged rows, NaN or inf, one class only, a label
column that does not exist: each a one-line UsageError) and infers the kind: two integer (or
text) classes make a binary task, more make a multiclass one, floats a regression. Class labels
become indices 0..C-1 in sorted order. The file's sha256 goes with the data, so a changed file
is a different task (and the RunSpec records the hash).

Only numpy is needed here; splitting and standardising are `bench.catalog.tasks`' (the same
splitter as the built-in real data sets).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from bench.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

SUFFIXES = (".csv", ".npz")
# the label column when none is named: the first of these the header has, in this order, so
# "x,y,label" takes label (y is often a coordinate)
LABEL_NAMES = ("label", "target", "class", "y")
KINDS = ("binary", "multiclass", "regression")
MIN_PER_CLASS = 3  # a class with fewer examples cannot appear in all three splits


@dataclass(frozen=True)
class FileRef:
    """A data file task: absolute path, label column and kind overrides (None: inferred)."""

    path: Path
    label_column: str | None = None
    kind: str | None = None

    def key(self) -> str:
        """The task reference: the one string a RunSpec holds for this file task."""
        query = {k: v for k, v in (("label", self.label_column), ("kind", self.kind)) if v}
        return str(self.path) + (f"?{urlencode(query)}" if query else "")


def looks_like_path(name: str) -> bool:
    """True when a task name can only be a file: it has a folder part or an extension."""
    return "/" in name or os.sep in name or Path(name.split("?", 1)[0]).suffix != ""


def parse_ref(name: str, base: str | Path | None = None) -> FileRef:
    """The FileRef of a task reference (a relative path is taken from `base`, else the
    current folder); an unknown extension or option is a UsageError."""
    text, _, query = name.partition("?")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    path = Path(os.path.normpath(path))
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"task {name!r}: unknown data file extension {path.suffix or '(none)'!r}; "
                         f"give a .csv (header row) or .npz (arrays x and y) file, or a task "
                         "name from `bench list`")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - {"label", "kind"})
    if unknown:
        raise UsageError(f"task {name!r}: unknown option(s) {', '.join(unknown)}; a data file "
                         "takes ?label=COLUMN and ?kind=binary|multiclass|regression")
    return make_ref(path, options.get("label") or None, options.get("kind") or None)


def make_ref(path: str | Path, label_column: str | None = None, kind: str | None = None,
             base: str | Path | None = None) -> FileRef:
    """A FileRef from its parts (the command line's --label-column and --task-kind)."""
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown task kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if label_column is not None and path.suffix.lower() == ".npz":
        raise UsageError(f"{path.name}: a label column applies to .csv files; an .npz file "
                         "holds its labels in array y")
    return FileRef(Path(os.path.normpath(path)), label_column, kind)


def display_name(name: str) -> str:
    """A task's short name for tables: a file task's stem (with its label column), else the
    name itself. Needs no file, so a report can name runs whose file is gone."""
    if not looks_like_path(name):
        return name
    text, _, query = name.partition("?")
    label = dict(parse_qsl(query)).get("label") if query else None
    return Path(text).stem + (f"[{label}]" if label else "")


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex); a missing or unreadable file is a UsageError."""
    if not path.exists():
        raise UsageError(f"data file {path} not found; check the path (relative paths start at "
                         "the current folder, or at the study file's folder in a study)")
    if not path.is_file():
        raise UsageError(f"data file {path} is not a file; give a .csv or .npz file")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UsageError(f"data file {path}: cannot read it: {exc.strerror or exc}; "
                         "fix its permissions") from None
    return digest.hexdigest()


@dataclass(frozen=True)
class FileData:
    """A data file's validated contents: features, labels as indices or floats, the kind."""

    x: np.ndarray  # float64 [N, *shape]
    y: np.ndarray  # int64 class indices, or float64 targets
    kind: str
    n_classes: int  # 0 for regression
    sha256: str
    description: str


def read(ref: FileRef) -> FileData:
    """Read and validate a data file (cached per path, options and content hash)."""
    return _read(ref, sha256_of(ref.path))


@functools.lru_cache(maxsize=16)
def _read(ref: FileRef, sha: str) -> FileData:
    where = ref.path.name
    if ref.path.suffix.lower() == ".csv":
        x, labels, label_name, n_features = _read_csv(ref, where)
        described = f"{n_features} features, label column {label_name!r}"
    else:
        x, labels = _read_npz(ref, where)
        described = f"arrays x {list(x.shape)} and y"
    x, y, kind, n_classes = check_xy(x, labels, ref.kind, where,
                                     '--task-kind {kind} (task_kind = "{kind}" in a study)')
    text = f"data file {ref.path} ({len(y)} rows, {described}; sha256 {sha[:12]})"
    return FileData(x, y, kind, n_classes, sha, text)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_csv(ref: FileRef, where: str) -> tuple[np.ndarray, list[Any], str, int]:
    import numpy as np

    try:
        with open(ref.path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte offset {exc.start}); save the file as "
                         "UTF-8 CSV") from None
    except (OSError, csv.Error) as exc:
        raise UsageError(f"{where}: cannot read it as CSV: {exc}") from None
    if len(rows) < 2:
        raise UsageError(f"{where}: needs a header row and at least one data row, found "
                         f"{len(rows)} row(s)")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise UsageError(f"{where}: the header has {len(header)} column; a task needs at least "
                         "one feature column and a label column (comma-separated)")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:  # a label column named twice is ambiguous, and so is a chart of a feature
        raise UsageError(f"{where}: the header names column {repeated[0]!r} more than once; "
                         "give each column its own name")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"{where}: line {number} has {len(row)} fields but the header has "
                             f"{len(header)}; every row needs one value per column")
    if ref.label_column is not None:
        if ref.label_column not in header:
            raise UsageError(f"{where}: no column {ref.label_column!r}; its columns are "
                             f"{', '.join(header)} (--label-column / label_column)")
        label_at = header.index(ref.label_column)
    else:
        label_at = _label_at(header, where)
    features = [i for i in range(len(header)) if i != label_at]
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float64)
    for r, row in enumerate(rows[1:]):
        for c, i in enumerate(features):
            value = _number(row[i])
            if value is None:
                raise UsageError(f"{where}: line {r + 2}, column {header[i]!r}: {row[i]!r} is not "
                                 "a number; features must be numeric")
            x[r, c] = value
    labels = [row[label_at].strip() for row in rows[1:]]
    return x, labels, header[label_at], len(features)


def _label_at(header: list[str], where: str) -> int:
    """The label column's index when none is named: the first name of LABEL_NAMES the header
    has (any case), else the last column. Two columns that differ only in case (Label,
    label) are ambiguous: a usage error that names the flag."""
    for name in LABEL_NAMES:
        found = [i for i, h in enumerate(header) if h.lower() == name]
        if len(found) > 1:
            raise UsageError(f"{where}: columns {' and '.join(repr(header[i]) for i in found)} "
                             "could each be the label; name one with --label-column "
                             "(label_column in a study file)")
        if found:
            return found[0]
    return len(header) - 1


def _read_npz(ref: FileRef, where: str) -> tuple[np.ndarray, list[Any] | np.ndarray]:
    import zipfile

    import numpy as np

    try:
        with np.load(ref.path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise UsageError(f"{where}: no array {' or '.join(missing)}; an .npz task holds "
                                 f"arrays x [N, ...] and y [N] (found: "
                                 f"{', '.join(archive.files) or 'none'})")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{where}: cannot read it as .npz: {exc}; save it with "
                         "numpy.savez(path, x=x, y=y)") from None
    if x.dtype.kind not in "biuf":
        raise UsageError(f"{where}: x has dtype {x.dtype}; features must be numbers")
    return x.astype(np.float64), y


def _labels_as_numbers(labels: list[Any] | np.ndarray) -> tuple[np.ndarray, bool] | None:
    """Labels as a float array and whether they are all whole numbers; None for text labels."""
    import numpy as np

    arr = np.asarray(labels)
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64), True
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        return arr.astype(np.float64), bool(np.all(arr[finite] == np.round(arr[finite])))
    values = [_number(str(v)) for v in arr.tolist()]
    if any(v is None for v in values):
        return None
    numbers = np.asarray(values, dtype=np.float64)
    whole = all(str(v).strip().lstrip("+-").isdigit() for v in arr.tolist())
    return numbers, whole


def check_xy(x: Any, labels: Any, kind: str | None, where: str,
             kind_hint: str = 'kind="{kind}"') -> tuple[np.ndarray, np.ndarray, str, int]:
    """Validate features and labels (as arrays, tensors or lists) and settle the kind: returns
    x (float64), y (int64 indices 0..C-1, or float64 targets), the kind and the class count."""
    import numpy as np

    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    raw = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise UsageError(f"{where}: y has shape {list(raw.shape)}; give one label per example "
                         "(shape [N])")
    if x.dtype.kind not in "biuf":
        raise UsageError(f"{where}: x has dtype {x.dtype}; features must be numbers")
    x = x.astype(np.float64)
    if x.ndim == 0:
        raise UsageError(f"{where}: x is a single number; give one row of features per "
                         "example (shape [N, D])")
    if x.ndim == 1:
        x = x[:, None]
    if math.prod(x.shape[1:]) == 0:
        raise UsageError(f"{where}: x has shape {list(x.shape)}, with no features; give at "
                         "least one feature column per example")
    n = len(raw)
    if x.shape[0] != n:
        raise UsageError(f"{where}: x has {x.shape[0]} rows but y has {n} labels; give one label "
                         "per example")
    if n < 3 * MIN_PER_CLASS:
        raise UsageError(f"{where}: {n} examples are too few to split into training, "
                         f"validation and test sets; give at least {3 * MIN_PER_CLASS}")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise UsageError(f"{where}: x holds NaN or inf (first at example {bad[0]}); remove or "
                         "impute those values")
    numeric = _labels_as_numbers(raw)
    if numeric is not None and not np.all(np.isfinite(numeric[0])):
        bad = int(np.argwhere(~np.isfinite(numeric[0]))[0][0])
        raise UsageError(f"{where}: y holds NaN or inf (first at example {bad}); remove those "
                         "examples")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"{where}: unknown task kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind is None:
        kind = "regression" if numeric is not None and not numeric[1] else "classes"
    if kind == "regression":
        if numeric is None:
            raise UsageError(f"{where}: the labels are text, not numbers; a regression task needs "
                             "numeric targets (or drop the kind override to classify)")
        return x, numeric[0], "regression", 0
    if numeric is not None and not numeric[1]:
        raise UsageError(f"{where}: the labels are not whole numbers, so they cannot be classes; "
                         f"use {kind_hint.format(kind='regression')}")
    keys = numeric[0].astype(np.int64) if numeric is not None else np.asarray(
        [str(v) for v in np.asarray(raw).tolist()])
    classes, y = np.unique(keys, return_inverse=True)
    if len(classes) < 2:
        raise UsageError(f"{where}: every label is {classes[0].item()!r}: one class only; a "
                         "classification task needs at least two")
    if kind == "classes":
        kind = "binary" if len(classes) == 2 else "multiclass"
    if kind == "binary" and len(classes) != 2:
        raise UsageError(f"{where}: {len(classes)} classes cannot be a binary task; use "
                         f"{kind_hint.format(kind='multiclass')}")
    counts = np.bincount(y)
    if counts.min() < MIN_PER_CLASS:
        rare = classes[int(np.argmin(counts))].item()
        raise UsageError(f"{where}: class {rare!r} has {int(counts.min())} example(s); each class "
                         f"needs at least {MIN_PER_CLASS} to appear in the training, validation "
                         "and test sets")
    return x, y.astype(np.int64), kind, len(classes)


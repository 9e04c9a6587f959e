"""The hostile and faulty-input catalogue: one table of cases, run by tests/test_catalogue.py.

Each area keeps its rows in a module of this package (`storage.py`, `studies.py`, `report.py`,
...) as a list `CASES`; `all_cases()` concatenates them into the one table. A case runs
`bench ARGV...` in-process in a fresh working folder, after writing `files` there and calling
`setup(folder)`. It then asserts:

- the exit code is `code` (2: a usage error, 1: a failure on its merits, 0: success);
- for a non-zero code, stderr is exactly one line (plus an optional progress bar), matches the
  regex `stderr` and holds no traceback;
- every file in `files` (and every file `setup` wrote, hashed before the run) is still there with
  the same bytes, except the paths in `may_change`; every path in `absent` does not exist;
- `secret`, when given, appears nowhere: not on stdout or stderr, not in any file under the
  folder;
- `check(folder)`, when given, passes (assertions the table cannot say).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One row of the catalogue: a command, what it must exit with, and what must survive."""

    id: str
    argv: tuple[str, ...]
    code: int
    stderr: str = ""  # regex searched in stderr (case-insensitive)
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    may_change: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    secret: str | None = None
    stdout: str = ""  # regex searched in stdout (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None  # further assertions on the folder afterwards
    no_cuda: bool = False  # run as on a machine without CUDA, whatever this one has


def all_cases() -> list[Case]:
    """Every area's CASES, in module order; ids are unique."""
    import tests.catalogue as pkg

    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"tests.catalogue.{info.name}")
        cases.extend(getattr(module, "CASES", []))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), f"repeated case ids: {sorted({i for i in ids if ids.count(i) > 1})}"
    return cases

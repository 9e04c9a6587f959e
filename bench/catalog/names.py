"""Name lookups: the one message for a name that is not in a table (the catalog's bottom)."""

from __future__ import annotations

from typing import TypeVar

from bench.errors import UsageError

T = TypeVar("T")


def lookup(kind: str, table: dict[str, T], name: str, plural: str = "", also: str = "") -> T:
    """`table[name]`, or a UsageError naming the valid names (one message for every lookup);
    `also` names what else is valid (e.g. a data file's path for a task)."""
    try:
        return table[name]
    except KeyError:
        raise UsageError(f"unknown {kind} {name!r}; valid {plural or kind + 's'}: "
                         f"{', '.join(table)}{also}") from None

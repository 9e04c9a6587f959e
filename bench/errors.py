"""Exceptions that carry a one-line, user-facing message naming the fix."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user (a name, a value, a file): the CLI prints it and exits 2."""


class DataUnavailableError(UsageError):
    """A data set's files are absent and could not be downloaded; the message says how to get them."""

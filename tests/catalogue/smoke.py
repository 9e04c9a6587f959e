"""Cases for the CLI's own argument handling."""

from tests.catalogue import Case

CASES = [
    Case("cli-unknown-command", ("nosuch",), 2, stderr=r"invalid choice"),
    Case("cli-no-command", (), 2),
]

"""The `bench` command: a thin dispatcher over one module per subcommand.

Each module in `bench/commands/` declares `NAME`, `HELP`, `configure(parser)` and
`run(args) -> int`; it is found automatically, so adding a command touches no shared file.
Modules are imported only when their command runs, except for building `--help`, so that
`bench time` works on a machine with torch alone (no optuna, no pandas).

Exit codes: 0 success, 1 a check or run that failed on its merits, 2 usage errors (bad names,
impossible values, missing files), each reported on one line that names the fix.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from bench.errors import UsageError

# Subcommand order in --help; commands not listed come after, alphabetically.
ORDER = ("list", "run", "reproduce", "sweep", "time", "perf", "report", "check")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the fix, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"bench: error: {message} (see `{self.prog} --help`)\n")


def _command_modules() -> list[str]:
    import bench.commands as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand found in `bench.commands`."""
    parser = _Parser(prog="bench", description="Benchmark and sweep small PyTorch networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in _command_modules():
        module = importlib.import_module(f"bench.commands.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bench` console script and `python -m bench`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print("bench: error: name a command, e.g. `bench list`; see `bench --help` for all of them",
              file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; results already written are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

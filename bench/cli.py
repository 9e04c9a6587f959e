"""The `bench` command: a thin dispatcher over one module per subcommand.

Each module in `bench/commands/` declares `NAME`, `HELP`, `configure(parser)` and
`run(args) -> int`; it is found automatically, so adding a command touches no shared file.
Modules are imported only when their command runs, except for building `--help`, so that
`bench time` works on a machine with torch alone (no optuna, no pandas).

Exit codes: 0 success, 1 a check or run that failed on its merits, 2 usage errors (bad names,
impossible values, missing files, a full disk or read-only folder), each reported on one line that
names the fix. Anything else that goes wrong is one line too (exit 1); the traceback is printed
only with `bench --debug ...` or `NNBENCH_DEBUG=1`. SIGTERM unwinds like Ctrl-C, so every
command's clean-up runs and what was written stays intact (exit 143). No line shows a password:
every password in the command line is masked in whatever is printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from bench.errors import UsageError
from bench.sweeps.storage import display_url, mask_secret, os_reason

PLUGIN_HELP = ("load tasks and models from a Python file or module (repeatable; plugins are code: "
               "only what you name is loaded, plus installed nnbench.plugins entry points)")

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
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an unexpected error (also NNBENCH_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in _command_modules():
        module = importlib.import_module(f"bench.commands.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.add_argument("--plugin", action="append", default=None, metavar="PATH|MODULE",
                       help=PLUGIN_HELP)
        p.set_defaults(_module=module)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clean-up (`finally`) runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    del signum, frame
    raise Terminated


def _urls(argv: Sequence[str]) -> list[str]:
    """The database URLs on the command line (also as --storage=URL), and anything else
    `display_url` would not show as typed (user:pw@host without its scheme), to mask in
    anything printed."""
    values = [a.split("=", 1)[1] if a.startswith("--") and "=" in a else a for a in argv]
    return [v for v in values if "://" in v or ("@" in v and display_url(v) != v)]


def _one_line(text: str, urls: list[str]) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    for url in urls:
        line = mask_secret(line, url)
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bench` console script and `python -m bench`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("NNBENCH_DEBUG", "") not in ("", "0") or "--debug" in argv
    urls = _urls(argv)
    previous = None
    if threading_is_main():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except UsageError as exc:
        print(f"bench: error: {_one_line(str(exc), urls)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; results already written are kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bench list | head`: the reader has gone; nothing to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python's documented idiom)
        return 141
    except Terminated:
        print("bench: stopped by SIGTERM; results already written are kept", file=sys.stderr)
        return 143
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        print(f"bench: error: cannot use{where}: {os_reason(exc)}; free space, fix the "
              "permissions or choose another path (results already written are kept)",
              file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"bench: error: unexpected {type(exc).__name__}: {_one_line(str(exc), urls)} "
              "(run again with --debug or NNBENCH_DEBUG=1 for the traceback, and please report "
              "it)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_is_main() -> bool:
    """True in the main thread, the only one that may install signal handlers."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The subparser of command `name` (its prog is `bench NAME`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise LookupError(name)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that an unknown argument after the command is that command's error,
    pointing at `bench COMMAND --help` rather than `bench --help`."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        owner = parser
        if (args.command in argv and extras[0] in argv
                and argv.index(args.command) < argv.index(extras[0])):
            owner = _command_parser(parser, args.command)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command is None:
        print("bench: error: name a command, e.g. `bench list`; see `bench --help` for all of them",
              file=sys.stderr)
        return 2
    if args.plugin:
        from bench.catalog.plugins import load_plugins

        load_plugins(args.plugin)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

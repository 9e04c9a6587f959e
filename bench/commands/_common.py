"""Argument parsing and output helpers shared by the `bench` subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from bench.errors import UsageError
from bench.numbers import NO_VALUE, fmt_num
from bench.spec import MAX_SEED

MAX_SEEDS = 100_000  # seeds one command line may ask for (each is a run)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '1,3,5' -> [1, 3, 5]; '7' -> [7]. Seeds are 0..2**32-1, at most
    MAX_SEEDS of them (a range is sized before it is listed, so '0-1000000000' fails at once)."""
    ranges: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                ranges.append((lo, hi))
            else:
                ranges.append((int(part), int(part)))
    except ValueError:
        raise UsageError(f"bad --seeds {text!r}; use a range like 0-4 or a list like 0,1,2") from None
    if any(lo < 0 or hi > MAX_SEED for lo, hi in ranges):
        raise UsageError(f"bad --seeds {text!r}; seeds are integers from 0 to {MAX_SEED}, e.g. 0-4")
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_SEEDS:
        raise UsageError(f"--seeds {text!r} asks for {count:,} runs, above {MAX_SEEDS:,}; "
                         "use fewer seeds, e.g. 0-9")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    # a repeated seed is the same run twice: a false confidence interval
    refuse_repeats(seeds, f"--seeds {text!r}", "e.g. 0-4", lambda seed: f"seed {seed}")
    return seeds


def refuse_repeats(values: Sequence[Any], flag: str, example: str,
                   shown: Callable[[Any], str] = str) -> None:
    """A UsageError naming the first value `values` holds twice (the same measurement or run
    twice, counted as two); `shown` writes a value as the user typed it."""
    seen: set[Any] = set()  # every caller's values are hashable (numbers, text, None)
    for value in values:
        if value in seen:
            raise UsageError(f"{flag} names {shown(value)} more than once; give each value "
                             f"once, {example}")
        seen.add(value)


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """'20,20,20' -> (20, 20, 20); '' or 'none' -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise UsageError(f"bad {flag} {text!r}; use comma-separated integers like 20,20") from None


def parse_positive_ints(text: str, flag: str, allow: tuple[str, ...] = ()) -> list[int | None]:
    """'16,64,full' -> [16, 64, None] (a word in `allow` stands for None); all positive."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{flag} needs at least one value; e.g. {flag} 16,64")
    out: list[int | None] = []
    for part in parts:
        if part in allow:
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise UsageError(f"{flag} takes positive integers{' or ' + allow[0] if allow else ''}"
                             f", got {part!r}; e.g. {flag} 16,64") from None
        if value <= 0:
            raise UsageError(f"{flag} values must be positive, got {value}; e.g. {flag} 16,64")
        out.append(value)
    return out


def parse_float_pair(text: str, flag: str) -> tuple[float, float]:
    """'0.9,0.999' -> (0.9, 0.999)."""
    try:
        a, b = (float(p) for p in text.split(","))
    except ValueError:
        raise UsageError(f"bad {flag} {text!r}; use two numbers like 0.9,0.999") from None
    return a, b


def parse_batch_size(text: str) -> int | None:
    """An integer, or 'full' for full-batch gradient descent (None)."""
    if text.lower() == "full":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"bad --batch-size {text!r}; use an integer or 'full'") from None


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a text-table cell: `digits` significant digits by the one rule of
    `bench.numbers.fmt_num` ('0.9625', '13,900'), '—' for None and NaN."""
    return fmt_num(value, sig=digits, missing=NO_VALUE)


def print_table(headers: list[str], rows: list[list[str]], file: TextIO | None = None) -> None:
    """Aligned plain-text table (on stdout unless `file` is given)."""
    file = file if file is not None else sys.stdout
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=file)


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when it is a terminal (or `enabled`); yields an `advance(n)` callback."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield lambda n: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """--json: machine-readable output only on stdout."""
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")


THREADS_HELP = ("torch CPU threads while training (default: %(default)s: tiny models are bound by "
                "per-operation overhead, and extra threads only contend; restored afterwards)")


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """--threads N (default 1) for a command that trains; see `check_threads`."""
    parser.add_argument("--threads", type=int, default=1, metavar="N", help=THREADS_HELP)


def check_threads(threads: int) -> int:
    """`threads` when it is a thread count torch can use, else a one-line UsageError."""
    from bench.measure.timing import MAX_THREADS  # loads torch: only when the command runs

    if not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, got {threads}; "
                         "e.g. --threads 1")
    return threads

"""`bench check`: compare quality and speed of both engines with the committed baseline.

Exit 0 when every row holds, 1 on a regression (the table names the rows), 2 on usage errors
(missing or malformed baseline, a baseline measured under another configuration).
"""

from __future__ import annotations

import argparse
import sys

from bench.errors import UsageError
from bench.measure import check
from bench.measure.check import DEFAULT_BASELINE
from bench.store import ensure_file_target

NAME = "check"
HELP = "regression check: quality and speed against results/baselines/check.json"


def configure(parser: argparse.ArgumentParser) -> None:
    """--baseline PATH, --update, --quick."""
    parser.add_argument("--baseline", default=str(DEFAULT_BASELINE), metavar="PATH",
                        help=f"baseline JSON file (default {DEFAULT_BASELINE})")
    parser.add_argument("--update", action="store_true",
                        help="measure afresh and rewrite the baseline (atomically), keeping its "
                             "rules when the file already exists")
    parser.add_argument("--quick", action="store_true",
                        help="fewer seeds and speed repeats (same code path); compares only "
                             "with a baseline written with --quick")


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Measure, then either rewrite the baseline or compare with it and print the table."""
    config = check.CheckConfig.make(quick=args.quick)
    if args.update:
        ensure_file_target(args.baseline, "--baseline")  # before measuring: fail fast
        if not check.replaceable_by_update(args.baseline):
            raise UsageError(f"--baseline {args.baseline} exists and is not a baseline; "
                             "--update would replace it: pass the baseline's path, e.g. "
                             f"--baseline {DEFAULT_BASELINE}")
        rules = check.rules_for_update(args.baseline)
        measurement = check.measure(config, _progress)
        path = check.write_baseline(args.baseline, check.build_baseline(measurement, rules))
        print(f"baseline written to {path}")
        return 0
    baseline = check.load_baseline(args.baseline)  # before measuring: fail fast on a bad path
    check.comparable(baseline, config, args.baseline)
    measurement = check.measure(config, _progress)
    rows = check.compare(baseline, measurement)
    print(check.render(baseline, measurement, rows))
    return 0 if all(r.ok for r in rows) else 1

"""`bench report`: studies, timings and the reproduction table as tables, charts and a page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UsageError

NAME = "report"
HELP = "write tables (CSV), seaborn charts, index.html and report.md from studies and timings"


def configure(parser: argparse.ArgumentParser) -> None:
    """--storage, --out, --timing, --reproduce, --no-boundaries, --svg, --jobs, --zip."""
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL (sqlite:///..., postgresql://...) or a journal "
                             "file; default: results/optuna.db, else results/optuna.journal")
    parser.add_argument("--out", default="results/report", metavar="DIR",
                        help="report folder: new, empty or an earlier report (marked by its "
                             ".nnbench-report file), replaced as a whole when done; any other "
                             "folder or file is refused untouched (default: %(default)s)")
    parser.add_argument("--timing", nargs="*", metavar="JSON",
                        help="timing files (default: results/timing/*.json and "
                             "results/baselines/timing*.json)")
    parser.add_argument("--reproduce", default="results/reproduce.csv", metavar="CSV",
                        help="reproduction table (default: %(default)s)")
    parser.add_argument("--no-boundaries", action="store_true",
                        help="skip the decision-boundary charts (drawn from the final "
                             "parameters the sweep kept, without torch; a model given as code, "
                             "or one kept without parameters, loads torch and may retrain)")
    parser.add_argument("--svg", action="store_true",
                        help="also write every chart as SVG beside its PNG (vector, for papers; "
                             "about 40%% more drawing time); default: PNG only")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="processes that draw the charts (default: the CPU cores this "
                             "process may use; 1 draws them in this process)")
    parser.add_argument("--zip", action="store_true",
                        help="also write the report folder as one archive to send, DIR.zip "
                             "beside it (its links are relative: it works once unpacked)")


def run(args: argparse.Namespace) -> int:
    """Build the report (and its archive with --zip); print where and what it could not show."""
    from bench.report.build import build_report, check_zip_target, zip_report
    from bench.sweeps.storage import default_storage_url, mask_secret, missing_storage_reason

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}; e.g. --jobs 2")
    if args.storage and (reason := missing_storage_reason(args.storage)):
        # a typo here would otherwise swap a good report for an empty one
        raise UsageError(f"{mask_secret(reason, args.storage)}: check the --storage path, or "
                         "leave --storage out for the default storage")
    if args.zip:
        check_zip_target(args.out)  # before anything is built: never the user's own file
    storage = args.storage or default_storage_url()
    timing = None if args.timing is None else [Path(p) for p in args.timing]
    result = build_report(storage, args.out, timing_paths=timing,
                          reproduce_path=args.reproduce, boundaries=not args.no_boundaries,
                          svg=args.svg, jobs=args.jobs)
    print(f"report: {result.out / 'index.html'} ({len(result.charts)} charts, "
          f"{sum(1 for f in result.files if f.suffix == '.csv')} tables)")
    for note in result.notes:
        print(f"  note: {note}")
    for line in result.skipped:  # what needs a plugin or file absent here: said on stderr too
        print(f"bench report: {line}", file=sys.stderr)
    for m in result.missing:
        print(f"  not shown: {m.question} (needs {m.needs})")
    if args.zip:
        print(f"archive: {zip_report(result.out)}")
    return 0

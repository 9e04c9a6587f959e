"""`bench sweep STUDY.toml|DIR ...`: run or resume Optuna studies from study files."""

from __future__ import annotations

import argparse
import os
import sys

from bench.commands._common import check_threads
from bench.engines.registry import engine_names
from bench.errors import UsageError

NAME = "sweep"
HELP = "run or resume Optuna studies from studies/*.toml (seeded repeats, batched trials)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Study files or folders, storage, trial/seed overrides, workers, quiet."""
    parser.add_argument("studies", nargs="+", metavar="STUDY",
                        help="study files (.toml) or folders of them, e.g. studies/")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage: a journal file path (default "
                             "results/optuna.journal) or a URL such as "
                             "postgresql://user@host/db shared by workers on several hosts")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="finished trials wanted (overrides the study file's `trials`)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds per trial (overrides `seeds`; a stored study must match)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on this host (default 1)")
    parser.add_argument("--engine", default="auto", choices=engine_names(),
                        help="training engine (default auto: batched for groups)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch CPU threads per worker (default 1: tiny models are bound "
                             "by per-operation overhead, and extra threads only contend)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no summary lines")
    parser.add_argument("--no-limits", action="store_true",
                        help="allow work estimated above the budget's bounds (hours of training; "
                             "what cannot fit in memory is refused anyway)")


def _store_plugins(specs: list, storage_url: str | None) -> None:
    """Each study that uses plugins records them (user attribute "plugins") before it trains,
    so an interrupted sweep's report can still name them."""
    if not any(spec.plugins for spec in specs):
        return
    from bench.sweeps.optuna_study import open_study
    from bench.sweeps.storage import open_storage
    from bench.sweeps.study import store_plugins

    storage = open_storage(storage_url)
    for spec in specs:
        if spec.plugins:
            store_plugins(spec, open_study(spec, storage))


def run(args: argparse.Namespace) -> int:
    """Parse every study first (all errors before anything runs), then sweep each in turn."""
    from bench.engines.clock import num_threads
    from bench.sweeps.study import load_study_file, study_paths
    from bench.sweeps.sweep import sweep

    specs = [load_study_file(p, no_limits=args.no_limits).with_overrides(
        trials=args.trials, seeds=args.seeds, no_limits=args.no_limits)
        for p in study_paths(args.studies)]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"several study files share the study name(s) {', '.join(repeated)}; "
                         "give each a distinct `name`")
    most = 4 * (os.cpu_count() or 1)  # each worker is a process with its own torch
    if not 1 <= args.workers <= most:
        raise UsageError(f"--workers must be between 1 and {most} here (4 per core), got "
                         f"{args.workers}; e.g. --workers {min(2, most)}, or more workers on "
                         "other hosts sharing a PostgreSQL --storage")
    check_threads(args.threads)
    ok = True
    _store_plugins(specs, args.storage)
    with num_threads(args.threads):
        summaries = [sweep(spec, args.storage, workers=args.workers, quiet=args.quiet,
                           engine=args.engine, threads=args.threads, echo=not args.quiet)
                     for spec in specs]
    for spec, summary in zip(specs, summaries, strict=True):
        if not summary.ok:
            ok = False
            if any(summary.worker_exit_codes):
                print(f"bench: {spec.name}: worker exit codes {summary.worker_exit_codes}; "
                      "run the command again to resume", file=sys.stderr)
    return 0 if ok else 1

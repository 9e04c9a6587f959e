"""`bench reproduce [--seeds N]`: every notebook recipe over N seeds vs the notebook's figure."""

from __future__ import annotations

import argparse

from bench.commands._common import (
    add_threads_flag,
    check_threads,
    fmt,
    print_table,
    progress_bar,
)
from bench.engines.registry import engine_names
from bench.errors import UsageError
from bench.store import ensure_dir

NAME = "reproduce"
HELP = "run every notebook recipe over seeds; writes results/reproduce.md and .csv"


def configure(parser: argparse.ArgumentParser) -> None:
    """--seeds, --recipes, --out, --engine, --epochs (override, for quick looks), --threads."""
    parser.add_argument("--seeds", type=int, default=5, metavar="N",
                        help="seeds per recipe, 0..N-1 (default: %(default)s)")
    parser.add_argument("--recipes", default=None, metavar="NAMES",
                        help="comma-separated recipe names, see `bench list` (default: all)")
    parser.add_argument("--out", default="results", metavar="DIR",
                        help="folder of reproduce.csv and reproduce.md (default: %(default)s)")
    parser.add_argument("--engine", default="auto", choices=engine_names(),
                        help=f"training engine: {', '.join(engine_names())} (default: "
                             "%(default)s: batched for several seeds, else reference)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="override every recipe's epochs (quick checks; figures won't match; "
                             "default: each recipe's own)")
    add_threads_flag(parser)


def run(args: argparse.Namespace) -> int:
    """Run the recipes, write the tables, print a summary."""
    from bench.engines.clock import num_threads
    from bench.notebooks import recipes as catalog  # builds RunSpecs: loads torch
    from bench.notebooks.reproduce import reproduce_recipe, write_tables

    check_threads(args.threads)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    names = list(catalog.recipes()) if args.recipes is None else args.recipes.split(",")
    recipes = [catalog.get_recipe(n.strip()) for n in names]
    ensure_dir(args.out, "--out")  # before training: fail fast
    rows = []
    with num_threads(args.threads), progress_bar(len(recipes) * args.seeds,
                                                 "reproduce") as advance:
        for recipe in recipes:
            rows.append(reproduce_recipe(recipe, args.seeds, engine=args.engine,
                                         epochs=args.epochs, progress=advance))
            # Written after every recipe, so an interrupted run keeps what it finished.
            csv_path, md_path = write_tables(rows, args.out, args.seeds)
    print_table(["recipe", "metric", "notebook", "mean", "ci95", "verdict"],
                [[r.recipe, r.metric, fmt(r.notebook_figure), fmt(r.mean), fmt(r.ci95), r.verdict]
                 for r in rows])
    print(f"\nwrote {csv_path} and {md_path}")
    return 0

"""`bench run [RECIPE] [flags]`: train runs described by a recipe and/or flags, over seeds."""

from __future__ import annotations

import argparse
import json
import math
import sys

from bench.catalog.registry import get_task
from bench.commands._common import (
    add_json_flag,
    fmt,
    parse_batch_size,
    parse_float_pair,
    parse_int_list,
    parse_seeds,
    print_table,
    progress_bar,
)
from bench.engines.budget import check_runs
from bench.engines.registry import choose_engine, get_engine, train_specs
from bench.spec import RunSpec
from bench.stats import mean_ci

NAME = "run"
HELP = "train a recipe or a run given by flags over seeds; prints a table or --json"

# RunSpec field -> type of its value on the command line (the flag is the field with dashes)
_FIELDS: dict[str, type] = {
    "task": str, "model": str, "activation": str, "init": str, "init_scale": float, "loss": str,
    "optimizer": str, "lr": float, "momentum": float, "eps": float, "weight_decay": float,
    "l1": float, "epochs": int, "dtype": str, "data_seed": int, "n_samples": int, "device": str,
    "engine": str, "target": float,
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags named after the RunSpec fields; unset flags keep the recipe's or default values."""
    parser.add_argument("recipe", nargs="?", help="a recipe name from `bench list` (optional)")
    for field, kind in _FIELDS.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=None)
    parser.add_argument("--hidden", default=None, help="hidden sizes, e.g. 20,20,20 (mlp only)")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--betas", default=None, help="Adam betas, e.g. 0.9,0.999")
    parser.add_argument("--batch-size", default=None, help="integer, or 'full' (gradient descent)")
    parser.add_argument("--seeds", default="0", help="seeds: a range 0-4 or a list 0,1,2")
    parser.add_argument("--no-limits", action="store_true",
                        help="allow work above bench.engines.budget's bounds (hours of training); "
                             "what cannot fit in memory is refused anyway")
    add_json_flag(parser)


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    """The RunSpecs asked for: recipe (or defaults) + flag overrides, one per seed."""
    from bench.notebooks.recipes import get_recipe  # builds RunSpecs: loads torch

    base = get_recipe(args.recipe).spec if args.recipe else RunSpec()
    changes: dict[str, object] = {}
    for field in _FIELDS:
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.hidden is not None:
        changes["hidden"] = parse_int_list(args.hidden, "--hidden")
    for flag in ("batch_norm", "nesterov", "shuffle"):
        if getattr(args, flag) is not None:
            changes[flag] = getattr(args, flag)
    if args.betas is not None:
        changes["betas"] = parse_float_pair(args.betas, "--betas")
    if args.batch_size is not None:
        changes["batch_size"] = parse_batch_size(args.batch_size)
    # RunSpec itself refuses --hidden/--activation/--batch-norm that a fixed model lacks.
    spec = base.replace(**changes) if changes else base
    return [spec.replace(seed=s) for s in parse_seeds(args.seeds)]


def run(args: argparse.Namespace) -> int:
    """Train, then print a table (or JSON); exit 0 even when a run diverges (it is reported)."""
    specs = build_specs(args)
    engine = specs[0].engine
    check_runs(specs, allow_long=args.no_limits,
               together=len(specs) if get_engine(choose_engine(specs, engine)).stacks else 1)
    with progress_bar(len(specs), "runs", enabled=None if not args.json else False) as advance:
        results = train_specs(specs, engine, progress=advance)
    if args.json:
        json.dump({"runs": [r.to_dict() for r in results]}, sys.stdout, indent=2)
        print()
        return 0
    task = get_task(specs[0].task)
    metric = task.default_metric
    headers = ["seed", f"val_{metric}", f"test_{metric}", "val_loss", "epochs", "train_s",
               "samples/s", "diverged"]
    rows = [[str(r.seed), fmt(r.metrics.get(f"val_{metric}", math.nan)),
             fmt(r.metrics.get(f"test_{metric}", math.nan)), fmt(r.metrics.get("val_loss", math.nan)),
             str(r.epochs_run), fmt(r.timing["train_seconds"]),
             fmt(r.timing["samples_per_second"], 3),
             f"at epoch {r.diverged_epoch}" if r.diverged else "no"] for r in results]
    s = specs[0]
    print(f"{s.task} / {s.model} / {s.loss} / {s.optimizer} lr={s.lr} "
          f"batch={s.batch_size or 'full'} epochs={s.epochs} device={s.device} "
          f"engine={results[0].engine}")
    print_table(headers, rows)
    if len(results) > 1:
        mean, ci = mean_ci([r.metrics.get(f"val_{metric}", math.nan) for r in results])
        ci_text = f" ± {fmt(ci)} (95% CI)" if math.isfinite(ci) else ""
        print(f"\nval_{metric}: mean {fmt(mean)}{ci_text} over {len(results)} seeds")
    return 0

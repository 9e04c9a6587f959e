"""`bench run [RECIPE] [flags]`: train runs described by a recipe and/or flags, over seeds."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from bench.catalog.datafile import KINDS, looks_like_path, make_ref, parse_ref
from bench.catalog.registry import get_task
from bench.commands._common import (
    add_json_flag,
    add_threads_flag,
    check_threads,
    fmt,
    parse_batch_size,
    parse_float_pair,
    parse_int_list,
    parse_seeds,
    print_table,
    progress_bar,
)
from bench.engines.budget import check_runs
from bench.engines.registry import choose_engine, engine_names, get_engine, train_specs
from bench.errors import UsageError
from bench.spec import ACTIVATIONS, DEVICES, DTYPES, INITS, MAX_SEED, RunSpec
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


# RunSpec field -> what its flag sets and, where fixed, its valid values. The registry's names
# (tasks, models, losses, optimizers) load torch, so the help points at `bench list` for them.
_HELP: dict[str, str] = {
    "task": "the task to train on: a name from `bench list`, or the path of a .csv (header row) "
            "or .npz (arrays x, y) data file; required unless a recipe is named",
    "model": "the model, a name from `bench list`",
    "activation": f"hidden-layer activation of --model mlp: {', '.join(ACTIVATIONS)}",
    "init": f"weight initialisation: {', '.join(INITS)}",
    "init_scale": "multiplier on the initial weights, a positive number",
    "loss": "the loss, a name from `bench list`",
    "optimizer": "the optimizer, a name from `bench list`",
    "lr": "learning rate, a positive number",
    "momentum": "SGD momentum, in [0, 1)",
    "eps": "Adam's epsilon, a positive number",
    "weight_decay": "L2 weight decay, >= 0",
    "l1": "L1 penalty on the weights, >= 0",
    "epochs": "training epochs, a positive integer",
    "dtype": f"floating-point type: {', '.join(DTYPES)}",
    "data_seed": f"seed of the data set's draw and split, 0 to {MAX_SEED}",
    "n_samples": "examples drawn for a synthetic task, at least 10",
    "device": f"{', '.join(DEVICES)} (auto: cuda when available)",
    "engine": f"training engine: {', '.join(engine_names())} (auto: batched for several seeds, "
              "else reference)",
    "target": "validation-metric target for the time-to-target column",
}
_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSpec)}
_DEFAULT_TEXT = {"hidden": "20,20,20 for mlp, else the model's own",
                 "activation": "relu for mlp, else the model's own",
                 "batch_norm": "off for mlp, else the model's own",
                 "batch_size": "full", "betas": "0.9,0.999", "n_samples": "the task's own size",
                 "target": "none", "nesterov": "off", "shuffle": "on"}


def _default(field: str) -> str:
    """'(default: the recipe's, else X)': the value a flag left unset takes."""
    if field == "task":
        return "(no default: `bench run` alone is a usage error)"
    value = _DEFAULT_TEXT.get(field, _SPEC_DEFAULTS[field])
    return f"(default: the recipe's, else {value})"


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags named after the RunSpec fields; unset flags keep the recipe's or default values."""
    parser.add_argument("recipe", nargs="?",
                        help="a notebook recipe from `bench list` (optional: without one, "
                             "--task is required); flags override its settings")
    for field, kind in _FIELDS.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=None,
                            help=f"{_HELP[field]} {_default(field)}")
    parser.add_argument("--hidden", default=None,
                        help=f"hidden sizes, e.g. 20,20,20 (mlp only) {_default('hidden')}")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                        help=f"batch normalisation after each hidden layer (mlp only) "
                             f"{_default('batch_norm')}")
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                        help=f"Nesterov momentum (SGD with --momentum above 0) "
                             f"{_default('nesterov')}")
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                        help=f"reshuffle the training set every epoch {_default('shuffle')}")
    parser.add_argument("--betas", default=None,
                        help=f"Adam's betas, two numbers in [0, 1) {_default('betas')}")
    parser.add_argument("--batch-size", default=None,
                        help="examples per step: a positive integer, or 'full' for full-batch "
                             f"gradient descent {_default('batch_size')}")
    parser.add_argument("--seeds", default="0",
                        help="seeds: a range 0-4 or a list 0,1,2 (default: %(default)s)")
    parser.add_argument("--label-column", default=None, metavar="COLUMN",
                        help="a .csv task's label column (default: the first of label, target, "
                             "class, y it has, else the last column)")
    parser.add_argument("--task-kind", default=None, choices=KINDS,
                        help="a data file task's kind (default: inferred: two integer classes "
                             "binary, more multiclass, floats regression)")
    add_threads_flag(parser)
    parser.add_argument("--no-limits", action="store_true",
                        help="allow work above bench.engines.budget's bounds (hours of training); "
                             "what cannot fit in memory is refused anyway")
    add_json_flag(parser)


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    """The RunSpecs asked for: recipe (or defaults) + flag overrides, one per seed."""
    from bench.notebooks.recipes import get_recipe  # builds RunSpecs: loads torch

    if not args.recipe and args.task is None:
        raise UsageError("name a recipe (see `bench list`) or --task, e.g. `bench run "
                         "moons_bn_mlp` or `bench run --task moons`")
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
    if args.label_column is not None or args.task_kind is not None or (
            args.task is not None and looks_like_path(args.task)):
        changes["task"] = file_task_reference(args.task, args.label_column, args.task_kind)
    # RunSpec itself refuses --hidden/--activation/--batch-norm that a fixed model lacks.
    spec = base.replace(**changes) if changes else base
    return [spec.replace(seed=s) for s in parse_seeds(args.seeds)]


def file_task_reference(task: str | None, label_column: str | None, kind: str | None) -> str:
    """The task reference of a data file given by --task PATH with --label-column and
    --task-kind (which apply to data files only)."""
    if task is None or not looks_like_path(task):
        raise UsageError("--label-column and --task-kind apply to a data file task; give "
                         "--task PATH.csv or PATH.npz")
    ref = parse_ref(task)
    return make_ref(ref.path, label_column or ref.label_column, kind or ref.kind).key()


def run(args: argparse.Namespace) -> int:
    """Train, then print a table (or JSON); exit 0 even when a run diverges (it is reported)."""
    from bench.engines.clock import num_threads

    check_threads(args.threads)
    specs = build_specs(args)
    engine = specs[0].engine
    check_runs(specs, allow_long=args.no_limits,
               together=len(specs) if get_engine(choose_engine(specs, engine)).stacks else 1)
    with (num_threads(args.threads),
          progress_bar(len(specs), "runs", enabled=None if not args.json else False) as advance):
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
    print(f"{task.display_name} / {s.model} / {s.loss} / {s.optimizer} lr={s.lr} "
          f"batch={s.batch_size or 'full'} epochs={s.epochs} device={s.device} "
          f"engine={results[0].engine}")
    print_table(headers, rows)
    if len(results) > 1:
        mean, ci = mean_ci([r.metrics.get(f"val_{metric}", math.nan) for r in results])
        ci_text = f" ± {fmt(ci)} (95% CI)" if math.isfinite(ci) else ""
        print(f"\nval_{metric}: mean {fmt(mean)}{ci_text} over {len(results)} seeds")
    return 0

"""`bench list`: every task, model, loss, optimizer and recipe with a one-line description;
tasks and models that plugins registered say where they come from. Data files are not listed:
any .csv or .npz path is a task (`bench run --task PATH`)."""

from __future__ import annotations

import argparse

from bench.catalog import registry

NAME = "list"
HELP = "list tasks, models, losses, optimizers and recipes"


def configure(parser: argparse.ArgumentParser) -> None:
    """No options."""
    del parser


def _inputs(shape: tuple[int, ...]) -> str:
    """'2 inputs', or '1x28x28 inputs' for examples that are not flat."""
    return f"{'x'.join(map(str, shape))} inputs"


def _from(origin: str) -> str:
    """Where an entry comes from, for entries that are not built in."""
    return "" if origin == "built-in" else f" (from {origin})"


def run(args: argparse.Namespace) -> int:
    """Print each registry table as aligned 'name  description' lines."""
    del args
    from bench.notebooks.recipes import recipes  # builds RunSpecs: loads torch

    sections = [
        ("tasks", {n: f"[{t.kind}, {_inputs(t.input_shape)}, metric {t.default_metric}] "
                   f"{t.description}{_from(t.origin)}" for n, t in registry.tasks().items()}),
        ("models", {n: f"{m.description}{_from(m.origin)}"
                    for n, m in registry.models().items()}),
        ("losses", {n: d.description for n, d in registry.losses().items()}),
        ("optimizers", {n: d.description for n, d in registry.optimizers().items()}),
        ("recipes", {n: f"[notebook {r.notebook}] {r.description}"
                     for n, r in recipes().items()}),
    ]
    for title, rows in sections:
        print(f"{title}:")
        width = max(len(n) for n in rows)
        for name, text in rows.items():
            print(f"  {name:<{width}}  {text}")
        print()
    return 0

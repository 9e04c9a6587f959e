"""`bench list`: every task, model, loss, optimizer and recipe with a one-line description."""

from __future__ import annotations

import argparse

from bench.catalog import registry

NAME = "list"
HELP = "list tasks, models, losses, optimizers and recipes"


def configure(parser: argparse.ArgumentParser) -> None:
    """No options."""
    del parser


def run(args: argparse.Namespace) -> int:
    """Print each registry table as aligned 'name  description' lines."""
    del args
    from bench.notebooks.recipes import recipes  # builds RunSpecs: loads torch

    sections = [
        ("tasks", {n: f"[{t.kind}, {t.input_dim} inputs, metric {t.default_metric}] "
                   f"{t.description}" for n, t in registry.tasks().items()}),
        ("models", {n: m.description for n, m in registry.models().items()}),
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

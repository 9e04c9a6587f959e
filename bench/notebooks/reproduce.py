"""`bench reproduce`: run every notebook recipe over seeds and compare with the notebook's figure.

Writes `results/reproduce.csv` and `results/reproduce.md` (atomically): recipe, the notebook's
figure, the reproduced mean with a 95% CI over seeds, and a verdict with a short reason where
they differ. A recipe run on a substitute data set (its `fallback_tasks`, e.g. Fashion-MNIST where
the MNIST files are absent) gets the verdict "substitute (fashion_mnist)", never "reproduced".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.catalog import registry
from bench.catalog.tasks import load_task
from bench.engines.registry import train_specs
from bench.errors import DataUnavailableError
from bench.notebooks.recipes import Recipe
from bench.results import RunResult, metric_direction
from bench.stats import mean_ci
from bench.store import write_error, write_text_atomic

ACCURACY_TOLERANCE = 0.02  # absolute, for accuracies: notebooks print one run, we average seeds
LOSS_TOLERANCE = 0.05  # relative, for losses and MSE figures


@dataclass
class ReproRow:
    """One line of the reproduction table."""

    recipe: str
    notebook: str
    task: str
    metric: str
    notebook_figure: float | None
    mean: float
    ci95: float
    n_seeds: int
    n_diverged: int
    val_metric_mean: float
    verdict: str
    reason: str


def recipe_value(result: RunResult, metric: str) -> float:
    """The quantity a recipe's figure is compared with, taken from one run's result."""
    if metric == "final_train_loss":
        return result.curves["train_loss"][-1] if result.curves["train_loss"] else math.nan
    return result.metrics.get(metric, math.nan)


def is_stuck(result: RunResult, n_classes: int) -> bool:
    """True when a run neither diverged nor learned: flat loss over the last half of training
    and validation accuracy within 10 points of chance."""
    losses = result.curves["train_loss"]
    if result.diverged or len(losses) < 2:
        return False
    tail = losses[len(losses) // 2:]
    flat = (max(tail) - min(tail)) <= 0.01 * max(abs(tail[0]), 1e-12)
    accuracy = result.metrics.get("val_accuracy", math.nan)
    return flat and accuracy <= 1.0 / n_classes + 0.10


def available_task(recipe: Recipe) -> str | None:
    """The recipe's task, or its first fallback whose data is present; None when none is."""
    for name in (recipe.spec.task, *recipe.fallback_tasks):
        try:
            load_task(name, data_seed=recipe.spec.data_seed, n_samples=recipe.spec.n_samples)
        except DataUnavailableError:
            continue
        return name
    return None


def reproduce_recipe(recipe: Recipe, seeds: int = 5, *, engine: str = "auto",
                     epochs: int | None = None,
                     progress: Callable[[int], None] | None = None) -> ReproRow:
    """Run one recipe over seeds 0..seeds-1 and judge it against the notebook's figure."""
    task_name = available_task(recipe)
    if task_name is None:
        task = recipe.spec.task
        return ReproRow(recipe.name, recipe.notebook, task, recipe.metric, recipe.figure,
                        math.nan, math.nan, 0, 0, math.nan, "skipped",
                        f"{task} data absent; run `make data` or place the IDX files under data/")
    base = recipe.spec.replace(task=task_name)
    if epochs is not None:
        base = base.replace(epochs=epochs)
    results = train_specs([base.replace(seed=s) for s in range(seeds)], engine,
                          progress=progress)
    task = registry.get_task(task_name)
    values = [recipe_value(r, recipe.metric) for r in results]
    mean, ci = mean_ci(values)
    n_div = sum(r.diverged for r in results)
    val_key = f"val_{task.default_metric}"
    val_mean, _ = mean_ci([r.metrics.get(val_key, math.nan) for r in results])
    verdict, reason = judge(recipe, results, mean, ci, task.n_classes)
    if task_name != recipe.spec.task:
        verdict, reason = substitute_verdict(recipe.spec.task, task_name, verdict, reason)
    return ReproRow(recipe.name, recipe.notebook, task_name, recipe.metric, recipe.figure, mean,
                    ci, len(results), n_div, val_mean, verdict, reason)


def substitute_verdict(task: str, substitute: str, verdict: str, reason: str) -> tuple[str, str]:
    """(verdict, reason) for runs on a substitute data set: never "reproduced", since the
    notebook's figure was measured on `task`; the reason keeps what the comparison said."""
    said = {"reproduced": "the numbers match it", "differs": "the numbers differ from it"}.get(
        verdict, verdict)
    return (f"substitute ({substitute})",
            f"ran on {substitute} ({task} files absent), so the {task} figure is not reproduced; "
            f"{said}" + (f" ({reason})" if reason else ""))


def judge(recipe: Recipe, results: Sequence[RunResult], mean: float, ci: float,
          n_classes: int) -> tuple[str, str]:
    """(verdict, reason) for a recipe's runs against its notebook figure."""
    n_div = sum(r.diverged for r in results)
    if recipe.expect == "stuck":
        stuck = sum(is_stuck(r, n_classes) for r in results)
        if stuck + n_div == len(results):
            what = "stuck at chance" if n_div == 0 else f"{stuck} stuck, {n_div} diverged"
            return "reproduced", f"{what} in every seed, as in the notebook"
        return "differs", f"{len(results) - stuck - n_div} of {len(results)} seeds trained"
    if n_div:
        return "differs", f"{n_div} of {len(results)} seeds diverged"
    if recipe.figure is None:
        return "no figure", recipe.figure_text
    if "accuracy" in recipe.metric:
        tolerance = max(ACCURACY_TOLERANCE, ci if math.isfinite(ci) else 0.0)
    else:
        tolerance = max(LOSS_TOLERANCE * abs(recipe.figure), ci if math.isfinite(ci) else 0.0)
    if abs(mean - recipe.figure) <= tolerance:
        return "reproduced", recipe.note
    better = (mean > recipe.figure) == (metric_direction(recipe.metric) == "maximize")
    gap = f"{'better' if better else 'worse'} by {abs(mean - recipe.figure):.3g}"
    return "differs", f"{gap}; {recipe.note}" if recipe.note else gap


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def to_markdown(rows: Sequence[ReproRow], seeds: int) -> str:
    """The reproduction table as Markdown."""
    lines = [
        "# Reproducing the notebooks",
        "",
        f"Each recipe ran over {seeds} seeds (initial weights and shuffle order); mean ± 95% CI "
        "(Student t). `metric` is the quantity the notebook reports.",
        "",
        "| recipe | notebook | task | metric | notebook | reproduced | verdict | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        repro = f"{_fmt(r.mean)} ± {_fmt(r.ci95)}" if math.isfinite(r.ci95) else _fmt(r.mean)
        lines.append(f"| {r.recipe} | {r.notebook} | {r.task} | {r.metric} | "
                     f"{_fmt(r.notebook_figure)} | {repro} | {r.verdict} | {r.reason} |")
    substitutes = sorted({r.task for r in rows if r.verdict.startswith("substitute")})
    if substitutes:
        lines += ["", f"`substitute ({', '.join(substitutes)})`: the notebook's data set was absent, "
                  "so the recipe ran on this one instead; its figure is not reproduced, and the "
                  "reason says what the comparison with it gave."]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[ReproRow]) -> str:
    """The reproduction table as CSV (one row per recipe)."""
    import csv
    import io

    buf = io.StringIO()
    fields = list(ReproRow.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


def write_tables(rows: Sequence[ReproRow], out_dir: str | Path, seeds: int) -> tuple[Path, Path]:
    """Write reproduce.csv and reproduce.md under `out_dir`, each atomically."""
    out = Path(out_dir)
    try:
        return (write_text_atomic(out / "reproduce.csv", to_csv(rows)),
                write_text_atomic(out / "reproduce.md", to_markdown(rows, seeds)))
    except OSError as exc:  # a full disk, a read-only folder: earlier tables stay whole
        raise write_error(out, exc, "tables written before are kept") from None

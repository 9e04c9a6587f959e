"""Recipes: one short run each, the verdict rules, and the reproduction tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from bench.notebooks.recipes import RECIPES, Recipe
from bench.notebooks.reproduce import (
    ReproRow,
    is_stuck,
    judge,
    recipe_value,
    reproduce_recipe,
    write_tables,
)
from bench.results import RunResult
from bench.spec import RunSpec


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_runs_briefly(name: str, tiny_mnist_root: Path) -> None:
    row = reproduce_recipe(RECIPES[name], seeds=2, epochs=2, engine="reference")
    assert row.n_seeds == 2 and row.verdict in ("reproduced", "differs", "no figure")
    assert math.isfinite(row.mean) or row.n_diverged > 0


def test_mnist_lr500_comes_out_stuck_without_crashing() -> None:
    recipe = RECIPES["mnist_sigmoid_lr500"]
    # MNIST-shaped synthetic data stands in for the files; the dynamics are the notebook's.
    synthetic = Recipe(**{**recipe.__dict__, "spec": recipe.spec.replace(
        task="mnist_synthetic", n_samples=3000)})
    row = reproduce_recipe(synthetic, seeds=2, engine="reference")
    assert row.verdict == "reproduced", row.reason
    assert "stuck" in row.reason or "diverged" in row.reason


def test_missing_data_is_skipped_with_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.catalog.tasks.DATA_ROOT", tmp_path)
    row = reproduce_recipe(RECIPES["mnist_sigmoid_lr0.1"], seeds=1)
    assert row.verdict == "skipped" and "make data" in row.reason


def test_a_substitute_data_set_is_never_reproduced(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST absent, Fashion-MNIST present: the MNIST recipe runs on Fashion-MNIST and says so in
    the verdict of the row, the CSV, reproduce.md and the report's table, even where the numbers
    would match the MNIST figure."""
    from bench.notebooks import reproduce
    from bench.report.tables import reproduce_table
    from tests.conftest import write_tiny_mnist

    write_tiny_mnist(tmp_path, folder="FashionMNIST")
    monkeypatch.setattr("bench.catalog.tasks.DATA_ROOT", tmp_path)
    monkeypatch.setattr(reproduce, "judge", lambda *a: ("reproduced", "within tolerance"))
    row = reproduce_recipe(RECIPES["mnist_sigmoid_lr0.1"], seeds=2, epochs=2, engine="reference")
    assert row.task == "fashion_mnist" and row.n_seeds == 2
    assert row.verdict == "substitute (fashion_mnist)", row.verdict
    assert "ran on fashion_mnist (mnist files absent)" in row.reason
    assert "the numbers match it (within tolerance)" in row.reason  # the comparison, kept
    csv_path, md_path = write_tables([row], tmp_path / "out", seeds=2)
    with open(csv_path) as fh:
        assert [r["verdict"] for r in csv.DictReader(fh)] == ["substitute (fashion_mnist)"]
    md_row = next(line for line in md_path.read_text().splitlines()
                  if line.startswith("| mnist_sigmoid_lr0.1 "))
    assert "| substitute (fashion_mnist) |" in md_row
    assert "`substitute (fashion_mnist)`: the notebook's data set was absent" in md_path.read_text()
    table = reproduce_table(csv_path)
    assert table is not None and list(table["verdict"]) == ["substitute (fashion_mnist)"]


def fake_result(values: list[float], *, diverged: bool = False, acc: float = 0.5) -> RunResult:
    return RunResult(spec=RunSpec(), metrics={"train_accuracy": acc, "val_accuracy": acc},
                     curves={"train_loss": values, "val_loss": values, "val_accuracy": []},
                     timing={}, diverged=diverged, diverged_epoch=3 if diverged else None,
                     epochs_run=len(values))


def test_stuck_means_flat_loss_and_chance_accuracy() -> None:
    assert is_stuck(fake_result([0.28, 0.1, 0.1, 0.1, 0.1], acc=0.1), n_classes=10)
    assert not is_stuck(fake_result([0.28, 0.2, 0.15, 0.1, 0.05], acc=0.1), n_classes=10)
    assert not is_stuck(fake_result([0.28, 0.1, 0.1, 0.1], acc=0.9), n_classes=10)


def test_judge_compares_within_tolerance_and_explains() -> None:
    recipe = RECIPES["circle_tanh_2_4_1"]  # figure 0.974
    results = [fake_result([0.1], acc=0.97)] * 3
    assert judge(recipe, results, 0.97, 0.001, 2)[0] == "reproduced"
    verdict, reason = judge(recipe, results, 0.90, 0.001, 2)
    assert verdict == "differs" and "worse by 0.074" in reason
    assert judge(recipe, [fake_result([math.nan], diverged=True)], math.nan, math.nan, 2)[0] == (
        "differs")
    assert judge(RECIPES["moons_logistic"], results, 0.86, 0.01, 2)[0] == "no figure"


def test_recipe_value_reads_metrics_or_the_last_train_loss() -> None:
    r = fake_result([0.3, 0.2], acc=0.75)
    assert recipe_value(r, "train_accuracy") == 0.75
    assert recipe_value(r, "final_train_loss") == 0.2


def test_tables_are_written(tmp_path: Path) -> None:
    rows = [ReproRow("a", "000", "moons", "train_accuracy", 0.99, 0.98, 0.01, 5, 0, 0.97,
                     "reproduced", ""),
            ReproRow("b", "001", "moons", "train_accuracy", None, 0.9, math.nan, 1, 0, 0.9,
                     "no figure", "none printed")]
    csv_path, md_path = write_tables(rows, tmp_path, seeds=5)
    with open(csv_path) as fh:
        table = list(csv.DictReader(fh))
    assert [r["recipe"] for r in table] == ["a", "b"]
    assert {"recipe", "notebook", "metric", "notebook_figure", "mean", "ci95", "n_seeds",
            "verdict", "reason"} <= set(table[0])
    md = md_path.read_text()
    assert "0.9800 ± 0.0100" in md and "| b | 001 |" in md


def test_a_full_disk_is_one_line_and_keeps_earlier_tables(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from bench.errors import UsageError
    from bench.notebooks import reproduce

    rows = [ReproRow("a", "000", "moons", "train_accuracy", 0.99, 0.98, 0.01, 5, 0, 0.97,
                     "reproduced", "")]
    csv_path, _ = write_tables(rows, tmp_path, seeds=5)
    before = csv_path.read_text()

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reproduce, "write_text_atomic", full)
    with pytest.raises(UsageError, match=r"No space left on device.*tables written before"):
        write_tables(rows * 2, tmp_path, seeds=5)
    assert csv_path.read_text() == before


def test_reproduce_out_under_a_file_fails_before_training(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    (tmp_path / "f").write_text("mine")
    assert main(["reproduce", "--seeds", "1", "--out", str(tmp_path / "f" / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "mine"

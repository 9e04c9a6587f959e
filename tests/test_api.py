"""The Python API (`bench.run`, `bench.curves`, `bench.sweep`, `bench.load_runs`, the plugin
decorators): exported, light to import, and the same numbers as the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.cli import main
from bench.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_is_exported_and_importing_it_loads_no_heavy_module() -> None:
    for name in ("run", "curves", "sweep", "load_runs", "register_task", "register_model"):
        assert name in bench.__all__ and callable(getattr(bench, name))
    code = ("import sys, bench, bench.api, bench.catalog.plugins; "
            "print(sorted(m for m in ('torch', 'optuna', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_run_gives_one_row_per_seed_with_settings_metrics_and_timings(
        capsys: pytest.CaptureFixture[str]) -> None:
    df = bench.run(task="moons", model="mlp", seeds=3, hidden=[8], epochs=3, lr=0.5,
                   engine="reference")
    assert list(df["seed"]) == [0, 1, 2]
    assert (df["hidden"] == (8,)).all() and (df["lr"] == 0.5).all()
    for column in ("val_accuracy", "test_accuracy", "val_loss", "train_seconds", "engine",
                   "diverged", "epochs_run", "task_sha256"):
        assert column in df.columns, column
    # the same numbers as `bench run --json`
    assert main(["run", "--task", "moons", "--hidden", "8", "--epochs", "3", "--lr", "0.5",
                 "--engine", "reference", "--seeds", "0-2", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert list(df["val_accuracy"]) == [r["metrics"]["val_accuracy"] for r in runs]


def test_seeds_are_a_count_a_range_or_a_list() -> None:
    quick = {"task": "linear", "epochs": 1, "engine": "reference"}
    assert list(bench.run(**quick, seeds=range(2, 4))["seed"]) == [2, 3]
    assert list(bench.run(**quick, seeds=[5, 1])["seed"]) == [5, 1]
    assert list(bench.run(**quick, seeds="0-1")["seed"]) == [0, 1]
    for bad in (0, True, [1.5], "x", [0, 0], "0,0"):
        with pytest.raises(UsageError, match="seeds"):
            bench.run(**quick, seeds=bad)


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"unknown RunSpec field.*colour"):
        bench.run(task="moons", colour="red")
    with pytest.raises(UsageError, match=r"give seeds=\.\.\., not seed="):
        bench.run(task="moons", seed=3)
    with pytest.raises(UsageError, match="unknown task 'mons'"):
        bench.run(task="mons")
    with pytest.raises(UsageError, match="label_column and task_kind apply to a data file"):
        bench.run(task="moons", label_column="y")


def test_curves_unfold_per_epoch_curves_in_long_form() -> None:
    a = bench.run(task="linear", seeds=2, epochs=4, lr=0.5, engine="reference")
    b = bench.run(task="linear", seeds=2, epochs=4, lr=0.1, engine="reference")
    long = bench.curves(pd.concat([a, b], ignore_index=True))
    names = sorted(a["curves"].iloc[0])
    assert "val_loss" in names
    assert len(long) == 4 * 4 * len(names)  # runs x epochs x curves
    assert list(long.columns) == ["seed", "task", "model", "lr", "curve", "epoch", "value"]
    first = long[(long.lr == 0.5) & (long.seed == 0) & (long.curve == "val_loss")]
    assert list(first["epoch"]) == [1, 2, 3, 4]
    assert list(first["value"]) == a["curves"].iloc[0]["val_loss"]
    with pytest.raises(UsageError, match=r"takes the DataFrame bench\.run returns"):
        bench.curves(a.drop(columns="curves"))


STUDY = {"name": "api_linear", "task": "linear", "model": "mlp", "trials": 3, "seeds": 2,
         "sampler": {"name": "random", "seed": 0},
         "fixed": {"hidden": [4], "epochs": 3, "loss": "bce"},
         "space": {"lr": {"low": 0.01, "high": 1.0, "log": True}}}


def test_sweep_from_a_dict_and_from_a_file_then_load_runs(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    journal = str(tmp_path / "optuna.journal")
    study = bench.sweep(STUDY, storage=journal)
    assert study.study_name == "api_linear" and len(study.trials) == 3
    assert study.user_attrs["task"] == "linear"
    (tmp_path / "more.toml").write_text(
        'task = "linear"\ntrials = 4\nseeds = 2\nsampler = "random"\n[fixed]\nepochs = 2\n'
        'loss = "bce"\n[space]\nlr = [0.1, 0.5]\n', encoding="utf-8")
    other = bench.sweep(tmp_path / "more.toml", storage=journal, trials=2)
    assert other.study_name == "more" and len(other.trials) == 2
    runs = bench.load_runs(journal)
    assert sorted(runs.groupby("study").size().items()) == [("api_linear", 6), ("more", 4)]
    assert {"trial", "seed", "lr", "val_accuracy", "train_seconds"} <= set(runs.columns)
    with pytest.raises(UsageError, match="needs a 'name'"):
        bench.sweep({"task": "linear"}, storage=journal)


def test_load_runs_without_a_storage_names_the_fix(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no storage given"):
        bench.load_runs()


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shutil

    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert blocks, "README has no python example"
    names: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), names)  # our own docs
    df, study, runs = names["df"], names["study"], names["runs"]
    assert len(df) == 5 and len(study.trials) == 8  # type: ignore[arg-type, attr-defined]
    assert len(runs) == 8 * study.user_attrs["nnbench_study"]["seeds"]  # type: ignore[attr-defined]

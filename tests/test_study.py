"""Study files: the catalogue of bad inputs (one line each, exit 2, nothing stored) and parsing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UsageError
from bench.study import load_study_file, param_to_field, study_paths

GOOD = """
task = "moons"
trials = 4
seeds = 2
sampler = { name = "tpe", seed = 0 }

[fixed]
hidden = [8]
epochs = 2

[space]
optimizer = ["sgd", "adam"]
lr = { low = 1e-3, high = 1.0, log = true }
"""

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# (file text, the key the error names, text the message must contain)
BAD = {
    "missing task": (GOOD.replace('task = "moons"', ""), "task", "missing"),
    "unknown task": (GOOD.replace('"moons"', '"moon"'), "task", "unknown task 'moon'"),
    "unknown sampler": (GOOD.replace('name = "tpe"', 'name = "bayes"'), "sampler.name",
                        "unknown value 'bayes'; choose one of: tpe, random, grid, cmaes, qmc"),
    "unknown pruner": (GOOD.replace("seeds = 2", 'seeds = 2\npruner = "asha"'), "pruner.name",
                       "unknown value 'asha'"),
    "low above high": (GOOD.replace("low = 1e-3, high = 1.0", "low = 1.0, high = 1e-3"),
                       "space.lr", "low 1.0 is above high 0.001"),
    "log range low <= 0": (GOOD.replace("low = 1e-3", "low = 0.0"), "space.lr.low",
                           "a log range needs low > 0"),
    "empty choices": (GOOD.replace('["sgd", "adam"]', "[]"), "space.optimizer",
                      "empty list of choices"),
    "seeds = 0": (GOOD.replace("seeds = 2", "seeds = 0"), "seeds", "must be at least 1"),
    "trials = 0": (GOOD.replace("trials = 4", "trials = 0"), "trials", "must be at least 1"),
    "unknown top-level key": (GOOD.replace("seeds = 2", "seeds = 2\nrepeats = 3"), "repeats",
                              "unknown key"),
    "unknown space field": (GOOD + "learning_rate = [0.1]\n", "space.learning_rate",
                            "not a RunSpec field"),
    "unknown fixed field": (GOOD.replace("epochs = 2", "epochs = 2\nepoch = 3"), "fixed.epoch",
                            "not a RunSpec field"),
    "unknown range key": (GOOD.replace("log = true", "log = true, scale = 2"),
                          "space.lr.scale", "unknown key"),
    "bad optimizer choice": (GOOD.replace('"adam"]', '"adamx"]'), "space",
                             "unknown optimizer 'adamx'"),
    "seed searched": (GOOD + "seed = [1, 2]\n", "space.seed", "cannot be searched"),
    "float bound on int field": (GOOD + "epochs = { low = 1.5, high = 3 }\n",
                                 "space.epochs.low", "integer field"),
    "set twice": (GOOD + "hidden = [[4], [8]]\n", "space.hidden", "also set in [fixed]"),
    "unknown objective": (GOOD.replace("seeds = 2", 'seeds = 2\nobjective = "val_r2"'),
                          "objective", "unknown metric 'val_r2'"),
    "pruner with two objectives": (
        GOOD.replace("seeds = 2", 'seeds = 2\nobjective = ["val_accuracy", "train_seconds"]\n'
                                  'pruner = "median"'), "pruner", "multi-objective"),
    "grid over a continuous range": (GOOD.replace('name = "tpe"', 'name = "grid"'), "space.lr",
                                     "grid sampler needs"),
    "not TOML": ("task = \n", "not valid TOML", "not valid TOML"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_study_is_one_line_exit_2_and_stores_nothing(case, tmp_path, capsys):
    text, key, needle = BAD[case]
    path = write(tmp_path, text)
    storage = tmp_path / "store" / "optuna.journal"
    code = main(["sweep", str(path), "--storage", str(storage), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"bench: error: {path}: ")
    assert f": {key}" in err or key in err
    assert needle in err
    assert not storage.exists() and not storage.parent.exists()


def test_good_study_parses_into_distributions(tmp_path):
    spec = load_study_file(write(tmp_path, GOOD))
    assert spec.name == "study" and spec.task == "moons" and spec.seeds == 2
    assert spec.objectives == ("val_accuracy",) and spec.directions == ("maximize",)
    dists = spec.distributions()
    assert set(dists) == {"optimizer", "lr"}
    assert dists["lr"].log and dists["lr"].low == 1e-3
    run = spec.run_spec({"optimizer": "adam", "lr": 0.01}, seed=1)
    assert (run.optimizer, run.lr, run.seed, run.hidden, run.epochs) == ("adam", 0.01, 1,
                                                                        (8,), 2)


def test_tuple_and_full_batch_choices_map_to_runspec_values(tmp_path):
    spec = load_study_file(write(tmp_path, GOOD.replace("hidden = [8]\n", "") +
                                 'hidden = [[4], [8, 8]]\nbatch_size = [32, "full"]\n'))
    by_name = {p.name: p for p in spec.space}
    assert by_name["hidden"].choices == ("4", "8,8")
    assert by_name["batch_size"].choices == (32, None)
    assert param_to_field("hidden", "8,8") == (8, 8)
    assert spec.run_spec({"optimizer": "sgd", "lr": 0.1, "hidden": "8,8",
                          "batch_size": None}, 0).batch_size is None


def test_objective_directions_default_from_the_metric(tmp_path):
    spec = load_study_file(write(tmp_path, GOOD.replace(
        "seeds = 2", 'seeds = 2\nobjective = ["val_loss", "val_accuracy", "train_seconds"]')))
    assert spec.directions == ("minimize", "maximize", "minimize")


def test_overrides_are_validated(tmp_path):
    spec = load_study_file(write(tmp_path, GOOD))
    assert spec.with_overrides(trials=9, seeds=1).trials == 9
    with pytest.raises(UsageError, match="--seeds must be at least 1"):
        spec.with_overrides(seeds=0)


def test_grid_trials_above_grid_size_is_refused(tmp_path):
    text = GOOD.replace('name = "tpe"', 'name = "grid"').replace(
        "lr = { low = 1e-3, high = 1.0, log = true }", "lr = [0.1, 0.01]")
    spec = load_study_file(write(tmp_path, text))
    with pytest.raises(UsageError, match="above the grid's 4 points"):
        spec.with_overrides(trials=5)


def test_folder_expands_to_sorted_toml_files(tmp_path):
    write(tmp_path, GOOD, "b.toml")
    write(tmp_path, GOOD, "a.toml")
    assert [p.name for p in study_paths([str(tmp_path)])] == ["a.toml", "b.toml"]
    with pytest.raises(UsageError, match="not found"):
        study_paths([str(tmp_path / "missing.toml")])


@pytest.mark.parametrize("path", sorted(STUDIES.glob("**/*.toml")), ids=lambda p: p.stem)
def test_shipped_studies_parse(path):
    spec = load_study_file(path)
    assert spec.trials >= 1 and spec.seeds >= 2 and spec.description

"""Study files: the catalogue of bad inputs (one line each, exit 2, nothing stored) and parsing."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from bench.catalog.models import build_module, parameter_count
from bench.catalog.tasks import load_task
from bench.cli import main
from bench.engines import budget
from bench.engines.setup import plan_run
from bench.errors import UsageError
from bench.spec import RunSpec
from bench.sweeps.space import param_to_field
from bench.sweeps.study import load_study_file, study_paths

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
    "step wider than the range": (GOOD.replace("log = true", "step = 2.0, log = false"),
                                  "space.lr.step", "does not divide high - low = 0.999"),
    "step not dividing the range": (GOOD + "epochs = { low = 1, high = 6, step = 2 }\n",
                                    "space.epochs.step", "set high = 5"),
    # a setting with no effect for the chosen sampler or pruner
    "startup_trials for random": (GOOD.replace('name = "tpe", seed = 0',
                                               'name = "random", startup_trials = 3'),
                                  "sampler.startup_trials", "applies to tpe and cmaes only"),
    "warmup for no pruner": (GOOD.replace("seeds = 2", 'seeds = 2\npruner = { name = "none", '
                                                       "warmup_epochs = 1 }"),
                             "pruner.warmup_epochs", "not 'none'; remove it"),
    "reduction_factor for median": (
        GOOD.replace("seeds = 2", 'seeds = 2\npruner = { name = "median", reduction_factor = 3 }'),
        "pruner.reduction_factor", "applies to successive_halving and hyperband only"),
    "startup_trials for hyperband": (
        GOOD.replace("seeds = 2", 'seeds = 2\npruner = { name = "hyperband", startup_trials = 2 }'),
        "pruner.startup_trials", "applies to median and percentile only, not 'hyperband'"),
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


# --- types exactly as RunSpec needs them, directions, names, encodings ------------------------

@pytest.mark.parametrize("text,key,needle", [
    (GOOD.replace("hidden = [8]", "hidden = [8.5]"), "fixed.hidden", "list of integers"),
    (GOOD.replace("epochs = 2", "epochs = true"), "fixed.epochs", "must be an integer, got True"),
    (GOOD.replace("epochs = 2", "epochs = 3.0"), "fixed.epochs", "must be an integer, got 3.0"),
    (GOOD + 'batch_size = [32, 50.5, "full"]\n', "space.batch_size", "got 50.5"),
    (GOOD + "hidden = [[4], [8.5]]\n".replace("hidden", "betas"), "space.betas", "2 numbers"),
    (GOOD + "epochs = { low = 1, high = 5, step = 1.5 }\n", "space.epochs.step", "integer"),
    (GOOD.replace("epochs = 2", "epochs = [2]"), "fixed.epochs", "a list is only valid"),
    (GOOD.replace("seed = 0 }", "seed = 100000000000000000000 }"), "sampler.seed", "at most"),
    (GOOD.replace("seeds = 2", 'seeds = 2\ndirection = "minimize"'), "direction",
     "contradicts val_accuracy"),
    (GOOD.replace("seeds = 2", 'seeds = 2\nname = "' + "n" * 600 + '"'), "name",
     "1 to 512 characters"),
    (GOOD.replace("seeds = 2", "seeds = 2\ndirection_override = 1"), "direction_override",
     "true or false"),
])
def test_wrong_types_and_contradictions_name_the_key(tmp_path, text, key, needle):
    with pytest.raises(UsageError) as info:
        load_study_file(write(tmp_path, text))
    message = str(info.value)
    assert f": {key}: " in message and needle in message and "\n" not in message


def test_a_direction_against_the_metric_needs_the_override(tmp_path):
    text = GOOD.replace("seeds = 2", 'seeds = 2\ndirection = "minimize"\n'
                                     "direction_override = true")
    assert load_study_file(write(tmp_path, text)).directions == ("minimize",)


def test_fixed_model_study_records_its_own_layers_and_refuses_others(tmp_path):
    spec = load_study_file(STUDIES / "sine_init.toml")
    run = spec.run_spec({"init": "normal", "init_scale": 1.0}, seed=0)
    assert (run.hidden, run.activation, run.batch_norm) == ((10,), "sigmoid", False)
    text = GOOD.replace('task = "moons"', 'task = "linear"\nmodel = "relu_mlp_5"')
    with pytest.raises(UsageError, match=r"fixed.hidden: hidden 8 applies to --model mlp only"):
        load_study_file(write(tmp_path, text))


def test_encoding_bom_is_accepted_and_non_utf8_is_one_line(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_study_file(path).task == "moons"
    path.write_bytes(GOOD.replace("moons", "moons\xe9").encode("latin-1"))
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 0xe9 at offset \d+\); save"):
        load_study_file(path)


# --- the budget: estimates and the bounds ------------------------------------------------------

@pytest.mark.parametrize("model,task,hidden", [("mlp", "moons", (20, 20, 20)),
                                               ("bn_mlp_20x3", "moons", None),
                                               ("sigmoid_mlp_16x2", "mnist_synthetic", None),
                                               ("mlp", "digits", (64, 32))])
def test_estimate_counts_the_parameters_that_train(model, task, hidden):
    spec = RunSpec(task=task, model=model, hidden=hidden, n_samples=None)
    est = budget.estimate(spec)
    plan = plan_run(spec, 1000)
    assert est.parameters == parameter_count(plan.arch) == sum(
        p.numel() for p in build_module(plan.arch).parameters())
    assert est.parts["model"] >= 8 * 4 * est.parameters  # params, grads, optimizer state


def test_estimate_of_data_covers_the_tensors_and_is_not_wildly_above():
    spec = RunSpec(task="moons", n_samples=5000)
    data = load_task("moons", n_samples=5000)
    held = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_val,
                                                      data.y_val, data.x_test, data.y_test))
    cached = held * 2  # the float64 cache besides the float32 copy (labels int64 in both)
    assert cached <= budget.estimate(spec).parts["data"] <= 4 * cached


def test_budget_refuses_what_cannot_fit_and_long_work_unless_meant():
    big = budget.estimate(RunSpec(hidden=(100000, 100000)))
    with pytest.raises(UsageError, match=r"needs an estimated \d+\.\d GB of memory .* this "
                                         r"machine has 8\.0 GB; use smaller hidden sizes"):
        budget.check(big, what="x", allow_long=True, long_hint="--no-limits", memory=8 * 10**9)
    long = budget.estimate(RunSpec(epochs=10**8))
    with pytest.raises(UsageError, match=r"above the bound .* or --no-limits if it is meant"):
        budget.check(long, what="x", allow_long=False, long_hint="--no-limits", memory=10**15)
    budget.check(long, what="x", allow_long=True, long_hint="--no-limits", memory=10**15)
    assert budget.machine_memory() and budget.machine_memory() > 10**8


def test_absurd_study_sizes_are_refused_at_once(tmp_path):
    for old, new in (("seeds = 2", "seeds = 1000000000"), ("trials = 4", "trials = 1000000000"),
                     ("epochs = 2", "epochs = 1000000000"), ("hidden = [8]",
                                                             "hidden = [100000, 100000]")):
        start = time.perf_counter()
        with pytest.raises(UsageError, match="estimated"):
            load_study_file(write(tmp_path, GOOD.replace(old, new)))
        assert time.perf_counter() - start < 2.0


def test_allow_long_and_no_limits_allow_long_work_but_not_what_cannot_fit(tmp_path):
    long = GOOD.replace("epochs = 2", "epochs = 100000").replace("trials = 4", "trials = 400")
    with pytest.raises(UsageError, match="allow_long = true in the study"):
        load_study_file(write(tmp_path, long))
    assert load_study_file(write(tmp_path, long + "\n"), no_limits=True).allow_long
    spec = load_study_file(write(tmp_path, long.replace("seeds = 2", "seeds = 2\nallow_long = "
                                                                     "true")))
    assert spec.allow_long and "allow_long" not in spec.to_dict()
    short = load_study_file(write(tmp_path, GOOD.replace("epochs = 2", "epochs = 1000")))
    with pytest.raises(UsageError, match="needs an estimated"):
        short.with_overrides(seeds=10**9)
    with pytest.raises(UsageError, match="bench sweep --no-limits"):
        short.with_overrides(trials=10**4)
    assert short.with_overrides(trials=10**4, no_limits=True).trials == 10**4


def test_sweep_no_limits_flag_allows_long_work_but_the_default_refuses(tmp_path, monkeypatch):
    """`bench sweep --no-limits` reaches the study (allow_long) and its overrides; without it
    the same long study is refused before anything runs."""
    import types

    import bench.sweeps.sweep
    from bench.cli import main

    path = tmp_path / "long.toml"
    path.write_text('task = "moons"\ntrials = 200\nseeds = 1\n[fixed]\nn_samples = 100000\n'
                    "epochs = 1000\n")
    seen = []

    def fake_sweep(spec, storage, **kwargs):
        seen.append(spec.allow_long)
        return types.SimpleNamespace(ok=True, worker_exit_codes=[])

    monkeypatch.setattr(bench.sweeps.sweep, "sweep", fake_sweep)
    assert main(["sweep", str(path), "--storage", str(tmp_path / "j"), "--quiet"]) == 2
    assert seen == []
    assert main(["sweep", str(path), "--storage", str(tmp_path / "j"), "--quiet",
                 "--no-limits", "--seeds", "2"]) == 0
    assert seen == [True]


@pytest.mark.parametrize("name, allowed", [
    ("moons\u3000run", True),  # an ideographic space, as an IME types it
    ("moons\u00a0run", True),  # a no-break space
    ("optimizers \U0001F469\u200D\U0001F52C", True),  # an emoji joined by ZWJ
    ("moons\trun", False),
    ("moons\u2028run", False),  # a line separator breaks the line as a newline does
    ("moons\u2029run", False),
    ("moons\u202erun", False),  # a right-to-left override reorders the rest of a title
    ("moons\u200brun", False),  # a zero-width space: two names that look alike
])
def test_a_study_name_is_any_text_on_one_line(tmp_path, name, allowed):
    import json

    path = write(tmp_path, f"name = {json.dumps(name, ensure_ascii=False)}\n" + GOOD)
    if allowed:
        assert load_study_file(path).name == name
    else:
        with pytest.raises(UsageError, match=rf"holds a newline, tab or other control character "
                                             rf"\(U\+{ord(name[5]):04X}\)"):
            load_study_file(path)


def test_a_name_with_a_lone_surrogate_is_refused_through_the_api(tmp_path):
    """TOML cannot hold one, but a dict given to bench.api.sweep can; no report could encode it."""
    from bench.api import sweep

    with pytest.raises(UsageError, match=r"\(U\+D800\)"):
        sweep({"name": "lin\ud800", "task": "linear", "trials": 1, "seeds": 1,
               "fixed": {"hidden": [4], "epochs": 1}}, storage=str(tmp_path / "j.journal"))
    assert not (tmp_path / "j.journal").exists()

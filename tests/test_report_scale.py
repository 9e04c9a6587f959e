"""A report on a study of thousands of trials: it builds, and the charts that would draw
thousands of points aggregate them and say so."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from bench.engines.reference import train
from bench.report import build, charts, history
from bench.spec import RunSpec
from bench.sweeps.trials import encode_runs

TRIALS = 3000
SPEC = RunSpec(task="moons", n_samples=60, hidden=(4,), epochs=3, batch_size=None, loss="bce")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A journal storage holding one random-search study of `TRIALS` two-seed trials, stored
    as `bench sweep` stores them (runs as JSON text, `end`, `worker`): one real training per
    seed is the template, each trial its own optimizer, lr and a plausible accuracy."""
    root = tmp_path_factory.mktemp("big")
    path = str(root / "big.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    study = optuna.create_study(study_name="big", storage=storage, direction="maximize")
    for key, value in {"task": "moons", "model": "mlp", "objective": "val_accuracy",
                       "directions": ["maximize"], "study_file": "big.toml",
                       "nnbench_study": {"name": "big", "seeds": [0, 1],
                                         "space": {"optimizer": ["sgd", "adam"],
                                                   "lr": {"low": 1e-4, "high": 1.0}}}}.items():
        study.set_user_attr(key, value)
    template = [train(SPEC.replace(seed=s)).to_dict() for s in (0, 1)]
    rng = np.random.default_rng(0)
    dists = {"optimizer": CategoricalDistribution(["sgd", "adam"]),
             "lr": FloatDistribution(1e-4, 1.0, log=True)}
    trials = []
    for number in range(TRIALS):
        optimizer = ("sgd", "adam")[number % 2]
        lr = float(10 ** rng.uniform(-4, 0))
        peak = 0.9 - 0.05 * (math.log10(lr) + (2.5 if optimizer == "adam" else 0.5)) ** 2
        runs = []
        for run in template:
            acc = float(np.clip(peak + rng.normal(0, 0.02), 0.4, 1.0))
            runs.append(dict(run, spec=dict(run["spec"], optimizer=optimizer, lr=lr),
                             metrics=dict(run["metrics"], val_accuracy=acc)))
        value = sum(r["metrics"]["val_accuracy"] for r in runs) / len(runs)
        trials.append(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=value,
            params={"optimizer": optimizer, "lr": lr}, distributions=dists,
            user_attrs={"runs": encode_runs(runs), "end": {"kind": "complete"},
                        "worker": {"host": "h", "pid": 1}}))
    study.add_trials(trials)
    return path


def test_a_study_of_thousands_of_trials_builds_and_says_what_it_aggregated(
        big: str, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = build.build_report(big, out, timing_paths=[], reproduce_path=tmp_path / "x")
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 2 * TRIALS and not any("malformed" in n for n in result.notes)
    assert len(pd.read_csv(out / "tables" / "configs.csv")) == TRIALS
    found = {c.key: c for c in result.charts}
    # the learning-rate lines: at most MAX_LINE_POINTS points each, every configuration binned
    lr = found["lr_sensitivity"]
    assert "aggregated" in lr.caption and f"{TRIALS:,} configurations" in lr.caption
    assert f"cut into {charts.MAX_LINE_POINTS} log-spaced bins" in lr.caption
    table = pd.read_csv(out / lr.table)
    per_line = table.groupby("line")
    assert per_line.size().max() <= charts.MAX_LINE_POINTS
    assert per_line["bin_configs"].sum().sum() == TRIALS
    # each point is the best configuration of its bin
    configs = pd.read_csv(out / "tables" / "configs.csv")
    best_adam = configs[configs["optimizer"] == "adam"]["val_accuracy_mean"].max()
    assert table.loc[table["line"] == "adam", "val_accuracy_mean"].max() == pytest.approx(
        best_adam)
    # the history: aggregated per bin of trials, said in the caption
    hist = found["history_big"]
    assert f"aggregated in {history.BINS} bins" in hist.caption
    assert f"{TRIALS} complete" in hist.caption or f"{TRIALS:,}" in hist.caption
    # the page shows both captions
    page = (out / "index.html").read_text()
    assert f"{charts.MAX_LINE_POINTS} log-spaced bins" in page
    assert f"aggregated in {history.BINS} bins" in page


def test_few_trials_are_drawn_one_by_one() -> None:
    assert charts.log_bins(pd.Series([0.0, 1e-4, 1e-2, 1.0]), 4).tolist() == [-1, 0, 2, 3]
    assert charts.log_bins(pd.Series([0.0, 0.0]), 4).tolist() == [-1, -1]
    assert history._spaced(list(range(10))) == list(range(10))
    spaced = history._spaced(list(range(10_000)))
    assert len(spaced) == history.MAX_MARKS and spaced[0] == 0 and spaced[-1] == 9_999

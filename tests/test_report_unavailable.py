"""A report on studies whose task or model is not available here (a plugin not loaded, a data
file gone): everything stored is reported, what needs the network is skipped in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution

from bench.cli import main
from bench.engines.reference import train
from bench.report import build, tables
from bench.spec import RunSpec
from bench.sweeps.trials import encode_runs

TINY = RunSpec(task="moons", n_samples=60, hidden=(4,), epochs=3, batch_size=None, loss="bce")


def _study(url: str, name: str, task: str, model: str, plugins: list[dict] | None) -> None:
    """A study stored as `bench sweep` stores it, whose runs name `task` and `model` (trained
    on moons with an MLP, then renamed: the shape is real, the names unknown here)."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for key, value in {"task": task, "model": model, "objective": "val_accuracy",
                       "directions": ["maximize"], "study_file": f"studies/{name}.toml",
                       "nnbench_study": {"name": name, "seeds": [0, 1]}}.items():
        study.set_user_attr(key, value)
    if plugins is not None:
        study.set_user_attr("plugins", plugins)
    dist = {"optimizer": CategoricalDistribution(["adam", "sgd"])}
    for optimizer in ("sgd", "adam", "sgd", "adam"):
        runs = []
        for seed in (0, 1):
            run = train(TINY.replace(seed=seed, optimizer=optimizer, lr=0.1)).to_dict()
            run["spec"] = dict(run["spec"], task=task, model=model)
            runs.append(run)
        value = sum(r["metrics"]["val_accuracy"] for r in runs) / len(runs)
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=value, params={"optimizer": optimizer},
            distributions=dist, user_attrs={"runs": encode_runs(runs), "host": "h",
                                            "end": {"kind": "complete"}}))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("unavailable")
    url = f"sqlite:///{root / 'optuna.db'}"
    _study(url, "spiral_tanh", "spiral", "tanh_net",
           [{"source": "examples/spiral_plugin.py", "sha256": "ab" * 32}])
    _study(url, "moons_tanh", "moons", "tanh_net", None)
    _study(url, "gone_file", str(root / "gone.csv"), "mlp", None)
    return url


def test_what_is_stored_is_reported_and_what_needs_the_network_is_named(
        storage: str, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = build.build_report(storage, out, timing_paths=[], reproduce_path=tmp_path / "x")
    runs = pd.read_csv(out / "tables" / "runs.csv")
    # every stored run is read: 3 studies x 4 trials x 2 seeds, none dropped as malformed
    assert runs.groupby("study").size().to_dict() == {"gone_file": 8, "moons_tanh": 8,
                                                      "spiral_tanh": 8}
    assert not any("malformed" in n for n in result.notes)
    assert set(runs.loc[runs["study"] == "spiral_tanh", "model"]) == {"tanh_net"}
    curves = pd.read_csv(out / "tables" / "curves.csv")
    assert set(curves["study"]) >= {"spiral_tanh", "moons_tanh", "gone_file"}
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert set(summary["study"]) == {"spiral_tanh", "moons_tanh", "gone_file"}
    keys = {c.key for c in result.charts}
    assert {"history_spiral_tanh", "history_moons_tanh", "history_gone_file", "curves",
            "optimizers"} <= keys
    assert not any(k.startswith("boundary_") for k in keys)
    skipped = sorted(result.skipped)
    assert len(skipped) == 3
    assert skipped[0].startswith("decision boundaries of study 'gone_file' skipped: data file "
                                 "task ")
    assert "put the data file back" in skipped[0]
    assert skipped[1] == ("decision boundaries of study 'moons_tanh' skipped: model 'tanh_net' "
                          "is not registered here (pass --plugin PATH|MODULE naming the plugin "
                          "that registers it)")
    assert skipped[2] == ("decision boundaries of study 'spiral_tanh' skipped: task 'spiral' is "
                          "not registered here (pass --plugin examples/spiral_plugin.py, "
                          "recorded by the study)")
    html = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    for line in skipped:
        sentence = line[0].upper() + line[1:]
        assert sentence.replace("'", "&#39;") in html
        assert sentence in md


def test_the_cli_names_each_skip_on_stderr_in_one_line(storage: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--storage", storage, "--out", str(tmp_path / "r"), "--timing",
                 "--reproduce", str(tmp_path / "x")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("bench report: decision boundaries of study ")
                                 for e in err)
    assert any("--plugin examples/spiral_plugin.py" in e for e in err)


def test_unavailable_names_the_missing_piece(tmp_path: Path) -> None:
    assert tables.unavailable("moons", "mlp") is None
    assert tables.unavailable("spiral", "mlp") == "task 'spiral' is not registered here"
    assert tables.unavailable("moons", "nosuch") == "model 'nosuch' is not registered here"
    gone = tables.unavailable(str(tmp_path / "x.csv"), "mlp")
    assert gone is not None and gone.startswith("data file task ") and "not found" in gone
    # a run that is malformed for another reason is still left out with its reason
    runs, problems = tables.clean_runs([{"spec": {"task": "moons", "lr": -1.0}, "seed": 0}])
    assert runs == [] and "RunSpec refuses" in problems[0]


def test_a_model_given_as_code_gets_its_decision_boundary(tmp_path: Path) -> None:
    """With its model registered (here a built-in given as code, as a plugin's is), a study's
    boundary is drawn: from the final parameters the sweep kept, or retrained."""
    from bench.report import boundaries
    from bench.results import encode_params
    from tests._report_study import make_study

    spec = TINY.replace(model="relu_mlp_20x3_code", hidden=None)
    result = train(spec, keep_params=True)
    run = dict(result.to_dict(), final_params=encode_params(result.params))
    predict, head, _, (x_val, _) = boundaries.stored_for_boundary(run)
    _, _, p = boundaries.boundary_grid(predict, head, x_val, steps=20)
    assert p.shape == (20, 20) and ((p >= 0) & (p <= 1)).all()
    retrained, head, _, _ = boundaries.retrain_for_boundary(run["spec"])
    assert np.array_equal(retrained(x_val), predict(x_val))  # the same weights, bit for bit
    url = f"sqlite:///{tmp_path / 'o.db'}"
    make_study(url, "code", spec, [{"optimizer": "sgd"}, {"optimizer": "adam"}], seeds=(0,))
    out = build.build_report(url, tmp_path / "r", timing_paths=[],
                             reproduce_path=tmp_path / "x")
    assert "boundary_code" in {c.key for c in out.charts} and out.skipped == []

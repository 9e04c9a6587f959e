"""Tidy tables out of Optuna storages and timing files (bench/tables.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from bench.report import answers, build, tables, views
from bench.spec import RunSpec
from bench.store import write_json_atomic
from bench.sweeps.storage import default_storage_url, missing_storage_reason, open_storage
from bench.sweeps.trials import decode_runs
from tests._report_study import make_study

TINY = RunSpec(task="moons", n_samples=60, hidden=(4,), epochs=3, batch_size=None, loss="bce")


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A journal storage with one real two-seed study (one trial diverges)."""
    path = tmp_path_factory.mktemp("tables") / "optuna.journal"
    url = str(path)
    store = open_storage(url)  # writable: the test makes the study
    make_study(store, "tiny", TINY, [{"optimizer": "sgd", "lr": 0.5, "weight_decay": 0.0},
                                     {"optimizer": "adam", "lr": 0.05, "weight_decay": 0.0},
                                     {"optimizer": "sgd", "lr": 1e6, "weight_decay": 1e6}],
               seeds=(0, 1))
    return url


def test_aggregate_matches_hand_computed_t_interval() -> None:
    df = pd.DataFrame({"g": ["a", "a", "a", "b"], "x": [1.0, 2.0, 3.0, 5.0]})
    agg = tables.aggregate(df, ["g"], ["x"]).set_index("g")
    assert agg.loc["a", "x_mean"] == pytest.approx(2.0)
    assert agg.loc["a", "x_std"] == pytest.approx(1.0)
    # t(0.975, 2) = 4.302653 -> 4.302653 / sqrt(3) = 2.4841
    assert agg.loc["a", "x_ci95"] == pytest.approx(2.4841, abs=1e-4)
    assert agg.loc["a", "x_n"] == 3
    # one seed: a mean, but no spread and no interval (never a fake zero)
    assert agg.loc["b", "x_mean"] == 5.0
    assert math.isnan(agg.loc["b", "x_ci95"]) and math.isnan(agg.loc["b", "x_std"])


def test_aggregate_leaves_non_finite_values_out_but_counts_the_runs() -> None:
    df = pd.DataFrame({"g": ["a"] * 3, "x": [1.0, float("nan"), 3.0]})
    row = tables.aggregate(df, ["g"], ["x"]).iloc[0]
    assert row["n_runs"] == 3 and row["x_n"] == 2 and row["x_mean"] == 2.0


def test_runs_table_has_one_row_per_trial_and_seed_with_documented_columns(storage: str) -> None:
    studies = tables.load_studies(storage)
    runs = tables.runs_table(studies)
    assert len(runs) == 3 * 2
    for col in (*tables.RUN_COLUMNS, "lr", "optimizer", "loss", "hidden", "batch_size",
                "val_accuracy", "test_accuracy", "train_accuracy", "val_loss"):
        assert col in runs.columns, col
    assert set(runs["seed"]) == {0, 1}
    assert (runs["host"] == "testhost").all()
    # values are the stored RunResult values, not recomputed
    trial = studies[0].trials[1]
    stored = [r["metrics"]["val_accuracy"] for r in decode_runs(trial.user_attrs["runs"])]
    assert runs.loc[runs["trial"] == 1, "val_accuracy"].tolist() == stored
    diverged = runs[runs["lr"] == 1e6]
    assert diverged["diverged"].all() and diverged["val_accuracy"].isna().all()
    assert (diverged["state"] == "FAIL").all() and diverged["failure_reason"].notna().all()
    assert (runs["epoch_seconds"].dropna() > 0).all()


def test_configs_trials_and_curves_tables(storage: str) -> None:
    studies = tables.load_studies(storage)
    runs = tables.runs_table(studies)
    configs = tables.configs_table(runs)
    assert len(configs) == 3
    for col in ("study", "trial", "optimizer", "lr", "n_runs", "n_diverged",
                "val_accuracy_mean", "val_accuracy_std", "val_accuracy_ci95", "val_accuracy_n"):
        assert col in configs.columns, col
    row = configs[configs["trial"] == 0].iloc[0]
    values = runs.loc[runs["trial"] == 0, "val_accuracy"].tolist()
    assert row["val_accuracy_mean"] == pytest.approx(sum(values) / 2)
    trials = tables.trials_table(studies)
    assert trials["state"].tolist() == ["COMPLETE", "COMPLETE", "FAIL"]
    assert "param_lr" in trials.columns and trials["n_seeds"].tolist() == [2, 2, 2]
    curves = tables.curves_table(studies)
    assert list(curves.columns) == list(tables.CURVE_COLUMNS)
    one = curves[(curves["trial"] == 0) & (curves["seed"] == 0) & (curves["curve"] == "train_loss")]
    assert one["epoch"].tolist() == [1, 2, 3]


def test_missing_storage_is_reported_and_never_created(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert "no SQLite storage file" in missing_storage_reason(url)
    with pytest.raises(tables.UsageError, match="make sweep"):
        tables.load_studies(url)
    assert not (tmp_path / "none.db").exists()
    assert default_storage_url(tmp_path) is None
    (tmp_path / "results").mkdir()
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'results' / 'optuna.db'}")
    assert default_storage_url(tmp_path).startswith("sqlite:///")
    (tmp_path / "results" / "optuna.journal").write_text("")
    assert default_storage_url(tmp_path).endswith("optuna.journal")


def test_unreadable_storage_url_is_a_usage_error() -> None:
    with pytest.raises(tables.UsageError, match="--storage"):
        tables.load_studies("nosuchdriver://x/y")


def test_timing_table_reads_the_schema_and_skips_other_files(tmp_path) -> None:
    m = {"task": "moons", "model": "mlp", "width": 20, "batch_size": 64, "engine": "reference",
         "k": 1, "device": "cpu", "dtype": "float32", "threads": 2, "warmup": 1, "repeats": 3,
         "epoch_seconds": [0.1, 0.2, 0.3], "epoch_seconds_median": 0.2,
         "epoch_seconds_iqr": 0.1, "iqr_over_median": 0.5, "noisy": True,
         "samples_per_second_median": 5000.0, "per_trial_epoch_seconds_median": 0.2,
         "cuda_event_seconds_median": None}
    good = write_json_atomic(tmp_path / "timing" / "0001_t.json", {
        "schema": "nnbench.timing/1", "created": "2026-01-01T00:00:00", "command": "bench time",
        "git_commit": "abc", "machine": {"host": "h", "cpu_model": "c", "gpu_name": None,
                                         "torch_version": "2"}, "measurements": [m, m]})
    other = tmp_path / "timing" / "0002_x.json"
    other.write_text(json.dumps({"schema": "something/else"}))
    broken = tmp_path / "timing" / "0003_y.json"
    broken.write_text("{")
    df, notes = tables.timing_table([good, other, broken])
    assert len(df) == 2 and df["host"].tolist() == ["h", "h"]
    assert list(df.columns[:len(tables.TIMING_COLUMNS)]) == list(tables.TIMING_COLUMNS)
    assert len(notes) == 2 and "0002_x.json" in notes[0] and "unreadable" in notes[1]
    assert tables.timing_files(tmp_path) == []  # only results/timing and results/baselines


# --- issue 11: anything in the storage or the input files is read without a traceback ---------

def test_plain_and_malformed_studies_load_with_what_was_skipped(tmp_path) -> None:
    from optuna.distributions import CategoricalDistribution
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = str(tmp_path / "j.journal")
    store = JournalStorage(JournalFileBackend(url))
    plain = optuna.create_study(study_name="plain", storage=store)
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    odd = optuna.create_study(study_name="odd", storage=store, direction="maximize")
    odd.set_user_attr("nnbench_study", ["not", "a", "mapping"])
    odd.set_user_attr("objective", 5)
    odd.set_user_attr("task", ["moons"])
    # (a task not registered here is no malformed record: tests/test_report_unavailable.py)
    for runs in ("oops", [1, {"spec": {"task": "moons", "model": "mlp", "lr": -1.0}}]):
        odd.add_trial(optuna.trial.create_trial(
            value=0.5, params={"state": "x"}, user_attrs={"runs": runs, "worker": "w"},
            distributions={"state": CategoricalDistribution(["x"])}))
    notes: list[str] = []
    studies = {s.name: s for s in tables.load_studies(url, notes)}
    assert notes == [] and set(studies) == {"plain", "odd"}
    s = studies["odd"]
    assert s.objective == "value" and s.task is None and len(s.skipped) == 3
    runs = tables.runs_table(list(studies.values()))
    assert len(runs) == 4 and runs["seed"].isna().all()
    assert set(runs["state"]) == {"COMPLETE"}  # the 'state' param did not overwrite the column
    trials = tables.trials_table(list(studies.values()))
    assert "param_state" in trials.columns and (trials["n_seeds"] == 0).all()
    assert tables.curves_table(list(studies.values())).empty


def test_timing_table_survives_garbage(tmp_path) -> None:
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00")
    odd = tmp_path / "o.json"
    odd.write_text(json.dumps({"schema": tables.TIMING_SCHEMA, "machine": "m",
                               "measurements": [1, {"task": "moons", "engine": 3,
                                                    "epoch_seconds_median": "fast",
                                                    "width": [1], "device": "cpu"}]}))
    df, notes = tables.timing_table([binary, tmp_path, tmp_path / "missing.json", odd])
    assert len(df) == 1 and math.isnan(df["epoch_seconds_median"].iloc[0])
    assert df["engine"].iloc[0] is None and math.isnan(df["width"].iloc[0])
    assert len(notes) == 4 and "malformed measurement" in notes[-1]


def test_reproduce_table_says_why_it_is_not_shown(tmp_path) -> None:
    garbage = tmp_path / "g.csv"
    garbage.write_text("a,b\n1,2\n")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\x00\xff\xfe\x89")
    values = tmp_path / "v.csv"
    values.write_text("recipe,metric,verdict,mean\nr,val_accuracy,ok,high\n")
    notes: list[str] = []
    assert tables.reproduce_table(tmp_path / "none.csv", notes) is None
    assert tables.reproduce_table(tmp_path, notes) is None
    assert tables.reproduce_table(garbage, notes) is None
    assert tables.reproduce_table(binary, notes) is None
    df = tables.reproduce_table(values, notes)
    assert df is not None and math.isnan(df["mean"].iloc[0])
    assert len(notes) == 4 and "No reproduction table" in notes[0]
    assert "unreadable" in notes[1] and "lacks recipe, metric, verdict" in notes[2]


# --- how trials ended ---------------------------------------------------------------------------

FOUR_ENDS = [{"lr": lr, "weight_decay": wd} for lr, wd in
             ((0.1, 0.0), (0.5, 0.0), (1e6, 1e6), (0.3, 0.0), (0.2, 0.0))]
ENDS = {3: {"kind": "pruned", "epoch": 2, "pruner": "median"},
        4: {"kind": "cannot_run", "why": "device 'cuda' is not available on testhost",
            "host": "testhost"}}
EXPECTED = {0: ("complete", "complete"), 1: ("complete", "complete"),
            2: ("diverged", "diverged at epoch 2 (seeds 0, 1)"),
            3: ("pruned", "pruned at epoch 2 (median pruner)"),
            4: ("cannot_run", "cannot run here: device 'cuda' is not available on testhost")}


@pytest.mark.parametrize("legacy", [False, True], ids=["end attribute", "older storage"])
def test_each_way_a_trial_ends_has_its_own_kind_and_detail(tmp_path, legacy: bool) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    make_study(url, "ends", TINY.replace(optimizer="sgd"), FOUR_ENDS, seeds=(0, 1), ends=ENDS,
               legacy=legacy)
    studies = tables.load_studies(url)
    trials = tables.trials_table(studies).set_index("trial")
    got = {n: (r["end"], r["end_detail"]) for n, r in trials.iterrows()}
    assert got == EXPECTED
    assert trials.loc[3, "end_epoch"] == 2 and math.isnan(trials.loc[0, "end_epoch"])
    runs = tables.runs_table(studies)
    assert {"end", "end_detail"} <= set(runs.columns)
    # the pruned trial keeps its partial runs (2 epochs each), the cannot-run one a bare row
    pruned = runs[runs["trial"] == 3]
    assert len(pruned) == 2 and set(pruned["end"]) == {"pruned"}
    assert set(pruned["epochs_run"]) == {2}
    cannot = runs[runs["trial"] == 4]
    assert len(cannot) == 1 and cannot["seed"].isna().all()
    assert cannot["end_detail"].iloc[0].startswith("cannot run here: device 'cuda'")


# --- the summary's answers, rule by rule, on hand-made configuration tables ----------------------

def _configs(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def test_threshold_is_the_largest_value_within_the_best_ci() -> None:
    df = _configs([(0.0, 0.925, 0.015), (1e-5, 0.930, 0.010), (3e-4, 0.921, 0.010),
                   (1e-3, 0.900, 0.010), (1e-2, 0.600, 0.050)],
                  ("l1", "val_accuracy_mean", "val_accuracy_ci95"))
    said = answers.threshold_sentence(df, "l1", "val_accuracy", higher=True)
    assert said == ("How much l1: the largest l1 within the best's seed spread is l1=0.0003 "
                    "(0.921 ± 0.010; best l1=1e-05, 0.930 ± 0.010, 95% CI down to 0.920). "
                    "From l1=0.01 on it collapses: 0.600 ± 0.050 at best.")
    # lower is better (a loss): within means at most best + CI
    loss = df.assign(val_loss_mean=[0.1, 0.09, 0.095, 0.2, 1.0], val_loss_ci95=0.01)
    said = answers.threshold_sentence(loss, "l1", "val_loss", higher=False)
    assert "largest l1 within the best's seed spread is l1=0.0003" in said
    assert "95% CI up to 0.1" in said
    # one seed: no CI, so no threshold is claimed
    one = df.assign(val_accuracy_ci95=float("nan"))
    assert "one seed only" in answers.threshold_sentence(one, "l1", "val_accuracy", True)
    # the best is the largest already
    top = df.assign(val_accuracy_mean=[0.5, 0.6, 0.7, 0.8, 0.95])
    assert "no larger l1" in answers.threshold_sentence(top, "l1", "val_accuracy", True)


def test_threshold_takes_each_value_at_its_best_other_settings() -> None:
    # l1=1e-3 is poor at lr=1 but within the CI at lr=0.1: it counts at its best
    df = _configs([(0.0, 0.1, 0.93, 0.01), (0.0, 1.0, 0.80, 0.01),
                   (1e-3, 0.1, 0.925, 0.01), (1e-3, 1.0, 0.50, 0.01)],
                  ("l1", "lr", "val_accuracy_mean", "val_accuracy_ci95"))
    assert "is l1=0.001 (0.925" in answers.threshold_sentence(df, "l1", "val_accuracy", True)


def test_collapse_names_where_one_option_fails_and_the_other_holds() -> None:
    rows = [("mse", lr, a, 0.02) for lr, a in ((0.1, 0.90), (1.0, 0.91), (3.0, 0.58),
                                              (10.0, 0.58))]
    rows += [("bce", lr, a, 0.02) for lr, a in ((0.1, 0.89), (1.0, 0.92), (3.0, 0.91),
                                               (10.0, 0.91))]
    df = _configs(rows, ("loss", "lr", "val_accuracy_mean", "val_accuracy_ci95"))
    said = answers.collapse_sentence(df, "loss", "lr", "val_accuracy", higher=True)
    assert said == "MSE collapses to 0.580 at lr >= 3 while BCE keeps 0.910."
    # a small gap, or overlapping CIs, is no collapse
    close = df.assign(val_accuracy_mean=[0.9, 0.91, 0.85, 0.85, 0.89, 0.92, 0.91, 0.91])
    assert answers.collapse_sentence(close, "loss", "lr", "val_accuracy", True) == ""
    wide = df.assign(val_accuracy_ci95=0.2)
    assert answers.collapse_sentence(wide, "loss", "lr", "val_accuracy", True) == ""
    # every seed diverged at the low end: 'diverges', and the range reads 'lr <= x'
    div = df.copy()
    div.loc[(div["loss"] == "bce") & (div["lr"] == 0.1), "val_accuracy_mean"] = float("nan")
    said = answers.collapse_sentence(div, "loss", "lr", "val_accuracy", True)
    assert "BCE diverges at lr <= 0.1 while MSE keeps 0.900" in said


def test_ceiling_warns_when_several_options_saturate_the_metric() -> None:
    df = _configs([("adam", 0.01, 0.999), ("adam", 0.1, 0.97), ("sgd", 0.1, 0.998),
                   ("sgd", 1.0, 0.9)], ("optimizer", "lr", "val_accuracy_mean"))
    said = answers.ceiling_sentence(df, "optimizer", "val_accuracy", "validation accuracy")
    assert said == ("Ceiling: adam (0.999) and sgd (0.998) both reach 0.995 validation "
                    "accuracy or more: the task is too easy to tell them apart.")
    one = df.assign(val_accuracy_mean=[0.999, 0.97, 0.98, 0.9])
    assert answers.ceiling_sentence(one, "optimizer", "val_accuracy", "x") == ""
    loss = df.rename(columns={"val_accuracy_mean": "val_loss_mean"})
    assert answers.ceiling_sentence(loss, "optimizer", "val_loss", "x") == ""
    plain = answers.ceiling_sentence(df, None, "val_accuracy", "validation accuracy")
    assert plain.startswith("Ceiling: 2 configurations reach 0.995")


# --- the tables behind the charts ---------------------------------------------------------------

def test_batch_sizes_are_compared_at_their_best_lr_and_full_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    make_study(url, "bs", TINY.replace(optimizer="adam", epochs=4),
               [{"batch_size": b, "lr": lr} for b in (10, None) for lr in (0.01, 0.1)],
               seeds=(0, 1))
    result = build.build_report(url, tmp_path / "out", timing_paths=[], boundaries=False)
    shown = pd.read_csv(tmp_path / "out" / "tables" / "batch_size.csv")
    studies = tables.load_studies(url)
    (v,) = views.study_views(tables.runs_table(studies), studies)
    best = v.ranked().groupby("batch_size").head(1).set_index("batch_size")
    assert sorted(shown["batch_size"]) == [10, 60]  # full batch = the 60 training examples
    for _, row in shown.iterrows():
        assert row["trial"] == best.loc[row["batch_size"], "trial"]
        assert row["best_settings"].startswith("lr=")
    chart = next(c for c in result.charts if c.key == "batch_size")
    assert "'full' is full-batch training" in chart.caption
    assert "only the sweep's time is shown" in chart.caption


def test_one_model_alone_is_bench_times_k1_cpu_measurement_at_the_studys_width() -> None:
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from bench.report import charts

    timing = pd.DataFrame({"task": "moons", "model": "mlp", "width": [20, 20, 20, 64],
                           "k": [1, 8, 1, 1], "device": ["cpu", "cpu", "cuda", "cpu"],
                           "engine": "reference", "batch_size": [16, 16, 16, 16],
                           "epoch_seconds_median": [0.002, 0.004, 0.001, 0.009]})
    ax = Figure().subplots()
    two = SimpleNamespace(task="moons", model="mlp", runs=pd.DataFrame({"hidden": ["20-20"]}))
    assert charts._alone_timing(ax, timing, two)
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [pytest.approx(2.0)]  # ms, K=1 on the CPU at width 20
    one = SimpleNamespace(task="moons", model="mlp", runs=pd.DataFrame({"hidden": ["20"]}))
    assert not charts._alone_timing(Figure().subplots(), timing, one)


def test_labels_leave_out_parameters_that_did_not_apply() -> None:
    """A conditional space: an Adam trial has no momentum, so its label shows none (the run
    holds the default 0 there), while an SGD trial's label shows its momentum."""
    from bench.report.views import StudyView

    configs = pd.DataFrame({"trial": [0, 1], "optimizer": ["adam", "sgd"], "lr": [0.01, 0.1],
                            "momentum": [0.0, 0.9]})
    view = StudyView("s", "moons", "mlp", "val_accuracy", pd.DataFrame(),
                     ["optimizer", "lr", "momentum"], configs, not_applied={0: {"momentum"}})
    assert view.config_label(configs.iloc[0]) == "optimizer=adam, lr=0.01"
    assert view.config_label(configs.iloc[1]) == "optimizer=sgd, lr=0.1, momentum=0.9"

"""The report: files, documented columns, CIs, charts, empty storage, atomic replacement."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import zipfile
from pathlib import Path

import optuna
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.errors import UsageError
from bench.report import build, figures, history, page, tables, views
from bench.spec import RunSpec
from bench.store import write_json_atomic
from tests._report_study import make_study

TINY = RunSpec(task="moons", n_samples=60, hidden=(4,), epochs=4, batch_size=None, loss="bce")


def _measurement(device: str, batch: int, seconds: float) -> dict:
    return {"task": "moons", "model": "mlp", "width": 20, "batch_size": batch,
            "engine": "reference", "k": 1, "device": device, "dtype": "float32", "threads": 2,
            "warmup": 1, "repeats": 3, "epoch_seconds": [seconds] * 3,
            "epoch_seconds_median": seconds, "epoch_seconds_iqr": 0.0, "iqr_over_median": 0.0,
            "noisy": False, "samples_per_second_median": 1000 / seconds,
            "per_trial_epoch_seconds_median": seconds, "cuda_event_seconds_median": None}


def _timing_file(path: Path, devices: tuple[str, ...]) -> Path:
    # CPU time grows with the batch, CUDA time stays flat: CUDA wins from batch 256.
    ms = [_measurement("cpu", b, 0.001 * b) for b in (16, 64, 256, 1024) if "cpu" in devices]
    ms += [_measurement("cuda", b, 0.1) for b in (16, 64, 256, 1024) if "cuda" in devices]
    return write_json_atomic(path, {
        "schema": "nnbench.timing/1", "created": "2026-01-01T00:00:00", "command": "bench time",
        "git_commit": "abc", "machine": {"host": "h", "cpu_model": "cpu", "gpu_name": "GPU",
                                         "torch_version": "2"}, "measurements": ms})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, page.ReportResult, str]:
    """A report over real two-seed and one-seed studies, a timing file and a reproduce table."""
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'optuna.db'}"
    make_study(url, "opt", TINY, [{"optimizer": o, "lr": lr} for o in ("sgd", "adam")
                                  for lr in (0.01, 0.1, 1.0)], seeds=(0, 1))
    make_study(url, "single", TINY.replace(optimizer="adam"), [{"lr": 0.01}, {"lr": 0.1}],
               seeds=(3,))
    timing = _timing_file(root / "timing.json", ("cpu", "cuda"))
    repro = root / "reproduce.csv"
    pd.DataFrame([{"recipe": "moons_bn_mlp", "notebook": "000", "metric": "train_accuracy",
                   "notebook_figure": 0.998, "mean": 0.997, "ci95": 0.002, "n_seeds": 3,
                   "verdict": "match", "reason": ""}]).to_csv(repro, index=False)
    out = root / "out"
    result = build.build_report(url, out, timing_paths=[timing], reproduce_path=repro,
                                svg=True)
    return out, result, url


def test_every_expected_file_exists(built) -> None:
    out, result, _ = built
    expected = ["index.html", "report.md"]
    expected += [f"tables/{n}.csv" for n in ("runs", "configs", "trials", "curves", "timing",
                                             "summary", "optimizers", "lr_sensitivity",
                                             "curves_best", "timing_crossover", "importances_opt",
                                             "boundary_opt")]
    expected += [f"charts/{n}.{ext}" for n in ("optimizers", "lr_sensitivity", "curves",
                                               "timing", "history_opt", "history_single",
                                               "boundary_opt", "boundary_single")
                 for ext in ("png", "svg")]
    for name in expected:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    assert {str(f) for f in result.files} >= set(expected)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]


def test_tables_have_the_documented_columns(built) -> None:
    out, _, _ = built
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert list(runs.columns[:len(tables.RUN_COLUMNS)]) == list(tables.RUN_COLUMNS)
    assert len(runs) == 6 * 2 + 2 * 1
    configs = pd.read_csv(out / "tables" / "configs.csv")
    for col in ("study", "trial", "optimizer", "lr", "n_runs", "n_diverged"):
        assert col in configs.columns
    for stat in tables.AGG_SUFFIXES:
        assert f"val_accuracy_{stat}" in configs.columns
        assert f"epoch_seconds_{stat}" in configs.columns


def test_two_seed_configs_get_the_t_interval_and_single_seed_gets_none(built) -> None:
    out, _, _ = built
    runs = pd.read_csv(out / "tables" / "runs.csv")
    configs = pd.read_csv(out / "tables" / "configs.csv")
    for _, row in configs[configs["study"] == "opt"].iterrows():
        xs = runs.loc[(runs["study"] == "opt") & (runs["trial"] == row["trial"]),
                      "val_accuracy"].tolist()
        mean = sum(xs) / 2
        # two seeds: s = |a - b| / sqrt(2); half width = t(0.975, 1) * s / sqrt(2)
        half = 12.706204736 * abs(xs[0] - xs[1]) / math.sqrt(2) / math.sqrt(2)
        assert row["val_accuracy_mean"] == pytest.approx(mean)
        assert row["val_accuracy_ci95"] == pytest.approx(half, rel=1e-8)
    single = configs[configs["study"] == "single"]
    assert single["val_accuracy_ci95"].isna().all() and single["val_accuracy_std"].isna().all()
    page = (out / "index.html").read_text()
    summary = pd.read_csv(out / "tables" / "summary.csv").set_index("study")
    assert "(no CI)" in summary.loc["single", "winner_score"]
    assert "±" not in summary.loc["single", "winner_score"]
    assert "one seed only" in summary.loc["single", "verdict"]
    assert "±" in summary.loc["opt", "winner_score"]
    assert re.search(r"(beyond|within) the seed-to-seed spread", summary.loc["opt", "verdict"])
    assert "do not overlap" in page  # the rule is stated on the page


def test_page_is_self_contained_and_says_what_is_missing(built) -> None:
    out, result, _ = built
    page = (out / "index.html").read_text()
    sources = re.findall(r"<img[^>]*src='([^']*)'", page)
    assert len(sources) == len(result.charts) and all(s.startswith("data:image/png;base64,")
                                                      for s in sources)
    assert "<link" not in page and "<script" not in page
    missing = {m.key for m in result.missing}
    assert {"losses", "inits", "l1", "batch_size"} <= missing
    assert "sweeps <code>loss</code>" in page and "sweeps <code>l1</code>" in page
    assert "match" in page and "moons_bn_mlp" in page  # reproduction table
    md = (out / "report.md").read_text()
    for chart in result.charts:
        assert f"]({chart.files[0]})" in md


def test_crossover_is_marked_where_cuda_becomes_faster(built) -> None:
    out, _, _ = built
    cross = pd.read_csv(out / "tables" / "timing_crossover.csv")
    assert cross["status"].tolist() == ["crossover"]
    assert cross["batch_size"].tolist() == [256] and cross["previous_batch_size"].tolist() == [64]


def test_cpu_only_timing_says_so_instead_of_a_crossover(tmp_path: Path) -> None:
    timing = _timing_file(tmp_path / "cpu.json", ("cpu",))
    result = build.build_report(None, tmp_path / "out", timing_paths=[timing],
                                 reproduce_path=tmp_path / "none.csv")
    chart = next(c for c in result.charts if c.key == "timing")
    assert "not measured" in chart.caption
    assert any("CPU measurements only" in n for n in result.notes)
    assert "crossover" not in pd.read_csv(tmp_path / "out" / "tables" / "timing_crossover.csv")[
        "status"].tolist()


def test_boundaries_retrain_the_stored_run_exactly(built) -> None:
    out, _, _ = built
    table = pd.read_csv(out / "tables" / "boundary_opt.csv")
    assert len(table) == 2  # one panel per optimizer
    assert (table["stored_metric"] == table["retrained_metric"]).all()


def test_history_and_importances_handle_degenerate_studies(built) -> None:
    _, result, url = built
    opt = next(s for s in tables.load_studies(url) if s.name == "opt")
    imp, why = history.importances(opt)
    assert why is None and set(imp) == {"optimizer", "lr"}
    assert sum(imp.values()) == pytest.approx(1.0)
    one = tables.StudyData("x", {}, ["maximize"], opt.trials[:1], opt.study)
    assert history.importances(one) == ({}, "1 completed trial(s): importances need at least 2")
    caption = next(c.caption for c in result.charts if c.key == "history_single")
    assert "Importances" in caption


def test_empty_and_missing_storage_give_a_page_that_says_what_is_missing(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty)  # a valid storage without studies
    result = build.build_report(empty, tmp_path / "a", timing_paths=[],
                                 reproduce_path=tmp_path / "none.csv")
    page = (tmp_path / "a" / "index.html").read_text()
    assert "holds no study yet" in page and "No timing files" in page
    assert "No reproduction table" in page and result.charts == []
    assert {m.key for m in result.missing} >= {"optimizers", "lr_sensitivity", "timing",
                                               "history", "boundaries"}
    missing_db = tmp_path / "nothing.db"
    build.build_report(f"sqlite:///{missing_db}", tmp_path / "b", timing_paths=[],
                        reproduce_path=tmp_path / "none.csv")
    assert "no SQLite storage file" in (tmp_path / "b" / "index.html").read_text()
    assert not missing_db.exists()
    build.build_report(None, tmp_path / "c", timing_paths=[], reproduce_path=tmp_path / "x")
    assert "No Optuna storage found" in (tmp_path / "c" / "report.md").read_text()


def test_a_failing_report_keeps_the_previous_one(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    timing = _timing_file(tmp_path / "t.json", ("cpu",))
    build.build_report(None, out, timing_paths=[timing], reproduce_path=tmp_path / "x")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(ctx: figures.Context) -> figures.Chart:
        raise RuntimeError("chart failed")

    monkeypatch.setattr(build, "CHARTS", (*build.CHARTS, broken))
    with pytest.raises(RuntimeError, match="chart failed"):
        build.build_report(None, out, timing_paths=[timing], reproduce_path=tmp_path / "x")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.json"]


def test_cli_report_and_its_usage_errors(built, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    _, _, url = built
    code = main(["report", "--storage", url, "--out", str(tmp_path / "r"), "--timing",
                 "--reproduce", str(tmp_path / "none.csv"), "--no-boundaries"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "index.html" in printed and "not shown" in printed
    assert main(["report", "--storage", "nosuchdriver://x", "--out", str(tmp_path / "s")]) == 2
    assert "--storage" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_page_shows_no_long_floats(built) -> None:
    out, _, _ = built
    text = re.sub(r"<[^>]+>|data:image/png;base64,[^']*", " ",
                  (out / "index.html").read_text())
    def significant(number: str) -> int:
        return len(number.replace(".", "").lstrip("0").rstrip("0"))

    # 3 significant digits, or 3 decimals for accuracies (0.770 ± 1.461): never 0.0206646
    long_floats = [n for n in re.findall(r"\d+\.\d+", text)
                   if significant(n) > 3 and len(n.split(".")[1]) > 3]
    assert long_floats == []
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert summary["winner"].str.contains("lr=").all()


def test_categories_are_compared_at_their_own_best_settings(built) -> None:
    """Each optimizer's box is its best configuration (best lr), not every lr pooled."""
    out, result, url = built
    studies = tables.load_studies(url)
    opt = next(v for v in views.study_views(tables.runs_table(studies), studies)
               if v.name == "opt")
    shown = pd.read_csv(out / "tables" / "optimizers.csv").set_index("optimizer")
    for level, best in opt.ranked().groupby("optimizer").head(1).set_index("optimizer").iterrows():
        assert shown.loc[level, "trial"] == best["trial"]
        assert shown.loc[level, "mean"] == pytest.approx(best["val_accuracy_mean"])
        assert shown.loc[level, "best_settings"].startswith("lr=")
    chart = next(c for c in result.charts if c.key == "optimizers")
    assert "at its own best other settings" in chart.caption and "pooled" in chart.caption
    one = views.StudyView(opt.name, opt.task, opt.model, opt.metric,  # Adam keeps its colour
                          opt.runs[opt.runs["optimizer"] == "adam"], opt.varied, opt.configs)
    for v in (opt, one):
        assert figures.level_colors(v, "optimizer")["adam"] == figures.PALETTE["adam"]


def test_curves_get_one_wide_row_per_study(built) -> None:
    out, _, _ = built
    width, height = Image.open(out / "charts" / "curves.png").size
    n_studies = pd.read_csv(out / "tables" / "curves_best.csv")["study"].nunique()
    assert n_studies == 2 and width / (height / n_studies) > 3
    # the chart's data does not replace the tidy curves table (one row per run x curve x epoch)
    tidy = pd.read_csv(out / "tables" / "curves.csv")
    assert list(tidy.columns) == list(tables.CURVE_COLUMNS)
    assert len(tidy) == len(tidy.drop_duplicates(["study", "trial", "seed", "curve", "epoch"]))


def test_timing_table_is_shown_in_milliseconds_and_percent() -> None:
    timing = pd.DataFrame([{"host": "h", "gpu_name": None, "task": "moons", "k": 1,
                            "epoch_seconds_median": 0.0123456, "iqr_over_median": 0.0512,
                            "noisy": True, "samples_per_second_median": 13864.2}])
    shown = page.display_frame(page.timing_display(timing)).iloc[0]
    assert shown["epoch ms (median)"] == "12.3" and shown["IQR / median (%)"] == "5.12"
    assert shown["samples/s (median)"] == "13,900" and shown["noisy"] == "yes"
    assert "gpu_name" not in shown.index


# --- issue 11: the report never loses or corrupts anything, never leaks a password ---------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".building-" in p.name or ".old-" in p.name)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("setup, reason", [
    (lambda d: (d / "optuna.journal").write_text("{}"), "not an nnbench report"),
    (lambda d: ((d / "index.html").write_text("x"), (d / "notes.txt").write_text("x")),
     "holds 'notes.txt'"),
    (lambda d: ((d / ".nnbench-report").write_text("{"), (d / "index.html").write_text("x")),
     "unreadable .nnbench-report"),
])
def test_out_that_is_not_a_report_is_refused_untouched(tmp_path: Path, setup, reason: str) -> None:
    out = tmp_path / "results"
    out.mkdir()
    setup(out)
    before = _tree(tmp_path)
    with pytest.raises(UsageError, match=reason):
        build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    assert _tree(tmp_path) == before and _leftovers(tmp_path) == []


def test_out_may_be_new_empty_or_an_earlier_report(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert build.replace_refusal(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert build.replace_refusal(tmp_path / "empty") is None
    build.build_report(None, tmp_path / "r", timing_paths=[], reproduce_path=tmp_path / "x")
    assert build.replace_refusal(tmp_path / "r") is None
    marker = json.loads((tmp_path / "r" / ".nnbench-report").read_text())
    assert "index.html" in marker["files"] and "tables/runs.csv" in marker["files"]
    assert "working folder" in build.replace_refusal(tmp_path)
    assert "working folder" in build.replace_refusal(Path("."))
    assert "is a file" in build.replace_refusal(tmp_path / "r" / "index.html")
    (tmp_path / "r" / "tables" / "mine.csv").write_text("mine")
    assert "holds 'tables/mine.csv'" in build.replace_refusal(tmp_path / "r")


def test_full_disk_while_writing_is_one_line_and_keeps_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    before = _tree(out)

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(build, "write_text_atomic", full)
    with pytest.raises(UsageError, match=r"No space left on device.*previous report is kept"):
        build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    assert _tree(out) == before and _leftovers(tmp_path) == []


def test_full_disk_through_the_cli_is_one_line_exit_2(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build, "write_json_atomic", full)
    assert main(["report", "--out", str(tmp_path / "r"), "--timing", "--reproduce",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["write", "swap"])
def test_an_interrupt_leaves_no_temporary_folder_and_the_old_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    out = tmp_path / "out"
    build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    before = _tree(out)
    if stage == "write":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(build, "render_markdown", interrupted)
    else:  # between moving the old report aside and moving the new one in
        real = Path.rename

        def rename(self: Path, target):
            if ".building-" in self.name:
                raise KeyboardInterrupt
            return real(self, target)

        monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    assert _tree(out) == before and _leftovers(tmp_path) == []


def test_study_names_that_look_alike_get_their_own_files() -> None:
    names = ["a b", "a/b", "a_b", "A_B", "a_b ", "é", "e", "n" * 600]
    slugs = [figures.slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    assert len({s.lower() for s in slugs}) == len(names)  # case-insensitive disks too
    assert figures.slug("moons_opt") == "moons_opt"
    assert all(len(s) <= 60 and re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in slugs)


def test_look_alike_study_names_keep_both_charts(tmp_path: Path) -> None:
    url = str(tmp_path / "j.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    for name in ("a b", "a/b"):
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    result = build.build_report(url, tmp_path / "r", timing_paths=[],
                                 reproduce_path=tmp_path / "x", boundaries=False)
    history = sorted(c.key for c in result.charts if c.key.startswith("history_"))
    assert len(history) == 2 and history[0] != history[1]
    for key in history:
        assert (tmp_path / "r" / "charts" / f"{key}.png").exists()
    # PNG only unless --svg asks for SVG too (the `built` report has both)
    assert not list((tmp_path / "r" / "charts").glob("*.svg"))


def test_storage_password_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hunter2-xyz"
    url = f"postgresql://bench:{secret}@db.example:5432/nnbench"
    monkeypatch.setattr(tables, "load_studies", lambda u, notes=None: [])
    result = build.build_report(url, tmp_path / "r", timing_paths=[],
                                 reproduce_path=tmp_path / "x")
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert all(secret not in n for n in result.notes)
    index = (tmp_path / "r" / "index.html").read_text()
    assert "bench:***@db.example" in index
    assert secret not in page.render_markdown(result, [], {"reproduce": None,
                                                             "timing": tables.timing_table([])[0]},
                                                url)


def test_malformed_stored_runs_are_skipped_with_a_note() -> None:
    good = {"spec": {"task": "moons", "model": "mlp"}, "seed": 0, "metrics": {"val_accuracy": 0.9}}
    runs, problems = tables.clean_runs([good, 1, {"spec": {"task": "moons", "lr": -1}},
                                        {"spec": {"task": "moons", "colour": "red"}},
                                        dict(good, metrics={"val_accuracy": "high"}),
                                        dict(good, seed="zero")])
    assert len(runs) == 2 and runs[0]["metrics"] == {"val_accuracy": 0.9}
    assert runs[1]["metrics"] == {} and len(problems) == 5
    # a task not registered here (a plugin not loaded) is no malformed record: kept as stored
    # (tests/test_report_unavailable.py reports such a study)
    known: dict = {}
    runs, problems = tables.clean_runs([{"spec": {"task": "nosuch"}, "seed": 0}], known)
    assert runs[0]["spec"]["task"] == "nosuch" and problems == []
    assert known == {("nosuch", "mlp"): "task 'nosuch' is not registered here"}
    assert tables.clean_runs("oops")[1] == ["attribute 'runs' is a str, not a list; skipped"]
    assert tables.clean_runs(None) == ([], [])


def test_a_chart_that_cannot_draw_odd_values_is_listed_not_fatal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def odd(ctx: figures.Context) -> figures.Chart:
        raise ValueError("Data cannot be log-scaled because all values are <= 0.")

    odd.__name__ = "chart_odd"
    monkeypatch.setattr(build, "CHARTS", (*build.CHARTS, odd))
    result = build.build_report(None, tmp_path / "r", timing_paths=[],
                                 reproduce_path=tmp_path / "x")
    missing = next(m for m in result.missing if m.key == "odd")
    assert "log-scaled" in missing.needs and (tmp_path / "r" / "index.html").exists()


def test_sigterm_while_building_leaves_the_old_report_and_no_temporary_folder(
        tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal")))
    for i in range(6):
        study = optuna.create_study(study_name=f"s{i}", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    old = tmp_path / "r"
    old.mkdir()
    (old / ".nnbench-report").write_text('{"schema": "nnbench.report/1", "files": ["index.html"]}')
    (old / "index.html").write_text("old")
    proc = subprocess.Popen([sys.executable, "-m", "bench", "report", "--storage", "j.journal",
                             "--out", "r", "--no-boundaries", "--timing"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".r.building-*")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the report never started building"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the report finished before SIGTERM arrived")
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1
    assert (old / "index.html").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_the_report_is_readable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        build.build_report(None, tmp_path / "r", timing_paths=[], reproduce_path=tmp_path / "x")
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
             for p in [tmp_path / "r", *(tmp_path / "r").rglob("*")]}
    assert modes["r"] == 0o755 and modes["r/index.html"] == 0o644
    assert {m for p, m in modes.items() if (tmp_path / p).is_file()} == {0o644}
    assert {m for p, m in modes.items() if (tmp_path / p).is_dir()} == {0o755}


def test_report_zip_writes_one_archive_with_relative_links(built, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    _, _, url = built
    out = tmp_path / "rep"
    assert main(["report", "--storage", url, "--out", str(out), "--no-boundaries", "--zip",
                 "--timing", "--reproduce", str(tmp_path / "none.csv")]) == 0
    archive = tmp_path / "rep.zip"
    assert f"archive: {archive}" in capsys.readouterr().out
    assert archive.stat().st_mode & 0o777 == 0o644
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "unpacked")
    files = {f"rep/{p.relative_to(out).as_posix()}" for p in out.rglob("*") if p.is_file()}
    assert names == files - {"rep/.nnbench-report"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "rep.zip", "unpacked"]
    moved = tmp_path / "unpacked" / "rep"  # links are relative: they work wherever it lands
    html, md = (moved / "index.html").read_text(), (moved / "report.md").read_text()
    links = re.findall(r"href='([^'#][^']*)'", html) + re.findall(r"\]\(([^)#]+)\)", md)
    assert links and all("://" not in x and not x.startswith("/") for x in links)
    assert all((moved / link).is_file() for link in links)


def test_a_file_added_to_the_old_report_while_building_is_not_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r"
    build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    real = page.render_markdown

    def meanwhile(*args, **kwargs):
        (out / "notes.txt").write_text("written during the build")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "render_markdown", meanwhile)
    with pytest.raises(UsageError, match=r"holds 'notes\.txt'"):
        build.build_report(None, out, timing_paths=[], reproduce_path=tmp_path / "x")
    assert (out / "notes.txt").read_text() == "written during the build"
    assert _leftovers(tmp_path) == []


def test_folders_left_by_a_report_killed_with_9_are_removed_by_the_next(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker = {"schema": "nnbench.report/1", "pid": dead.pid, "files": []}
    building = tmp_path / ".r.building-abc"
    (building / "tables").mkdir(parents=True)
    (building / "tables" / "runs.csv").write_text("partial")
    (building / ".nnbench-report").write_text(json.dumps(marker))
    old = tmp_path / ".r.old-20260101"
    old.mkdir()
    (old / "index.html").write_text("old")
    (old / ".nnbench-report").write_text(json.dumps(dict(marker, files=["index.html"])))
    alive = tmp_path / ".r.building-alive"
    alive.mkdir()
    (alive / ".nnbench-report").write_text(json.dumps(dict(marker, pid=os.getpid())))
    foreign = tmp_path / ".r.old-mine"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not a report")
    build.build_report(None, tmp_path / "r", timing_paths=[], reproduce_path=tmp_path / "x")
    assert not building.exists() and not old.exists()
    assert alive.exists() and (foreign / "mine.txt").read_text() == "not a report"


def test_names_and_descriptions_are_escaped_in_the_page_and_kept_in_the_markdown(
        tmp_path: Path) -> None:
    """A study name or description holding markup is text on the page, as it is in report.md."""
    from optuna.distributions import CategoricalDistribution

    name, description = "<script>alert(1)</script> & co", "SGD & Adam <b>bold</b>"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("objective", "val_accuracy")
    study.set_user_attr("nnbench_study", {"name": name, "description": description})
    for i, lr in enumerate((0.01, 0.1)):
        runs = [{"spec": {"task": "moons", "model": "mlp", "hidden": [4], "lr": lr},
                 "seed": seed, "engine": "reference", "epochs_run": 2, "diverged": False,
                 "metrics": {"val_accuracy": 0.8 + 0.05 * i + 0.01 * seed},
                 "timing": {"train_seconds": 0.01}, "curves": {}} for seed in (0, 1)]
        study.add_trial(optuna.trial.create_trial(
            value=0.8 + 0.05 * i, params={"lr": lr},
            distributions={"lr": CategoricalDistribution([0.01, 0.1])},
            user_attrs={"runs": runs}))
    build.build_report(str(tmp_path / "j.journal"), tmp_path / "r", timing_paths=[],
                       reproduce_path=tmp_path / "x", boundaries=False)
    index = (tmp_path / "r" / "index.html").read_text()
    assert "<script" not in index and "<b>bold" not in index
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in index
    assert "SGD &amp; Adam &lt;b&gt;bold&lt;/b&gt;" in index
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"**{name}** ({description})" in md and "&amp;" not in md and "&lt;" not in md
    assert page.ENV.autoescape("report.md.j2") is False
    assert page.ENV.autoescape("index.html.j2") is True


def test_pruned_diverged_and_cannot_run_trials_are_told_apart(tmp_path: Path) -> None:
    """Each way a trial ends has its own words in the summary, the history and the lr chart."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    configs = [{"lr": lr, "weight_decay": wd} for lr, wd in
               ((0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (1e6, 1e6), (0.3, 0.0), (0.2, 0.0))]
    make_study(url, "ends", TINY.replace(optimizer="sgd"), configs, seeds=(0, 1),
               ends={4: {"kind": "pruned", "epoch": 2, "pruner": "median"},
                     5: {"kind": "cannot_run", "why": "device 'cuda' is not available on h"}})
    result = build.build_report(url, tmp_path / "out", timing_paths=[], boundaries=False)
    text = pd.read_csv(tmp_path / "out" / "tables" / "summary.csv")["text"].iloc[0]
    assert "How much lr: " in text  # the summary answers its question in numbers
    assert ("Trials: 3 complete, 1 pruned (epoch 2, median pruner), 1 diverged (epoch 2), "
            "1 cannot run here (device 'cuda' is not available on h).") in text
    hist = next(c for c in result.charts if c.key.startswith("history_"))
    assert "1 pruned" in hist.caption and "1 cannot run here" in hist.caption
    lr = next(c for c in result.charts if c.key == "lr_sensitivity")
    assert "1 trial(s) of ends were pruned (1 at epoch 2: lr=0.3)" in lr.caption
    assert "1 trial(s) of ends cannot run here (device 'cuda' is not available on h)" \
        in lr.caption


def test_a_report_of_a_swept_2d_study_loads_no_torch(tmp_path: Path) -> None:
    """Reading stored runs and drawing boundaries from the kept parameters (NumPy) need no
    torch: a report process never pays its import (seconds)."""
    import subprocess
    import sys
    import textwrap

    study = tmp_path / "tiny2d.toml"
    study.write_text(textwrap.dedent("""
        task = "moons"
        trials = 3
        seeds = 2
        sampler = { name = "random", seed = 0 }
        [fixed]
        n_samples = 200
        hidden = [6]
        batch_norm = true
        epochs = 3
        batch_size = 50
        [space]
        optimizer = ["sgd", "adam"]
        lr = { low = 0.01, high = 0.3, log = true }
    """))
    journal = tmp_path / "o.journal"
    assert main(["sweep", str(study), "--storage", str(journal), "--quiet"]) == 0
    code = textwrap.dedent(f"""
        import sys
        from bench.report import build
        result = build.build_report({str(journal)!r}, {str(tmp_path / 'r')!r}, timing_paths=[],
                                    reproduce_path={str(tmp_path / 'none.csv')!r}, jobs=1)
        keys = {{c.key for c in result.charts}}
        assert "boundary_tiny2d" in keys, keys
        assert "torch" not in sys.modules, "the report imported torch"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_report_zip_never_replaces_the_users_own_file(built, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    _, _, url = built
    mine = tmp_path / "rep.zip"
    mine.write_text("my own archive")
    args = ["report", "--storage", url, "--out", str(tmp_path / "rep"), "--no-boundaries",
            "--zip", "--timing", "--reproduce", str(tmp_path / "none.csv")]
    assert main(args) == 2
    assert "exists and is not an archive of this report" in capsys.readouterr().err
    assert mine.read_text() == "my own archive" and not (tmp_path / "rep").exists()
    mine.unlink()  # an archive an earlier --zip wrote is replaced
    assert main(args) == 0 and main(args) == 0
    with zipfile.ZipFile(mine) as z:
        assert "rep/index.html" in z.namelist()


def test_a_storage_path_with_a_typo_keeps_the_report(built, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    _, _, url = built
    out = tmp_path / "rep"
    assert main(["report", "--storage", url, "--out", str(out), "--no-boundaries", "--timing",
                 "--reproduce", str(tmp_path / "none.csv")]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    typo = tmp_path / "optuan.journal"
    assert main(["report", "--storage", str(typo), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no journal storage file at {typo}: check the --storage path" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

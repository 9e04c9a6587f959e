"""Catalogue rows for `bench report`: --out that is not the report's own folder (nothing touched),
plain and malformed Optuna studies (no traceback, notes instead), passwords never shown, and
timing / reproduction inputs that are missing, folders or garbage.

Storages are tiny journals written with plain Optuna in `setup` (no training), and every report
runs with --no-boundaries, so each case takes well under a second or two.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tests.catalogue import Case

JOURNAL = "results/optuna.journal"
SECRET = "Rep0rt-s3cret-PW"
FAST = ("--no-boundaries",)
USER = {"results/timing/0001_timing.json": '{"schema": "nnbench.timing/1", "measurements": []}\n',
        "results/mine.txt": "my own notes\n"}


def _run(task: str = "moons", seed: int = 0, acc: float = 0.9, **spec: Any) -> dict[str, Any]:
    """One stored run in the shape `bench sweep` writes (no training)."""
    return {"spec": {"task": task, "model": "mlp", "hidden": [4], "optimizer": "sgd", **spec},
            "seed": seed, "engine": "reference", "epochs_run": 2, "diverged": False,
            "metrics": {"val_accuracy": acc, "val_loss": 0.3},
            "timing": {"train_seconds": 0.01, "eval_seconds": 0.001},
            "curves": {"val_accuracy": [acc - 0.1, acc]}}


def _has_run(folder: Path, name: str) -> None:
    """The report's runs table holds a run naming `name` (a task or model)."""
    runs = (folder / "results" / "report" / "tables" / "runs.csv").read_text()
    assert f",{name}," in runs, runs[:300]


def journal(studies: dict[str, dict[str, Any]], path: str = JOURNAL):
    """A setup writing a journal with plain Optuna: per study `attrs` (study user attrs) and
    `trials`, a list of (value, params, user_attrs)."""

    def setup(folder: Path) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(folder / path)))
        for name, spec in studies.items():
            study = optuna.create_study(study_name=name, storage=storage,
                                        direction=spec.get("direction", "maximize"))
            for key, value in spec.get("attrs", {}).items():
                study.set_user_attr(key, value)
            for value, params, attrs in spec.get("trials", []):
                dists = {k: CategoricalDistribution([v]) for k, v in params.items()}
                study.add_trial(optuna.trial.create_trial(
                    value=value, params=params, distributions=dists, user_attrs=attrs))

    return setup


def plain(name: str = "plain") -> dict[str, dict[str, Any]]:
    """A study made with Optuna directly: no nnbench attributes, a float parameter."""
    return {name: {"trials": [(0.1 * i, {"x": float(i)}, {}) for i in range(3)]}}


def both(*setups):
    def setup(folder: Path) -> None:
        for s in setups:
            s(folder)

    return setup


def earlier_report(folder: Path, extra: dict[str, str] | None = None,
                   marker: str | None = None) -> None:
    """results/report as an earlier `bench report` left it (marker listing its files)."""
    out = folder / "results" / "report"
    files = {"index.html": "<html>old</html>", "report.md": "# old\n",
             "tables/runs.csv": "study\n", "tables/old_only.csv": "x\n",
             "charts/history_old.png": "png"}
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / ".nnbench-report").write_text(marker if marker is not None else json.dumps(
        {"schema": "nnbench.report/1", "files": sorted(files)}))
    for rel, text in (extra or {}).items():
        (out / rel).write_text(text)


def legacy_report(folder: Path, extra: dict[str, str] | None = None) -> None:
    """A report written before the marker existed: only its own kinds of files."""
    out = folder / "results" / "report"
    for rel in ("index.html", "report.md", "tables/runs.csv", "charts/curves.png",
                "charts/curves.svg"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("old")
    for rel, text in (extra or {}).items():
        (out / rel).write_text(text)


def _symlink(folder: Path) -> None:
    (folder / "elsewhere").mkdir()
    (folder / "elsewhere" / "keep.txt").write_text("keep")
    os.symlink("elsewhere", folder / "link")


OLD_REPORT = tuple(f"results/report/{f}" for f in
                   ("index.html", "report.md", "tables/runs.csv", "tables/old_only.csv",
                    "charts/history_old.png", ".nnbench-report"))
LEGACY = tuple(f"results/report/{f}" for f in
               ("index.html", "report.md", "tables/runs.csv", "charts/curves.png",
                "charts/curves.svg"))
REFUSED = r"--out .*(not an nnbench report|is a file|working folder|symbolic link|holds|marker)"

TIMING_OK = {"schema": "nnbench.timing/1", "machine": {"host": "h"}, "measurements": [
    {"task": "moons", "model": "mlp", "width": 16, "batch_size": 16, "engine": "reference",
     "k": 1, "device": "cpu", "dtype": "float32", "threads": 1, "epoch_seconds_median": 0.01,
     "iqr_over_median": 0.01, "noisy": False, "samples_per_second_median": 1e4,
     "per_trial_epoch_seconds_median": 0.01}]}

CASES = [
    # --- --out that is not the report's own folder: exit 2, nothing touched ------------------
    Case("report-out-results-holds-journal", ("report", *FAST, "--out", "results"), 2,
         stderr=r"--out results is not an nnbench report", files=USER, setup=journal(plain())),
    Case("report-out-dot", ("report", *FAST, "--out", "."), 2, stderr=r"working folder",
         files=USER, setup=journal(plain())),
    Case("report-out-cwd-spelled-differently", ("report", *FAST, "--out", "results/.."), 2,
         stderr=r"working folder", files=USER, setup=journal(plain())),
    Case("report-out-parent-of-cwd", ("report", *FAST, "--out", ".."), 2,
         stderr=r"working folder", files=USER),
    Case("report-out-root", ("report", *FAST, "--out", "/"), 2, stderr=r"working folder",
         files=USER),
    Case("report-out-is-the-journal", ("report", *FAST, "--out", JOURNAL), 2,
         stderr=r"is a file", files=USER, setup=journal(plain()),
         absent=("results/.optuna.journal.old",)),
    Case("report-out-is-a-user-file", ("report", *FAST, "--out", "results/mine.txt"), 2,
         stderr=r"is a file", files=USER),
    Case("report-out-under-a-file", ("report", *FAST, "--out", "results/mine.txt/report"), 2,
         stderr=r"is a file, not a folder", files=USER),
    Case("report-out-under-dev-null", ("report", *FAST, "--out", "/dev/null/report"), 2,
         stderr=r"/dev/null is a file", files=USER),
    Case("report-out-user-folder", ("report", *FAST, "--out", "docs"), 2,
         stderr=r"not an nnbench report", files={"docs/paper.tex": "\\section{}"}),
    Case("report-out-user-folder-with-index", ("report", *FAST, "--out", "site"), 2,
         stderr=r"holds 'about.html'",
         files={"site/index.html": "<html/>", "site/about.html": "<html/>"}),
    Case("report-out-earlier-report-plus-user-file", ("report", *FAST), 2,
         stderr=r"holds 'notes.txt'",
         setup=lambda f: earlier_report(f, {"notes.txt": "mine"})),
    Case("report-out-marker-garbage", ("report", *FAST), 2, stderr=r"unreadable .nnbench-report",
         setup=lambda f: earlier_report(f, marker="garbage{")),
    Case("report-out-marker-not-a-list", ("report", *FAST), 2,
         stderr=r"unreadable .nnbench-report",
         setup=lambda f: earlier_report(f, marker='{"schema": "nnbench.report/1", "files": 3}')),
    Case("report-out-legacy-report-plus-user-file", ("report", *FAST), 2,
         stderr=r"holds 'tables/mine.xlsx'",
         setup=lambda f: legacy_report(f, {"tables/mine.xlsx": "mine"})),
    Case("report-out-symlink", ("report", *FAST, "--out", "link"), 2, stderr=r"symbolic link",
         setup=_symlink),
    # --- what the report may replace ------------------------------------------------------------
    Case("report-replaces-its-own-report", ("report", *FAST), 0, stdout=r"report: ",
         setup=both(journal(plain()), earlier_report), may_change=OLD_REPORT,
         absent=("results/report/tables/old_only.csv", "results/report/charts/history_old.png")),
    Case("report-replaces-a-legacy-report", ("report", *FAST), 0, stdout=r"report: ",
         setup=legacy_report, may_change=LEGACY, absent=("results/report/charts/curves.svg",)),
    Case("report-into-an-empty-folder", ("report", *FAST, "--out", "empty"), 0,
         setup=lambda f: (f / "empty").mkdir()),
    Case("report-new-folder-beside-results", ("report", *FAST, "--out", "results/r2"), 0,
         files=USER, setup=journal(plain()), stdout=r"results/r2/index.html"),
    # --- studies that are not (quite) nnbench's -------------------------------------------------
    Case("report-plain-optuna-study", ("report", *FAST), 0, setup=journal(plain()),
         stdout=r"plain Optuna study"),
    Case("report-plain-multi-objective-study", ("report", *FAST), 0,
         setup=journal({"mo": {"trials": []}})),
    Case("report-runs-attr-is-a-string", ("report", *FAST), 0, stdout=r"malformed",
         setup=journal({"s": {"trials": [(0.5, {"x": 1}, {"runs": "oops"})]}})),
    Case("report-nnbench-study-attr-is-a-list", ("report", *FAST), 0,
         setup=journal({"s": {"attrs": {"nnbench_study": ["x"], "objective": 5, "task": [1],
                                        "model": {"a": 1}, "study_file": 3},
                              "trials": [(0.5, {"lr": 0.1}, {"runs": [_run()]})]}})),
    Case("report-params-not-runspec-fields", ("report", *FAST), 0,
         setup=journal({"s": {"trials": [(0.5, {"state": "x", "study": 2, "seed": "a"}, {}),
                                         (0.6, {"state": "y", "study": 3, "seed": "b"}, {})]}})),
    # a task or model not registered here (a plugin not loaded) is read, not dropped: its
    # runs are reported and what needs the network is skipped in one stderr line
    Case("report-run-with-unknown-task", ("report",), 0, stdout=r"report: ",
         stderr=r"^bench report: decision boundaries of study 's' skipped: task 'nosuch' is "
                r"not registered here \(pass --plugin PATH\|MODULE",
         setup=journal({"s": {"trials": [(0.5, {}, {"runs": [_run(task="nosuch")]})]}}),
         check=lambda folder: _has_run(folder, "nosuch")),
    Case("report-run-with-unknown-model-names-the-recorded-plugin", ("report",), 0,
         stderr=r"model 'tanh_net' is not registered here \(pass --plugin plug/tanh\.py, "
                r"recorded by the study\)",
         setup=journal({"s": {"attrs": {"plugins": [{"source": "plug/tanh.py", "sha256": "0"}]},
                              "trials": [(0.5, {}, {"runs": [_run(model="tanh_net")]})]}}),
         check=lambda folder: _has_run(folder, "tanh_net")),
    Case("report-jobs-zero", ("report", *FAST, "--jobs", "0"), 2,
         stderr=r"--jobs must be at least 1"),
    Case("report-run-spec-with-foreign-fields", ("report", *FAST), 0, stdout=r"malformed",
         setup=journal({"s": {"trials": [(0.5, {}, {"runs": [_run(colour="red")]})]}})),
    Case("report-run-spec-refused-by-runspec", ("report", *FAST), 0, stdout=r"RunSpec refuses",
         setup=journal({"s": {"trials": [(0.5, {}, {"runs": [_run(lr=-1.0), _run(hidden=[8.5]),
                                                             _run(batch_size="full")]})]}})),
    Case("report-fixed-model-run-read-as-trained", ("report", *FAST), 0, stdout=r"report: ",
         setup=journal({"s": {"trials": [(0.5, {}, {"runs": [
             _run(task="sine", model="relu_mlp_5", hidden=[20, 20, 20])]})]}})),
    Case("report-run-entries-not-mappings", ("report", *FAST), 0, stdout=r"malformed",
         setup=journal({"s": {"trials": [(0.5, {}, {"runs": [1, "a", None, {"spec": 3}]})]}})),
    Case("report-run-metrics-not-numbers", ("report", *FAST), 0, stdout=r"malformed",
         setup=journal({"s": {"trials": [
             (0.5, {}, {"runs": [dict(_run(), metrics={"val_accuracy": "high", "x": [1]},
                                      curves={"val_accuracy": "up"}, timing=[1],
                                      time_to_target="soon")]})]}})),
    Case("report-worker-and-host-attrs-odd-types", ("report", *FAST), 0,
         setup=journal({"s": {"trials": [(0.5, {}, {"worker": "w", "host": 5, "device": [1],
                                                     "failure_reason": {"a": 1},
                                                     "runs": [_run()]})]}})),
    Case("report-well-formed-runs-chart-fine", ("report", *FAST), 0, stdout=r"report: ",
         setup=journal({"s": {"attrs": {"objective": "val_accuracy", "task": "moons"},
                              "trials": [(0.9, {"optimizer": o}, {"runs": [
                                  _run(seed=0, acc=a, optimizer=o),
                                  _run(seed=1, acc=a - 0.01, optimizer=o)]})
                                  for o, a in (("sgd", 0.8), ("adam", 0.9))]}})),
    Case("report-study-names-that-share-a-slug", ("report", *FAST), 0,
         setup=journal({"a b": plain()["plain"], "a/b": plain()["plain"],
                        "a_b": plain()["plain"]}),
         stdout=r"\(3 charts"),
    Case("report-600-character-study-name", ("report", *FAST), 0,
         setup=journal({"n" * 600: plain()["plain"]})),
    Case("report-empty-storage", ("report", *FAST), 0, stdout=r"no study yet",
         setup=journal({})),
    Case("report-nan-values", ("report", *FAST), 0,
         setup=journal({"s": {"trials": [(math.inf, {"x": 1}, {}), (-math.inf, {"x": 2}, {}),
                                         (0.5, {"x": 3}, {})]}})),
    Case("report-storage-typo", ("report", *FAST, "--storage", "results/optuan.journal"), 2,
         stderr=r"no journal storage file at results/optuan.journal: check the --storage path",
         files=USER, setup=journal(plain())),
    Case("report-zip-over-the-users-file", ("report", *FAST, "--zip"), 2,
         stderr=r"results/report.zip exists and is not an archive of this report",
         files={**USER, "results/report.zip": b"my own archive"}, absent=("results/report",)),
    # --- passwords ------------------------------------------------------------------------------
    Case("report-storage-password-refused-connection",
         ("report", *FAST, "--storage", f"postgresql://u:{SECRET}@127.0.0.1:9/db"), 2,
         secret=SECRET),
    Case("report-storage-password-bad-sqlite-url",
         ("report", *FAST, "--storage", f"sqlite://u:{SECRET}@/results/optuna.db"), 2,
         secret=SECRET, files={"results/optuna.db": b""}),
    # --- timing and reproduction inputs ---------------------------------------------------------
    Case("report-timing-missing-file", ("report", *FAST, "--timing", "nosuch.json"), 0,
         stdout=r"nosuch.json: unreadable"),
    Case("report-timing-is-a-folder", ("report", *FAST, "--timing", "results"), 0,
         files=USER, stdout=r"results: unreadable"),
    Case("report-timing-garbage", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": "{{{ not json"}, stdout=r"unreadable"),
    Case("report-timing-not-utf8", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": b"\xff\xfe\x00garbage"}, stdout=r"unreadable"),
    Case("report-timing-wrong-schema", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": "[1, 2]"}, stdout=r"not a nnbench.timing/1 file"),
    Case("report-timing-measurements-malformed", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": json.dumps({"schema": "nnbench.timing/1", "machine": "m",
                                      "measurements": [1, "a", dict(
                                          TIMING_OK["measurements"][0],
                                          epoch_seconds_median="fast", width=[1],
                                          engine=3)]})},
         stdout=r"malformed measurement"),
    Case("report-timing-measurements-not-a-list", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": json.dumps({"schema": "nnbench.timing/1", "measurements": "abc"})}),
    Case("report-timing-good-file", ("report", *FAST, "--timing", "t.json"), 0,
         files={"t.json": json.dumps(TIMING_OK)}, stdout=r"CPU measurements only"),
    Case("report-reproduce-is-a-folder", ("report", *FAST, "--reproduce", "results"), 0,
         files=USER, stdout=r"reproduction table results is unreadable"),
    Case("report-reproduce-garbage-csv", ("report", *FAST, "--reproduce", "r.csv"), 0,
         files={"r.csv": "a,b\n1,2,3,4\n\"unclosed\n"}, stdout=r"reproduction table"),
    Case("report-reproduce-binary", ("report", *FAST, "--reproduce", "r.csv"), 0,
         files={"r.csv": b"\x00\xff\xfe\x89PNG\r\n"}, stdout=r"reproduction table"),
    Case("report-reproduce-wrong-values", ("report", *FAST, "--reproduce", "r.csv"), 0,
         files={"r.csv": "recipe,metric,verdict,mean,ci95,notebook_figure\n"
                         "r1,val_accuracy,ok,high,wide,[1]\n"}),
]

"""Tidy tables out of the Optuna storage, the timing JSON files and the reproduction table.

Everything a report shows starts here as a pandas DataFrame with documented columns:

- `runs_table`: one row per trial x seed (`RUN_COLUMNS` + the spec's fields + metrics);
- `trials_table`: one row per trial (state, objective value, swept parameters);
- `curves_table`: one row per trial x seed x curve x epoch (long format);
- `aggregate`: mean, standard deviation and 95% CI over seeds (`bench.stats.mean_ci`);
- `timing_table`: one row per timing measurement, with the machine it ran on.

Reading never writes: a storage URL that points at a missing SQLite or journal file is reported
as missing instead of being created empty.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UsageError
from bench.stats import mean_ci, std

DEFAULT_SQLITE = Path("results/optuna.db")
DEFAULT_JOURNAL = Path("results/optuna.journal")
TIMING_GLOBS = ("results/timing/*.json", "results/baselines/timing*.json")
DEFAULT_REPRODUCE = Path("results/reproduce.csv")
TIMING_SCHEMA = "nnbench.timing/1"

# Columns every runs-table row has, whatever the study (then the RunSpec fields, then metrics).
RUN_COLUMNS = (
    "study", "study_file", "objective", "trial", "state", "failure_reason", "seed", "engine",
    "diverged", "diverged_epoch", "epochs_run", "train_seconds", "eval_seconds",
    "samples_per_second", "epoch_seconds", "time_to_target_epoch", "time_to_target_seconds",
    "host", "device_name",
)
TRIAL_COLUMNS = ("study", "task", "model", "objective", "direction", "trial", "state", "value",
                 "failure_reason", "n_seeds", "datetime_start", "datetime_complete")
CURVE_COLUMNS = ("study", "trial", "seed", "curve", "epoch", "value")
TIMING_COLUMNS = (
    "file", "created", "git_commit", "host", "cpu_model", "gpu_name", "torch_version", "task",
    "model", "width", "batch_size", "engine", "k", "device", "dtype", "threads", "warmup",
    "repeats", "epoch_seconds_median", "epoch_seconds_iqr", "iqr_over_median", "noisy",
    "samples_per_second_median", "per_trial_epoch_seconds_median",
    "cuda_event_seconds_median",
)
AGG_SUFFIXES = ("mean", "std", "ci95", "n")


def _spec_fields() -> tuple[str, ...]:
    from bench.spec import RunSpec

    # seed and engine are run columns: the engine that actually ran, not the one asked for.
    return tuple(f.name for f in dataclasses.fields(RunSpec) if f.name not in ("seed", "engine"))


# --- storage --------------------------------------------------------------------------------

def default_storage_url(root: str | Path = ".") -> str | None:
    """The embedded storage that exists under `root/results`: the journal `bench sweep` writes
    by default, else an SQLite file; None when neither exists."""
    root = Path(root)
    if (root / DEFAULT_JOURNAL).exists():
        return str(root / DEFAULT_JOURNAL)
    if (root / DEFAULT_SQLITE).exists():
        return f"sqlite:///{root / DEFAULT_SQLITE}"
    return None


def missing_storage_reason(url: str) -> str | None:
    """Why `url` cannot hold studies (a local file that does not exist), or None."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if str(path) != ":memory:" and not path.exists():
            return f"no SQLite storage file at {path}"
    elif "://" not in url and not Path(url).exists():
        return f"no journal storage file at {url}"
    return None


def open_storage(url: str) -> Any:
    """An Optuna storage for a URL (sqlite:///, postgresql://, ...) or a journal file path."""
    import optuna

    if "://" not in url:  # a journal file, as `bench sweep` writes without a database
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(url)))
    from bench.sweep import postgres_driver_url

    return optuna.storages.RDBStorage(postgres_driver_url(url), skip_table_creation=True)


@dataclass
class StudyData:
    """One study as read from the storage: its attributes and its frozen trials."""

    name: str
    user_attrs: dict[str, Any]
    directions: list[str]
    trials: list[Any] = field(repr=False)
    study: Any = field(repr=False, default=None)

    @property
    def objective(self) -> str:
        """The metric the study optimises (e.g. val_accuracy)."""
        return str(self.user_attrs.get("objective") or "value")

    @property
    def direction(self) -> str:
        """'maximize' or 'minimize' of the first objective."""
        return self.directions[0] if self.directions else "maximize"

    @property
    def task(self) -> str | None:
        """The study's task, from its attributes or its first run."""
        return self.user_attrs.get("task") or _first_spec_value(self.trials, "task")

    @property
    def model(self) -> str | None:
        """The study's model, from its attributes or its first run."""
        return self.user_attrs.get("model") or _first_spec_value(self.trials, "model")


def _first_spec_value(trials: list[Any], key: str) -> Any:
    for t in trials:
        for run in t.user_attrs.get("runs") or []:
            if key in run.get("spec", {}):
                return run["spec"][key]
        if key in t.params:
            return t.params[key]
    return None


def load_studies(url: str) -> list[StudyData]:
    """Every study in the storage, in name order (an empty list for an empty storage)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reason = missing_storage_reason(url)
    if reason:
        raise UsageError(f"{reason}; run `make sweep` first or pass --storage URL")
    try:
        storage = open_storage(url)
        names = sorted(optuna.get_all_study_names(storage))
    except UsageError:
        raise
    except Exception as exc:  # driver missing, server down, not an Optuna database
        raise UsageError(f"cannot read Optuna storage {url!r} ({type(exc).__name__}: {exc}); "
                         "pass a valid --storage URL") from exc
    out = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        directions = [d.name.lower() for d in study.directions]
        out.append(StudyData(name, dict(study.user_attrs), directions,
                             study.get_trials(deepcopy=False), study))
    return out


# --- tables from studies ----------------------------------------------------------------------

def _cell(value: Any) -> Any:
    """A CSV-friendly cell: lists and tuples become 'a-b-c' strings, None stays missing."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) if value else "none"
    return value


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def runs_table(studies: list[StudyData]) -> pd.DataFrame:
    """One row per trial x seed: study, trial state, every spec field, metrics, timings, host.

    A trial that stored no runs (it failed before training) still gets one row, with its
    swept parameters and `seed` missing, so failures stay visible.
    """
    spec_fields = _spec_fields()
    rows: list[dict[str, Any]] = []
    for s in studies:
        for t in s.trials:
            worker = t.user_attrs.get("worker") or {}
            base = {"study": s.name, "study_file": s.user_attrs.get("study_file"),
                    "objective": s.objective, "trial": t.number, "state": t.state.name,
                    "failure_reason": t.user_attrs.get("failure_reason"),
                    "host": t.user_attrs.get("host", worker.get("host")),
                    "device_name": t.user_attrs.get("device")}
            runs = t.user_attrs.get("runs") or []
            if not runs:
                row = dict(base, seed=math.nan)
                row.update({k: _cell(v) for k, v in t.params.items()})
                rows.append(row)
            for run in runs:
                spec = run.get("spec", {})
                row = dict(base, host=run.get("host", base["host"]),
                           device_name=run.get("device", base["device_name"]))
                row.update({k: _cell(spec.get(k, t.params.get(k))) for k in spec_fields})
                ttt = run.get("time_to_target") or {}
                timing = run.get("timing", {})
                epochs = run.get("epochs_run") or 0
                train_s = _float(timing.get("train_seconds"))
                row.update(
                    seed=run.get("seed", spec.get("seed")), engine=run.get("engine"),
                    diverged=bool(run.get("diverged")), diverged_epoch=run.get("diverged_epoch"),
                    epochs_run=epochs, train_seconds=train_s,
                    eval_seconds=_float(timing.get("eval_seconds")),
                    samples_per_second=_float(timing.get("samples_per_second")),
                    epoch_seconds=train_s / epochs if epochs else math.nan,
                    time_to_target_epoch=_float(ttt.get("epoch")),
                    time_to_target_seconds=_float(ttt.get("seconds")),
                )
                row.update({k: _float(v) for k, v in (run.get("metrics") or {}).items()})
                rows.append(row)
    columns = list(RUN_COLUMNS) + list(spec_fields)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in columns]
    for c in columns:
        if c not in df.columns:
            df[c] = pd.NA
    return df[columns + sorted(extra)]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The metric columns present in a runs table (train_/val_/test_ metrics, val_loss)."""
    return [c for c in runs.columns
            if c.split("_", 1)[0] in ("train", "val", "test") and c != "train_seconds"]


def trials_table(studies: list[StudyData]) -> pd.DataFrame:
    """One row per trial: state, objective value (first objective), swept parameters."""
    rows = []
    for s in studies:
        # task and model scan the trials for a spec: once per study, not once per trial.
        task, model = s.task, s.model
        for t in s.trials:
            value = t.values[0] if t.values else math.nan
            row = {"study": s.name, "task": task, "model": model, "objective": s.objective,
                   "direction": s.direction, "trial": t.number, "state": t.state.name,
                   "value": _float(value), "failure_reason": t.user_attrs.get("failure_reason"),
                   "n_seeds": len(t.user_attrs.get("runs") or []),
                   "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
            row.update({f"param_{k}": _cell(v) for k, v in t.params.items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(TRIAL_COLUMNS))


def curves_table(studies: list[StudyData]) -> pd.DataFrame:
    """Long table of per-epoch curves: study, trial, seed, curve, epoch (from 1), value."""
    rows = []
    for s in studies:
        for t in s.trials:
            for run in t.user_attrs.get("runs") or []:
                for curve, values in (run.get("curves") or {}).items():
                    rows.extend((s.name, t.number, run.get("seed"), curve, i + 1, _float(v))
                                for i, v in enumerate(values))
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


# --- aggregation over seeds --------------------------------------------------------------------

def aggregate(df: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Mean, sample std, 95% t-CI half width and n over the rows of each group (the seeds).

    Columns: `by`, then for each value column `<v>_mean`, `<v>_std`, `<v>_ci95`, `<v>_n`.
    Non-finite values (diverged runs) are left out of the statistics but counted in `n_runs`;
    a group with one finite value has a NaN CI, never a made-up one.
    """
    rows = []
    if df.empty:
        cols = list(by) + ["n_runs"] + [f"{v}_{s}" for v in values for s in AGG_SUFFIXES]
        return pd.DataFrame(columns=cols)
    for key, group in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n_runs"] = len(group)
        for v in values:
            xs = pd.to_numeric(group[v], errors="coerce").astype(float).tolist()
            mean, half = mean_ci(xs)
            row[f"{v}_mean"], row[f"{v}_ci95"] = mean, half
            row[f"{v}_std"] = std(xs)
            row[f"{v}_n"] = sum(1 for x in xs if math.isfinite(x))
        rows.append(row)
    return pd.DataFrame(rows)


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The spec fields that vary within at least one study (what a configuration is)."""
    fields = [f for f in _spec_fields() if f in runs.columns]
    varying = []
    for f in fields:
        if runs.groupby("study")[f].nunique(dropna=False).max() > 1:
            varying.append(f)
    return varying


def configs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean / std / 95% CI over seeds of every metric and timing, per study x trial."""
    ran = runs[runs["seed"].notna()] if not runs.empty else runs
    if ran.empty:
        return aggregate(ran, ["study", "trial"], [])
    keys = ["study", "trial", "task", "model", *[c for c in config_columns(ran)
                                                  if c not in ("task", "model")]]
    values = [*metric_columns(ran), "epoch_seconds", "samples_per_second"]
    agg = aggregate(ran.assign(**{k: ran[k].fillna("none") for k in keys[2:]}), keys, values)
    diverged = ran.groupby(["study", "trial"])["diverged"].sum().rename("n_diverged")
    return agg.merge(diverged.reset_index(), on=["study", "trial"], how="left")


# --- timing and reproduction files ------------------------------------------------------------

def timing_files(root: str | Path = ".") -> list[Path]:
    """Timing JSON files under results/timing and results/baselines, sorted."""
    root = Path(root)
    paths = {Path(p) for pattern in TIMING_GLOBS for p in glob.glob(str(root / pattern))}
    return sorted(paths)


def timing_table(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per measurement of every readable timing file, and a note per skipped file."""
    rows, notes = [], []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            notes.append(f"{path}: unreadable ({exc.__class__.__name__}), skipped")
            continue
        if not isinstance(data, dict) or data.get("schema") != TIMING_SCHEMA:
            notes.append(f"{path}: not a {TIMING_SCHEMA} file, skipped")
            continue
        machine = data.get("machine") or {}
        for m in data.get("measurements") or []:
            row = {"file": str(path), "created": data.get("created"),
                   "git_commit": data.get("git_commit")}
            row.update({k: machine.get(k) for k in ("host", "cpu_model", "gpu_name",
                                                     "torch_version")})
            row.update({k: v for k, v in m.items() if k != "epoch_seconds"})
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in TIMING_COLUMNS:
        if c not in df.columns:
            df[c] = pd.NA
    return df[list(TIMING_COLUMNS) + [c for c in df.columns if c not in TIMING_COLUMNS]], notes


def reproduce_table(path: str | Path) -> pd.DataFrame | None:
    """The reproduction verdicts (recipe, notebook, metric, mean, ci95, ..., verdict), if any."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return pd.read_csv(path, dtype={"notebook": str, "recipe": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None

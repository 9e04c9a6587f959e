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
import functools
import glob
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.spec import MAX_SEED, RunSpec
from bench.stats import mean_sd
from bench.sweeps import storage
from bench.sweeps.trials import decode_runs

TIMING_GLOBS = ("results/timing/*.json", "results/baselines/timing*.json")
DEFAULT_REPRODUCE = Path("results/reproduce.csv")
TIMING_SCHEMA = "nnbench.timing/1"

# Columns every runs-table row has, whatever the study (then the RunSpec fields, then metrics).
RUN_COLUMNS = (
    "study", "study_file", "objective", "trial", "state", "failure_reason", "seed", "engine",
    "end", "end_detail", "diverged", "diverged_epoch", "epochs_run", "train_seconds", "eval_seconds",
    "samples_per_second", "epoch_seconds", "time_to_target_epoch", "time_to_target_seconds",
    "host", "device_name",
)
TRIAL_COLUMNS = ("study", "task", "model", "objective", "direction", "trial", "state", "value",
                 "end", "end_detail", "end_epoch", "failure_reason", "n_seeds", "datetime_start",
                 "datetime_complete")
CURVE_COLUMNS = ("study", "trial", "seed", "curve", "epoch", "value")
TIMING_COLUMNS = (
    "file", "created", "git_commit", "host", "cpu_model", "gpu_name", "torch_version", "task",
    "model", "width", "batch_size", "engine", "k", "device", "dtype", "threads", "warmup",
    "repeats", "epoch_seconds_median", "epoch_seconds_iqr", "iqr_over_median", "noisy",
    "samples_per_second_median", "per_trial_epoch_seconds_median",
    "cuda_event_seconds_median",
)
TIMING_NUMERIC = ("width", "batch_size", "k", "threads", "warmup", "repeats",
                  "epoch_seconds_median", "epoch_seconds_iqr", "iqr_over_median",
                  "samples_per_second_median", "per_trial_epoch_seconds_median",
                  "cuda_event_seconds_median")
TIMING_TEXT = ("task", "model", "engine", "device", "dtype")
REPRODUCE_COLUMNS = ("recipe", "metric", "verdict")
REPRODUCE_NUMERIC = ("notebook_figure", "mean", "ci95", "val_metric_mean")
AGG_SUFFIXES = ("mean", "std", "ci95", "n")


def _spec_fields() -> tuple[str, ...]:
    # seed and engine are run columns: the engine that actually ran, not the one asked for.
    return tuple(f.name for f in dataclasses.fields(RunSpec) if f.name not in ("seed", "engine"))


@dataclass
class StudyData:
    """One study as read from the storage: its attributes and its frozen trials.

    Any Optuna study may sit in the storage, not only nnbench's: attributes are read only when
    they have the shape `bench sweep` writes. `runs_of` holds each trial's well-formed stored
    runs; `skipped` says, one line each, what was malformed and left out.
    """

    name: str
    user_attrs: dict[str, Any]
    directions: list[str]
    trials: list[Any] = field(repr=False)
    study: Any = field(repr=False, default=None)
    runs_of: dict[int, list[dict[str, Any]]] = field(init=False, repr=False)
    skipped: list[str] = field(init=False, repr=False)

    # Why some runs' networks cannot be rebuilt here (an unregistered task or model), each once.
    unavailable: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runs_of, self.skipped = {}, []
        known: dict[tuple[Any, Any], str | None] = {}
        specs: dict[Any, Any] = {}
        for t in self.trials:
            runs, problems = clean_runs(decode_runs(t.user_attrs.get("runs")), known, specs)
            self.runs_of[t.number] = runs
            self.skipped += [f"trial {t.number}: {p}" for p in problems]
        self.unavailable = sorted({why for why in known.values() if why})

    @property
    def plugin_sources(self) -> list[str]:
        """The plugins the study recorded it used (user attribute "plugins": a list of
        {"source": path or module, "sha256": ...}), as `--plugin` takes them."""
        records = self.user_attrs.get("plugins")
        if not isinstance(records, list):
            return []
        return [r["source"] for r in records
                if isinstance(r, dict) and isinstance(r.get("source"), str) and r["source"]]

    def rebuild_problem(self) -> str | None:
        """Why this study's networks cannot be rebuilt here, with the fix, in one phrase
        ("model 'tanh_net' is not registered here (pass --plugin spiral_plugin.py, recorded by
        the study)"); None when every stored run's task and model can be. Everything read from
        storage (tables, curves, history, importances, answers) is reported either way."""
        whys = list(self.unavailable)
        if not whys and (why := unavailable(self.task, self.model)):
            whys = [why]
        if not whys:
            return None
        sources = self.plugin_sources
        if any(w.startswith("data file") for w in whys) and not any(
                w.endswith("not registered here") for w in whys):
            fix = "put the data file back where the study read it"
        elif sources:
            fix = f"pass {' '.join(f'--plugin {s}' for s in sources)}, recorded by the study"
        else:
            fix = "pass --plugin PATH|MODULE naming the plugin that registers it"
        return f"{'; '.join(whys)} ({fix})"

    def runs(self, trial: Any) -> list[dict[str, Any]]:
        """The well-formed stored runs (one per seed) of one of this study's trials."""
        return self.runs_of.get(trial.number, [])

    def attr_text(self, key: str) -> str | None:
        """A study attribute that is a non-empty string, else None (any other type is ignored)."""
        value = self.user_attrs.get(key)
        return value if isinstance(value, str) and value else None

    @property
    def searched(self) -> set[str]:
        """The parameters the study file searches (its [space]), when nnbench stored them."""
        stored = self.user_attrs.get("nnbench_study")
        space = stored.get("space") if isinstance(stored, dict) else None
        return set(space) if isinstance(space, dict) else set()

    @property
    def objective(self) -> str:
        """The metric the study optimises (e.g. val_accuracy)."""
        return self.attr_text("objective") or "value"

    @property
    def description(self) -> str | None:
        """What the study file says the study asks ('SGD vs Adam on moons'), if it says it."""
        stored = self.user_attrs.get("nnbench_study")
        text = stored.get("description") if isinstance(stored, dict) else None
        return text if isinstance(text, str) and text.strip() else None

    @property
    def direction(self) -> str:
        """'maximize' or 'minimize' of the first objective."""
        return self.directions[0] if self.directions else "maximize"

    @property
    def task(self) -> str | None:
        """The study's task, from its attributes or its first run."""
        return self.attr_text("task") or self._first_spec_value("task")

    @property
    def model(self) -> str | None:
        """The study's model, from its attributes or its first run."""
        return self.attr_text("model") or self._first_spec_value("model")

    def _first_spec_value(self, key: str) -> Any:
        for t in self.trials:
            for run in self.runs(t):
                if key in run["spec"]:
                    return run["spec"][key]
            if isinstance(t.params.get(key), str):
                return t.params[key]
        return None


# A stored spec kept as it is (its task or model unavailable) gets RunSpec's defaults for any
# field it lacks, so its rows have every column.
_SPEC_DEFAULTS = {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
                  for f in dataclasses.fields(RunSpec)
                  if f.default is not dataclasses.MISSING}


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def unavailable(task: Any, model: Any) -> str | None:
    """Why a run of `task` and `model` cannot be rebuilt here, or None when it can: "task
    'spiral' is not registered here" (a plugin not loaded), "data file x.csv not found" (a
    data-file task whose file is gone), "model 'tanh_net' is not registered here"."""
    from bench.catalog import registry
    from bench.catalog.datafile import looks_like_path

    if isinstance(task, str):
        try:
            registry.get_task(task)
        except UsageError as exc:
            if looks_like_path(task):
                return f"data file task {task!r} cannot be read here ({str(exc).split(';')[0]})"
            return f"task {task!r} is not registered here"
    if isinstance(model, str):
        try:
            registry.get_model(model)
        except UsageError:
            return f"model {model!r} is not registered here"
    return None


def _checked_spec(spec: dict[str, Any], specs: dict[Any, Any]
                  ) -> tuple[dict[str, Any], str | None]:
    """(the spec as RunSpec normalises it, None), or (spec, why RunSpec refuses it).

    The seeds of a trial share every other field: RunSpec checks a trial's spec once (kept in
    `specs`, keyed by the other fields) and each seed is checked as RunSpec checks a seed."""
    seed = spec.get("seed", 0)
    try:
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                           for k, v in spec.items() if k != "seed"))
        hash(key)
    except TypeError:  # an unhashable value: RunSpec says what is wrong with it
        key = None
    plain_seed = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    if key is None or key not in specs or not plain_seed:
        try:  # what RunSpec accepts, normalised as it trained (a fixed model's layers)
            checked: Any = RunSpec.from_dict(spec).to_dict()
        except (UsageError, KeyError, TypeError, ValueError, OverflowError) as exc:
            checked = f"has a spec RunSpec refuses ({str(exc)[:100]})"
        if key is not None and plain_seed:  # a bad seed says nothing about the others
            specs[key] = checked
        return (spec, checked) if isinstance(checked, str) else (checked, None)
    checked = specs[key]
    return (spec, checked) if isinstance(checked, str) else (dict(checked, seed=seed), None)


def clean_runs(raw: Any, known: dict[tuple[Any, Any], str | None] | None = None,
               specs: dict[Any, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of a trial's `runs` attribute that have the shape `bench sweep` stores.

    A run is kept when it is a mapping whose `spec` RunSpec accepts (only its fields, each of the
    right type and range, a registered task and model); its spec is kept as RunSpec normalises
    it, i.e. what trained. A run whose task or model is not available here (a plugin not loaded,
    a data file gone) cannot be checked by RunSpec: it is kept with its spec as stored, and
    `known` (if given) maps its (task, model) to the reason (`unavailable`). Metrics, timing
    and time-to-target values that are not numbers, and curves that are not lists of numbers,
    are dropped from a kept run. Returns the kept runs (copies) and one line per thing left out.
    """
    known = {} if known is None else known
    specs = {} if specs is None else specs
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"attribute 'runs' is a {type(raw).__name__}, not a list; skipped"]
    names = set(_spec_fields()) | {"seed", "engine"}
    kept: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, run in enumerate(raw):
        spec = run.get("spec") if isinstance(run, dict) else None
        why = None
        if not isinstance(spec, dict):
            why = "is not a run with a 'spec' mapping"
        elif unknown := sorted(str(k) for k in set(spec) - names):
            why = f"has spec fields no RunSpec has ({', '.join(unknown[:3])})"
        else:
            key = (spec.get("task", "moons"), spec.get("model", "mlp"))
            if key not in known:
                known[key] = unavailable(*key)
            if known[key]:  # cannot be checked without its task or model: kept as stored
                spec = {**_SPEC_DEFAULTS, **spec}
            else:
                spec, why = _checked_spec(spec, specs)
        if why:
            problems.append(f"run {i} {why}; skipped")
            continue
        run = dict(run, spec=spec)
        for key in ("metrics", "timing", "time_to_target"):
            part = run.get(key)
            good = {k: v for k, v in part.items() if isinstance(k, str) and _number(v)} \
                if isinstance(part, dict) else {}
            if part not in (None, {}) and good != part:
                problems.append(f"run {i}: non-numeric {key} values dropped")
            run[key] = good
        curves = run.get("curves")
        good_curves = {k: v for k, v in curves.items()
                       if isinstance(v, list) and all(_number(x) for x in v)} \
            if isinstance(curves, dict) else {}
        if curves not in (None, {}) and good_curves != curves:
            problems.append(f"run {i}: malformed curves dropped")
        run["curves"] = good_curves
        if not _number(run.get("seed")) or not _number(run.get("epochs_run")):
            problems.append(f"run {i}: non-numeric seed or epochs_run; skipped")
            continue
        kept.append(run)
    return kept, problems


def load_studies(url: str, notes: list[str] | None = None) -> list[StudyData]:
    """Every study in the storage, in name order (an empty list for an empty storage).

    A study Optuna cannot load is a UsageError, or, given `notes`, left out with a note there.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage.open_storage(url, create=False)  # reading: nothing created or repaired
    try:
        names = sorted(optuna.get_all_study_names(store))
    except Exception as exc:  # not an Optuna database, server gone meanwhile
        raise UsageError(f"cannot read Optuna storage {storage.display_url(url)}: "
                         f"{storage.storage_error_reason(exc, url)}; pass a valid --storage "
                         "URL") from exc
    out = []
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=store)
            directions = [d.name.lower() for d in study.directions]
            trials = study.get_trials(deepcopy=False)
        except Exception as exc:  # a study Optuna itself cannot read: leave it out, say so
            if notes is None:
                raise UsageError(f"cannot read study {name!r} ({type(exc).__name__}); "
                                 "pass a valid --storage URL") from exc
            notes.append(f"Study {name!r} could not be read ({type(exc).__name__}); skipped.")
            continue
        out.append(StudyData(name, dict(study.user_attrs), directions, trials, study))
    return out


# --- how a trial ended -------------------------------------------------------------------------

END_KINDS = ("complete", "pruned", "diverged", "cannot_run", "failed", "running")
END_LABELS = {"complete": "complete", "pruned": "pruned", "diverged": "diverged",
              "cannot_run": "cannot run here", "failed": "failed", "running": "running"}
_PRUNED = re.compile(r"pruned at epoch (\d+)(?: by the (\S+) pruner)?")
_DIVERGED = re.compile(r"diverged at epoch (\d+)(?: \(seeds ([^)]*)\))?")


def trial_end(trial: Any) -> dict[str, Any]:
    """How a trial ended: {'kind': one of END_KINDS, 'epoch', 'pruner', 'seeds', 'why'}.

    Read from the `end` attribute `bench sweep` records; older storages have none, so it is
    derived from the state and the failure reason ('pruned at epoch E by the X pruner',
    'diverged at epoch E (seeds ...)', 'cannot run here: ...').
    """
    end = trial.user_attrs.get("end")
    if isinstance(end, dict) and end.get("kind") in END_KINDS:
        return dict(end)
    state = trial.state.name
    reason = _text(trial.user_attrs.get("failure_reason")) or ""
    if state == "COMPLETE":
        return {"kind": "complete"}
    if state in ("RUNNING", "WAITING"):
        return {"kind": "running"}
    if reason.startswith("cannot run here"):
        return {"kind": "cannot_run", "why": reason.partition(":")[2].strip() or None}
    if m := _PRUNED.match(reason):
        return {"kind": "pruned", "epoch": int(m[1]), "pruner": m[2]}
    if m := _DIVERGED.match(reason):
        seeds = [int(x) for x in re.findall(r"-?\d+", m[2] or "")]
        return {"kind": "diverged", "epoch": int(m[1]), "seeds": seeds}
    if reason.startswith("diverged"):
        return {"kind": "diverged", "epoch": None, "seeds": []}
    if state == "PRUNED":
        return {"kind": "pruned", "epoch": trial.last_step, "pruner": None}
    return {"kind": "failed", "why": reason or None}


def end_detail(end: dict[str, Any]) -> str:
    """How a trial ended in words: 'pruned at epoch 4 (median pruner)', 'diverged at epoch 3
    (seeds 0, 2)', 'cannot run here: device cuda is not available', 'complete'."""
    kind = end.get("kind")
    epoch = end.get("epoch")
    at = f" at epoch {epoch}" if isinstance(epoch, int) else ""
    if kind == "pruned":
        pruner = end.get("pruner")
        return f"pruned{at}" + (f" ({pruner} pruner)" if pruner else "")
    if kind == "diverged":
        seeds = end.get("seeds") or []
        return f"diverged{at}" + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
    if kind in ("cannot_run", "failed"):
        why = end.get("why")
        return END_LABELS[kind] + (f": {why}" if why else "")
    return END_LABELS.get(kind, str(kind))


# --- tables from studies ----------------------------------------------------------------------

def _cell(value: Any) -> Any:
    """A CSV-friendly cell: lists and tuples become 'a-b-c' strings, None stays missing."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) if value else "none"
    return value


def _text(value: Any) -> str | None:
    """A stored attribute shown as text: strings as they are, anything else missing."""
    return value if isinstance(value, str) else None


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
            attrs = t.user_attrs
            worker = attrs.get("worker") if isinstance(attrs.get("worker"), dict) else {}
            end = trial_end(t)
            base = {"study": s.name, "study_file": s.attr_text("study_file"),
                    "objective": s.objective, "trial": t.number, "state": t.state.name,
                    "end": end["kind"], "end_detail": end_detail(end),
                    "failure_reason": _text(attrs.get("failure_reason")),
                    "host": _text(attrs.get("host", worker.get("host"))),
                    "device_name": _text(attrs.get("device"))}
            runs = s.runs(t)
            if not runs:  # only swept RunSpec fields: a plain study's params stay in trials
                row = dict(base, seed=math.nan)
                row.update({k: _cell(v) for k, v in t.params.items() if k in spec_fields})
                rows.append(row)
            for run in runs:
                spec = run["spec"]
                row = dict(base, host=_text(run.get("host", base["host"])),
                           device_name=_text(run.get("device", base["device_name"])))
                row.update({k: _cell(spec.get(k, t.params.get(k))) for k in spec_fields})
                ttt = run["time_to_target"]
                timing = run["timing"]
                epochs = run.get("epochs_run") or 0
                train_s = _float(timing.get("train_seconds"))
                row.update(
                    seed=run.get("seed", spec.get("seed")), engine=_text(run.get("engine")),
                    diverged=bool(run.get("diverged")),
                    diverged_epoch=_float(run.get("diverged_epoch")
                                          if _number(run.get("diverged_epoch")) else None),
                    epochs_run=epochs, train_seconds=train_s,
                    eval_seconds=_float(timing.get("eval_seconds")),
                    samples_per_second=_float(timing.get("samples_per_second")),
                    epoch_seconds=train_s / epochs if epochs else math.nan,
                    time_to_target_epoch=_float(ttt.get("epoch")),
                    time_to_target_seconds=_float(ttt.get("seconds")),
                )
                row.update({k: _float(v) for k, v in run["metrics"].items()
                            if k not in base and k not in spec_fields})
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
            end = trial_end(t)
            epoch = end.get("epoch")
            row = {"study": s.name, "task": task, "model": model, "objective": s.objective,
                   "direction": s.direction, "trial": t.number, "state": t.state.name,
                   "value": _float(value), "end": end["kind"], "end_detail": end_detail(end),
                   "end_epoch": epoch if isinstance(epoch, int) else math.nan,
                   "failure_reason": _text(t.user_attrs.get("failure_reason")),
                   "n_seeds": len(s.runs(t)),
                   "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
            row.update({f"param_{k}": _cell(v) for k, v in t.params.items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(TRIAL_COLUMNS))


def curves_table(studies: list[StudyData]) -> pd.DataFrame:
    """Long table of per-epoch curves: study, trial, seed, curve, epoch (from 1), value."""
    rows = []
    for s in studies:
        for t in s.trials:
            for run in s.runs(t):
                for curve, values in run["curves"].items():
                    rows.extend((s.name, t.number, run.get("seed"), curve, i + 1, _float(v))
                                for i, v in enumerate(values))
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


# --- aggregation over seeds --------------------------------------------------------------------

def aggregate(df: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Mean, sample std, 95% t-CI half width and n over the rows of each group (the seeds).

    Columns: `by`, then for each value column `<v>_mean`, `<v>_std`, `<v>_ci95`, `<v>_n`.
    Non-finite values (diverged runs) are left out of the statistics but counted in `n_runs`;
    a group with one finite value has a NaN CI, never a made-up one. The numbers are
    `bench.stats.mean_ci`'s to the last bit; groups are cut from sorted numpy columns (not
    pandas sub-frames) and the t quantile is computed once per group size, so thousands of
    trials aggregate in a fraction of a second instead of minutes.
    """
    if df.empty:
        cols = list(by) + ["n_runs"] + [f"{v}_{s}" for v in values for s in AGG_SUFFIXES]
        return pd.DataFrame(columns=cols)
    codes = df.groupby(by, dropna=False, sort=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    keys = df[by].iloc[order[starts]].reset_index(drop=True)
    out: dict[str, Any] = {c: keys[c] for c in by}
    out["n_runs"] = ends - starts
    for v in values:
        column = pd.to_numeric(df[v], errors="coerce").astype(float).to_numpy()[order].tolist()
        stats = [_mean_ci_std(column[a:b]) for a, b in zip(starts, ends, strict=True)]
        for i, suffix in enumerate(("mean", "ci95", "std", "n")):
            out[f"{v}_{suffix}"] = [s[i] for s in stats]
    return pd.DataFrame(out)


def _mean_ci_std(values: list[float]) -> tuple[float, float, float, int]:
    """(mean, 95% CI half width, sample std, n finite) as `bench.stats.mean_ci` and `std`
    compute them, with the Student t quantile cached per n."""
    xs = [x for x in values if math.isfinite(x)]
    mean, sd = mean_sd(xs)
    half = _t975(len(xs)) * sd / math.sqrt(len(xs)) if math.isfinite(sd) else math.nan
    return mean, half, sd, len(xs)


@functools.lru_cache(maxsize=256)
def _t975(n: int) -> float:
    """The Student t quantile `bench.stats.mean_ci` uses for n values (a 95% interval)."""
    from scipy import stats as st

    return float(st.t.ppf(0.5 + 0.95 / 2, df=n - 1))


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
    agg = aggregate(ran.assign(**{k: ran[k].astype(object).fillna("none") for k in keys[2:]}),
                    keys, values)
    diverged = ran.groupby(["study", "trial"])["diverged"].sum().rename("n_diverged")
    return agg.merge(diverged.reset_index(), on=["study", "trial"], how="left")


# --- timing and reproduction files ------------------------------------------------------------

def timing_files(root: str | Path = ".") -> list[Path]:
    """Timing JSON files under results/timing and results/baselines, sorted."""
    root = Path(root)
    paths = {Path(p) for pattern in TIMING_GLOBS for p in glob.glob(str(root / pattern))}
    return sorted(paths)


def timing_table(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per measurement of every readable timing file, and a note per skipped file
    (missing, a folder, not JSON, not the timing schema) or skipped measurement (not a mapping).
    Numeric columns that hold something else are read as missing."""
    rows, notes = [], []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
            notes.append(f"{path}: unreadable ({exc.__class__.__name__}), skipped")
            continue
        if not isinstance(data, dict) or data.get("schema") != TIMING_SCHEMA:
            notes.append(f"{path}: not a {TIMING_SCHEMA} file, skipped")
            continue
        machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
        measurements = data.get("measurements")
        measurements = measurements if isinstance(measurements, list) else []
        bad = sum(1 for m in measurements if not isinstance(m, dict))
        if bad:
            notes.append(f"{path}: {bad} malformed measurement(s) skipped")
        for m in measurements:
            if not isinstance(m, dict):
                continue
            row = {"file": str(path), "created": _text(data.get("created")),
                   "git_commit": _text(data.get("git_commit"))}
            row.update({k: _text(machine.get(k)) for k in ("host", "cpu_model", "gpu_name",
                                                            "torch_version")})
            row.update({str(k): v for k, v in m.items() if k != "epoch_seconds"
                        and not isinstance(v, dict | list)})
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in TIMING_COLUMNS:
        if c not in df.columns:
            df[c] = pd.NA
    for c in TIMING_NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in TIMING_TEXT:
        df[c] = [v if isinstance(v, str) else None for v in df[c]]
    return df[list(TIMING_COLUMNS) + [c for c in df.columns if c not in TIMING_COLUMNS]], notes


def reproduce_table(path: str | Path, notes: list[str] | None = None) -> pd.DataFrame | None:
    """The reproduction verdicts (recipe, notebook, metric, mean, ci95, ..., verdict), if any.

    None when there is no readable table at `path`; with `notes`, one line there says why.
    """
    path = Path(path)
    why = None
    df = None
    if not path.exists():
        why = f"No reproduction table at {path}: run `bench reproduce`."
    else:
        try:
            df = pd.read_csv(path, dtype={"notebook": str, "recipe": str})
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            why = f"The reproduction table {path} is unreadable ({type(exc).__name__}), skipped."
        else:
            lacking = [c for c in REPRODUCE_COLUMNS if c not in df.columns]
            if lacking:
                why = (f"The reproduction table {path} lacks {', '.join(lacking)} (not written "
                       "by `bench reproduce`?), skipped.")
                df = None
            else:
                for c in REPRODUCE_NUMERIC:
                    if c in df.columns:
                        df[c] = pd.to_numeric(df[c], errors="coerce")
    if why and notes is not None:
        notes.append(why)
    return df

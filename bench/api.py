"""The Python API: what `bench run`, `bench sweep` and the report's tables do, as functions that
return pandas DataFrames and Optuna studies (for scripts and Jupyter).

    import bench
    df = bench.run(task="moons", model="mlp", seeds=5, hidden=(8, 8), epochs=50)
    bench.curves(df)                       # per-epoch curves, long form
    study = bench.sweep("studies/sine_loss.toml", storage="results/optuna.journal")
    runs = bench.load_runs("results/optuna.journal")   # the report's trial x seed table

Layer: the top, beside `cli` (it drives engines, sweeps and the report's tables). torch, optuna
and pandas are imported inside the functions, so `import bench` stays light.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from bench.results import RunResult
    from bench.spec import RunSpec

# Columns of `run`'s DataFrame besides the RunSpec fields and the metrics.
RUN_COLUMNS = ("engine", "diverged", "diverged_epoch", "epochs_run", "stopped")
_NOT_A_SETTING = ("seed",)


def _seed_list(seeds: int | range | Iterable[int]) -> list[int]:
    """A count (5: seeds 0..4), a range or a list of seeds."""
    if isinstance(seeds, bool):
        raise UsageError(f"seeds must be a count, a range or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise UsageError(f"seeds must be at least 1 (a count), got {seeds}; e.g. seeds=5")
        return list(range(seeds))
    if isinstance(seeds, str):
        from bench.commands._common import parse_seeds

        return parse_seeds(seeds)
    try:
        out = list(seeds)
    except TypeError:
        raise UsageError(f"seeds must be a count, a range or a list of integers, got "
                         f"{seeds!r}") from None
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise UsageError(f"seeds must be a count, a range or a list of integers, got {seeds!r}")
    if len(set(out)) < len(out):  # the same run twice would make a false confidence interval
        raise UsageError(f"seeds {seeds!r} names a seed more than once; give each seed once")
    return out


def _specs(task: str, model: str, seeds: Any, label_column: str | None, task_kind: str | None,
           settings: dict[str, Any]) -> list[RunSpec]:
    from bench.catalog.datafile import looks_like_path, make_ref, parse_ref
    from bench.spec import RunSpec

    if label_column is not None or task_kind is not None:
        if not looks_like_path(task):
            raise UsageError("label_column and task_kind apply to a data file task; give "
                             "task='path.csv' or 'path.npz'")
        ref = parse_ref(task)
        task = make_ref(ref.path, label_column or ref.label_column, task_kind or ref.kind).key()
    if "seed" in settings:
        raise UsageError("give seeds=..., not seed=... (bench.run trains one run per seed)")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    spec = RunSpec.from_dict({"task": task, "model": model, **values}, strict=True)
    return [spec.replace(seed=s) for s in _seed_list(seeds)]


def run(task: str, model: str = "mlp", seeds: int | range | Iterable[int] = 1, *,
        label_column: str | None = None, task_kind: str | None = None,
        allow_long: bool = False, threads: int | None = 1, **settings: Any) -> pd.DataFrame:
    """Train `model` on `task` once per seed; one DataFrame row per seed.

    `task` is a task name or a .csv/.npz path (`label_column`, `task_kind` as on the command
    line); `seeds` a count (5: seeds 0-4), a range or a list; `settings` are RunSpec fields
    (`hidden=(8, 8)`, `optimizer="adam"`, `lr=0.01`, `epochs=50`, `engine="reference"`, ...).
    Columns: every RunSpec field, the metrics (val_accuracy, test_accuracy, ...), the timings
    (train_seconds, ...), engine, diverged, epochs_run; `curves` holds each run's per-epoch
    curves, which `curves(df)` unfolds. Work above `bench.engines.budget`'s bounds is refused
    unless `allow_long`. `threads`: torch CPU threads while training (1, as `bench run`: tiny
    models only contend with more; None keeps torch's setting).
    """
    import pandas as pd

    from bench.engines.budget import check_runs
    from bench.engines.clock import num_threads
    from bench.engines.registry import choose_engine, get_engine, train_specs

    specs = _specs(task, model, seeds, label_column, task_kind, settings)
    engine = specs[0].engine
    check_runs(specs, allow_long=allow_long, what="bench.run",
               together=len(specs) if get_engine(choose_engine(specs, engine)).stacks else 1)
    with num_threads(threads):
        results = train_specs(specs, engine)
    return pd.DataFrame([_row(r) for r in results])


def _row(result: RunResult) -> dict[str, Any]:
    """One run as a flat row: settings, metrics, timings, verdict, curves."""
    row: dict[str, Any] = dict(result.spec.to_dict())
    for key in ("hidden", "betas"):
        if isinstance(row.get(key), list):
            row[key] = tuple(row[key])
    row.update(result.metrics)
    row.update(result.timing)
    row.update(engine=result.engine, diverged=result.diverged,
               diverged_epoch=result.diverged_epoch, epochs_run=result.epochs_run,
               stopped=result.stopped, curves=dict(result.curves))
    return row


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch curves of `run`'s DataFrame in long form: one row per run x curve x
    epoch (from 1) with the run's seed, task, model and every setting that differs between the
    rows (so curves of several configurations concatenated stay apart), then curve, epoch,
    value."""
    import pandas as pd

    if "curves" not in df.columns:
        raise UsageError("bench.curves takes the DataFrame bench.run returns (it has a 'curves' "
                         "column); for a study's curves use bench.report.tables.curves_table")
    from bench.spec import field_types

    settings = [c for c in field_types() if c in df.columns and c not in _NOT_A_SETTING]
    varying = [c for c in settings
               if c in ("task", "model") or df[c].astype(str).nunique(dropna=False) > 1]
    keys = ["seed", *varying]
    rows = []
    for _, r in df.iterrows():
        for name, values in r["curves"].items():
            rows.extend({**{k: r[k] for k in keys}, "curve": name, "epoch": i + 1,
                         "value": float("nan") if v is None else float(v)}
                        for i, v in enumerate(values))
    return pd.DataFrame(rows, columns=[*keys, "curve", "epoch", "value"])


def _study_spec(study: str | Path | dict[str, Any], trials: int | None) -> Any:
    from bench.sweeps.study import load_study_file, parse_study

    if isinstance(study, dict):
        if "name" not in study:
            raise UsageError("a study given as a dict needs a 'name' (the Optuna study name)")
        # Paths in it (a data file, plugins) are relative to the current folder.
        spec = parse_study(study, Path.cwd() / f"{study['name']}.toml")
    elif isinstance(study, (str, Path)):
        spec = load_study_file(study)
    else:
        raise UsageError(f"study must be a study file's path or a dict, got "
                         f"{type(study).__name__}")
    return spec.with_overrides(trials=trials)


def sweep(study: str | Path | dict[str, Any], *, storage: str | None = None,
          trials: int | None = None, threads: int | None = 1) -> optuna.Study:
    """Run (or resume) one study until it has its trials, as `bench sweep` does, and return
    the Optuna study. `study` is a study file's path or the same keys as a dict (docs/
    STUDIES.md); `storage` an Optuna storage URL or journal path (default
    results/optuna.journal); `trials` overrides the study's trial count; `threads` as in
    `run`."""
    import optuna

    from bench.engines.clock import num_threads
    from bench.sweeps.optuna_study import open_study
    from bench.sweeps.storage import open_storage
    from bench.sweeps.study import store_plugins
    from bench.sweeps.sweep import sweep as run_sweep

    spec = _study_spec(study, trials)
    store_plugins(spec, open_study(spec, open_storage(storage)))  # before training: see sweep
    with num_threads(threads):
        run_sweep(spec, storage, quiet=True, threads=threads or 1)
    return optuna.load_study(study_name=spec.name, storage=open_storage(storage))


def load_runs(storage: str | None = None) -> pd.DataFrame:
    """The report's tidy table: one row per trial x seed of every study in `storage` (default:
    results/optuna.journal, else results/optuna.db), with every setting, metric and timing."""
    from bench.report.tables import load_studies, runs_table
    from bench.sweeps.storage import default_storage_url

    url = storage or default_storage_url()
    if url is None:
        raise UsageError("no storage given and no results/optuna.journal or results/optuna.db "
                         "here; pass storage='path/to/optuna.journal' or a URL")
    return runs_table(load_studies(url))


"""Build small real Optuna studies for the report tests: real trainings, the sweep's schema.

Each configuration is trained once per seed with the reference engine and stored as one trial
whose user attributes follow what `bench sweep` writes (runs, host, device, objective_metric);
a trial with a diverged seed is FAIL with a failure_reason, as the sweep marks it; pruned and
cannot-run trials are PRUNED, each with the `end` attribute the sweep records.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from bench.engines.reference import train
from bench.spec import RunSpec


def _distribution(name: str, values: list[Any]) -> Any:
    if name == "lr" and len(set(values)) > 1:
        return FloatDistribution(min(values), max(values), log=True)
    return CategoricalDistribution(sorted(set(values), key=str))


def make_study(storage: Any, name: str, base: RunSpec, configs: list[dict[str, Any]],
               seeds: tuple[int, ...] = (0, 1, 2), objective: str = "val_accuracy",
               direction: str = "maximize",
               ends: dict[int, dict[str, Any]] | None = None,
               legacy: bool = False) -> optuna.Study:
    """Train every config x seed from `base` and store one trial per config.

    `ends` maps a config's index to how its trial ended, as `bench sweep` records it:
    {"kind": "pruned", "epoch": E, "pruner": P} trains E epochs and stores a PRUNED trial with
    its partial runs and the value it reported at epoch E; {"kind": "cannot_run", "why": W}
    stores a PRUNED trial with no runs. Every trial records `end` (diverged ones with the epoch
    and seeds) unless `legacy`, which writes only state and failure reason, as older sweeps did.
    """
    ends = ends or {}
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    study.set_user_attr("task", base.task)
    study.set_user_attr("model", base.model)
    study.set_user_attr("objective", objective)
    study.set_user_attr("directions", [direction])
    study.set_user_attr("study_file", f"studies/{name}.toml")
    study.set_user_attr("nnbench_study", {"name": name, "seeds": list(seeds)})
    dists = {k: _distribution(k, [c[k] for c in configs]) for k in configs[0]}
    for i, config in enumerate(configs):
        end = ends.get(i, {})
        attrs: dict[str, Any] = {"host": "testhost", "device": "cpu",
                                 "objective_metric": objective}
        if end.get("kind") == "cannot_run":
            attrs.update(runs=[], failure_reason=f"cannot run here: {end['why']}")
            _add(study, "PRUNED", None, config, dists, attrs, end, legacy)
            continue
        epochs = end["epoch"] if end.get("kind") == "pruned" else base.epochs
        results = [train(base.replace(seed=s, epochs=epochs, **config)) for s in seeds]
        values = [r.metrics[objective] for r in results]
        attrs["runs"] = [r.to_dict() for r in results]
        diverged = [r for r in results if r.diverged]
        mean = math.fsum(values) / len(values)
        if end.get("kind") == "pruned":
            attrs["failure_reason"] = f"pruned at epoch {epochs} by the {end['pruner']} pruner"
            _add(study, "PRUNED", None, config, dists, attrs, end, legacy, {epochs: mean})
        elif diverged:
            epoch = min(r.diverged_epoch or r.epochs_run for r in diverged)
            seeds_div = [r.spec.seed for r in diverged]
            attrs["failure_reason"] = (f"diverged at epoch {epoch} (seeds "
                                       f"{', '.join(map(str, seeds_div))})")
            _add(study, "FAIL", None, config, dists, attrs,
                 {"kind": "diverged", "epoch": epoch, "seeds": seeds_div}, legacy)
        else:
            _add(study, "COMPLETE", mean, config, dists, attrs, {"kind": "complete"}, legacy)
    return study


def _add(study: optuna.Study, state: str, value: float | None, params: dict[str, Any],
         dists: dict[str, Any], attrs: dict[str, Any], end: dict[str, Any], legacy: bool,
         intermediate: dict[int, float] | None = None) -> None:
    if not legacy:
        attrs = dict(attrs, end=end)
    study.add_trial(optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state), value=value, params=params,
        distributions=dists, user_attrs=attrs, intermediate_values=intermediate))

"""Build small real Optuna studies for the report tests: real trainings, the sweep's schema.

Each configuration is trained once per seed with the reference engine and stored as one trial
whose user attributes follow what `bench sweep` writes (runs, host, device, objective_metric);
a trial with a diverged seed is FAIL with a failure_reason, as the sweep marks it.
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
               direction: str = "maximize") -> optuna.Study:
    """Train every config x seed from `base` and store one trial per config."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    study.set_user_attr("task", base.task)
    study.set_user_attr("model", base.model)
    study.set_user_attr("objective", objective)
    study.set_user_attr("directions", [direction])
    study.set_user_attr("study_file", f"studies/{name}.toml")
    study.set_user_attr("nnbench_study", {"name": name, "seeds": list(seeds)})
    dists = {k: _distribution(k, [c[k] for c in configs]) for k in configs[0]}
    for config in configs:
        results = [train(base.replace(seed=s, **config)) for s in seeds]
        values = [r.metrics[objective] for r in results]
        failed = any(r.diverged for r in results)
        attrs: dict[str, Any] = {"runs": [r.to_dict() for r in results], "host": "testhost",
                                 "device": "cpu", "objective_metric": objective}
        if failed:
            attrs["failure_reason"] = "diverged: non-finite loss"
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
            value=None if failed else math.fsum(values) / len(values),
            params=config, distributions=dists, user_attrs=attrs))
    return study

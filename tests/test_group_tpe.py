"""The group TPE sampler draws what Optuna's own TPE draws, from one fit per group."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from bench.sweeps.group_tpe import GroupTPESampler, log_gauss_mass, truncnorm_ppf

SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "momentum": FloatDistribution(0.0, 0.95),
    "width": IntDistribution(4, 256, log=True),
    "depth": IntDistribution(1, 4),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
    "optimizer": CategoricalDistribution(["sgd", "adam", "adamw"]),
}


def _history(n: int, direction: str, seed: int = 0, pruned_share: float = 0.2) -> optuna.Study:
    """A study holding n finished trials (some pruned, with curves), no sampler involved."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction=direction)
    trials = []
    for _ in range(n):
        params = {"lr": float(np.exp(rng.uniform(np.log(1e-4), 0))),
                  "momentum": float(rng.uniform(0, 0.95)),
                  "width": int(rng.integers(4, 257)), "depth": int(rng.integers(1, 5)),
                  "dropout": float(rng.integers(0, 6)) / 10,
                  "optimizer": ["sgd", "adam", "adamw"][int(rng.integers(3))]}
        value = -(np.log10(params["lr"]) + 2) ** 2 + params["momentum"] + rng.normal(0, 0.1)
        if rng.random() < pruned_share:
            curve = {e: float(value - (5 - e) * 0.1) for e in range(1, int(rng.integers(2, 5)))}
            trials.append(create_trial(state=TrialState.PRUNED, params=params,
                                       distributions=SPACE, intermediate_values=curve))
        else:
            trials.append(create_trial(value=float(value), params=params, distributions=SPACE))
    study.add_trials(trials)
    return study


def _ask(study: optuna.Study, sampler: optuna.samplers.BaseSampler, k: int) -> list[dict]:
    study.sampler = sampler
    return [study.ask(fixed_distributions=SPACE).params for _ in range(k)]


@pytest.mark.parametrize("n, direction, seed", [(12, "maximize", 0), (40, "minimize", 1),
                                                (300, "maximize", 2)])
def test_a_group_equals_optuna_tpe_asked_one_by_one_with_the_same_seed(n, direction, seed):
    """Same history, same seed: Optuna's multivariate TPE (no constant liar) asked k times and
    one `draw_group` of k give the same points (to rounding in the truncated-normal inverse)."""
    k = 16
    study = _history(n, direction, seed)
    theirs = _ask(study, optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                    constant_liar=False), k)
    ours_sampler = GroupTPESampler(seed=seed)
    ours_sampler.draw_group(study, k)  # the k RUNNING trials above are not in the history
    ours = _ask(study, ours_sampler, k)
    assert len(ours) == len(theirs) == k
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.keys() == other.keys()
        for name in mine:
            if isinstance(mine[name], float):
                assert mine[name] == pytest.approx(other[name], rel=1e-9, abs=1e-12), name
            else:
                assert mine[name] == other[name], name


def test_startup_and_ungrouped_asks_are_random_like_tpes_startup():
    study = _history(5, "maximize")  # below TPE's 10 start-up trials
    sampler = GroupTPESampler(seed=3)
    sampler.draw_group(study, 8)
    theirs = _ask(_history(5, "maximize"), optuna.samplers.RandomSampler(seed=3), 8)
    assert _ask(study, sampler, 8) == theirs


def test_draws_follow_the_fitted_density():
    """Statistical check independent of Optuna: with no history weight on one region the
    draws concentrate where the good trials are (lr near 1e-2 by construction)."""
    study = _history(400, "maximize", seed=5, pruned_share=0.0)
    sampler = GroupTPESampler(seed=0)
    sampler.draw_group(study, 256)
    lrs = np.log10([p["lr"] for p in _ask(study, sampler, 256)])
    uniform = np.random.default_rng(0).uniform(-4, 0, 256)
    assert abs(np.median(lrs) + 2) < 0.5
    assert stats.ks_2samp(lrs, uniform).pvalue < 1e-6


def test_truncated_normal_helpers_match_scipy():
    a = np.array([-3.0, -0.5, 0.2, 1.5, -40.0])
    b = np.array([-1.0, 0.7, 2.0, 30.0, 2.0])
    expected = np.log(stats.norm.cdf(b) - stats.norm.cdf(a))
    assert np.allclose(log_gauss_mass(a, b), expected, rtol=1e-10)
    q = np.array([0.1, 0.5, 0.9, 0.3, 0.999])
    assert np.allclose(truncnorm_ppf(q, a, b), stats.truncnorm.ppf(q, a, b), rtol=1e-8)

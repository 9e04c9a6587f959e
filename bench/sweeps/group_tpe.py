"""Optuna's TPE, fitted once per group of trials instead of once per trial.

A worker asks for a whole group of trials before training any of them, so every ask of a group
sees the same finished trials. Optuna's `TPESampler(multivariate=True, constant_liar=False)`
then refits the same two Parzen estimators for each ask and draws one point from them: the
fit costs time in proportion to the study's size, once per trial, and dominates a large sweep.
`GroupTPESampler` fits the estimators once per group (`draw_group`) and makes the group's k
draws from that one fit, consuming its random stream in the same order as k asks of Optuna's
sampler with the same seed. It is the same distribution, and for the same seed the same points
(tests/test_group_tpe.py checks them against Optuna's own sampler on the same history).

The mathematics is Optuna 5's TPE with its defaults (prior weight 1, magic clip, no endpoints,
`default_gamma`, `default_weights`, 24 candidates), rewritten in vectorised NumPy/SciPy on the
public `BaseSampler` interface only. Used for single-objective TPE studies without conditional
parameters; the others keep `optuna.samplers.TPESampler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState
from scipy import special

PRIOR_WEIGHT = 1.0
N_EI_CANDIDATES = 24
CHUNK = 256  # candidates scored at once against every kernel (bounds memory)


def default_gamma(n: int) -> int:
    """How many finished trials form the 'good' (below) set: Optuna's default."""
    return min(math.ceil(0.1 * n), 25)


def default_weights(n: int) -> np.ndarray:
    """Kernel weights by age (oldest first): Optuna's default ramp over all but the last 25."""
    if n == 0:
        return np.asarray([])
    if n < 25:
        return np.ones(n)
    return np.concatenate([np.linspace(1.0 / n, 1.0, num=n - 25), np.ones(25)])


# ---------------------------------------------------------------------------------------------
# The truncated normal (log-space mass, inverse cdf, log density), as Optuna computes it


def _log_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return log_p + np.log1p(-np.exp(log_q - log_p))


def log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)), computed in the left tail where that is accurate."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    out = np.empty(a.shape)
    left, right = b <= 0, a > 0
    central = ~(left | right)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[left] = _log_diff(special.log_ndtr(b[left]), special.log_ndtr(a[left]))
        out[right] = _log_diff(special.log_ndtr(-a[right]), special.log_ndtr(-b[right]))
        out[central] = np.log1p(-special.ndtr(a[central]) - special.ndtr(-b[central]))
    return out


def truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The standard normal truncated to [a, b] at quantile q (Optuna's two-sided formula)."""
    q, a, b = np.broadcast_arrays(*np.atleast_1d(q, a, b))
    log_mass = log_gauss_mass(a, b)
    out = np.empty(q.shape)
    left = a < 0
    right = ~left
    with np.errstate(divide="ignore"):
        out[left] = special.ndtri_exp(np.logaddexp(special.log_ndtr(a[left]),
                                                   np.log(q[left]) + log_mass[left]))
        out[right] = -special.ndtri_exp(np.logaddexp(special.log_ndtr(-b[right]),
                                                     np.log1p(-q[right]) + log_mass[right]))
    out[q == 0] = a[q == 0]
    out[q == 1] = b[q == 1]
    out[a == b] = math.nan
    return out


# ---------------------------------------------------------------------------------------------
# One Parzen estimator: a mixture of per-trial product kernels plus a prior kernel


@dataclass(frozen=True)
class _Numerical:
    mu: np.ndarray  # per kernel, in the internal (log if log) scale
    sigma: np.ndarray
    low: float  # the distribution's bounds
    high: float
    step: float  # 0 for continuous
    log: bool

    @property
    def adapted_low(self) -> float:
        low = self.low - self.step / 2
        return math.log(low) if self.log else low

    @property
    def adapted_high(self) -> float:
        high = self.high + self.step / 2
        return math.log(high) if self.log else high


@dataclass(frozen=True)
class _Categorical:
    weights: np.ndarray  # [kernels, choices]


def _numerical(obs: np.ndarray, dist: Any) -> _Numerical:
    step = float(dist.step) if dist.step is not None else 0.0
    low, high = dist.low - step / 2, dist.high + step / 2
    mus = np.asarray(obs, dtype=float)
    if dist.log:
        mus, low, high = np.log(mus), math.log(low), math.log(high)
    order = np.argsort(mus)
    ends = np.concatenate([[low], mus[order], [high]])
    sigmas_sorted = np.maximum(ends[1:-1] - ends[:-2], ends[2:] - ends[1:-1])
    if len(ends) >= 4:  # no endpoints: the outer kernels look inwards only
        sigmas_sorted[0] = ends[2] - ends[1]
        sigmas_sorted[-1] = ends[-2] - ends[-3]
    sigmas = sigmas_sorted[np.argsort(order)]
    min_sigma = (high - low) / min(100.0, 1.0 + len(mus) + 1)  # magic clip
    sigmas = np.clip(sigmas, min_sigma, high - low)
    return _Numerical(np.append(mus, 0.5 * (low + high)), np.append(sigmas, high - low),
                      float(dist.low), float(dist.high), step, bool(dist.log))


def _categorical(obs: np.ndarray, dist: CategoricalDistribution) -> _Categorical:
    n_choices = len(dist.choices)
    if len(obs) == 0:
        return _Categorical(np.full((1, n_choices), 1.0 / n_choices))
    kernels = len(obs) + 1
    weights = np.full((kernels, n_choices), PRIOR_WEIGHT / kernels)
    weights[np.arange(len(obs)), obs.astype(int)] += 1
    return _Categorical(weights / weights.sum(axis=1, keepdims=True))


class ParzenEstimator:
    """Optuna's TPE density over a search space, from one set of finished trials."""

    def __init__(self, observations: dict[str, np.ndarray],
                 space: dict[str, BaseDistribution]) -> None:
        n = len(next(iter(observations.values()))) if observations else 0
        weights = np.append(default_weights(n), PRIOR_WEIGHT) if n else np.array([1.0])
        self.weights = weights / weights.sum()
        self._terms: np.ndarray | None = None
        self.names = list(space)
        self.dists = [_categorical(observations[name], d) if isinstance(d, CategoricalDistribution)
                      else _numerical(observations[name], d) for name, d in space.items()]

    def sample(self, rng: np.random.RandomState, size: int) -> np.ndarray:
        """`size` points [size, params], drawing from `rng` exactly as Optuna does."""
        active = rng.choice(len(self.weights), p=self.weights, size=size)
        out = np.empty((size, len(self.dists)))
        numerical = []
        for i, d in enumerate(self.dists):
            if isinstance(d, _Categorical):
                q = rng.rand(size)
                cum = np.cumsum(d.weights[active], axis=-1)
                cum[:, -1] = 1
                out[:, i] = np.sum(cum < q[:, None], axis=-1)
            else:
                numerical.append(i)
        if numerical:
            ds = [self.dists[i] for i in numerical]
            mus = np.asarray([d.mu[active] for d in ds])
            sig = np.asarray([d.sigma[active] for d in ds])
            lows = np.asarray([d.adapted_low for d in ds])[:, None]
            highs = np.asarray([d.adapted_high for d in ds])[:, None]
            q = rng.uniform(low=0, high=1, size=mus.shape)
            values = (truncnorm_ppf(q, (lows - mus) / sig, (highs - mus) / sig) * sig + mus).T
            for j, (i, d) in enumerate(zip(numerical, ds, strict=True)):
                v = np.exp(values[:, j]) if d.log else values[:, j]
                if d.step:
                    v = np.clip(d.low + np.round((v - d.low) / d.step) * d.step, d.low, d.high)
                out[:, i] = v
        return out

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Log density of each point of x [points, params] under the mixture."""
        out = np.empty(len(x))
        for start in range(0, len(x), CHUNK):
            out[start:start + CHUNK] = self._log_pdf(x[start:start + CHUNK])
        return out

    def _kernel_terms(self) -> np.ndarray:
        """Per kernel, what does not depend on the point: log weight, and for each continuous
        parameter the truncated normal's normaliser (computed once per fit)."""
        if self._terms is None:
            terms = np.log(self.weights)
            for d in self.dists:
                if isinstance(d, _Numerical) and not d.step:
                    lo = (d.adapted_low - d.mu) / d.sigma
                    hi = (d.adapted_high - d.mu) / d.sigma
                    terms = terms - (0.5 * math.log(2 * math.pi) + log_gauss_mass(lo, hi)
                                     + np.log(d.sigma))
            self._terms = terms
        return self._terms

    def _log_pdf(self, x: np.ndarray) -> np.ndarray:
        total = np.empty((len(x), len(self.weights)))
        total[:] = self._kernel_terms()
        for i, d in enumerate(self.dists):
            if isinstance(d, _Categorical):
                total += np.log(d.weights[:, x[:, i].astype(np.int64)]).T
                continue
            if d.step:  # few distinct grid values: the mass once per value and kernel
                lo = (d.adapted_low - d.mu) / d.sigma
                hi = (d.adapted_high - d.mu) / d.sigma
                values, inverse = np.unique(x[:, i], return_inverse=True)
                left, right = values - d.step / 2, values + d.step / 2
                if d.log:
                    left, right = np.log(left), np.log(right)
                mass = log_gauss_mass((left[:, None] - d.mu) / d.sigma,
                                      (right[:, None] - d.mu) / d.sigma)
                total += mass[inverse] - log_gauss_mass(lo, hi)
            else:  # -z^2 / 2 in place (the normaliser is in the kernel terms)
                xi = np.log(x[:, i]) if d.log else x[:, i]
                z = xi[:, None] - d.mu
                z /= d.sigma
                np.square(z, out=z)
                z *= -0.5
                total += z
        top = total.max(axis=1)
        top[np.isneginf(top)] = 0
        total -= top[:, None]
        np.exp(total, out=total)
        with np.errstate(divide="ignore"):
            return np.log(total.sum(axis=1)) + top


# ---------------------------------------------------------------------------------------------
# The sampler


def _split(trials: list[Any], n_below: int, maximize: bool) -> tuple[list[Any], list[Any]]:
    """Optuna's split of finished trials into the best `n_below` and the rest, by number."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    ranked = sorted(complete, key=lambda t: t.value, reverse=maximize)
    below, above = ranked[:min(n_below, len(ranked))], ranked[min(n_below, len(ranked)):]
    left = max(0, n_below - len(below))

    def pruned_score(t: Any) -> tuple[float, float]:
        if not t.intermediate_values:
            return 1, 0.0
        step, value = max(t.intermediate_values.items())
        if math.isnan(value):
            return -step, math.inf
        return -step, -value if maximize else value

    ranked_pruned = sorted(pruned, key=pruned_score)
    below += ranked_pruned[:min(left, len(ranked_pruned))]
    above += ranked_pruned[min(left, len(ranked_pruned)):]
    return sorted(below, key=lambda t: t.number), sorted(above, key=lambda t: t.number)


class GroupTPESampler(optuna.samplers.BaseSampler):
    """Multivariate TPE that fits once per group: call `draw_group(study, k)` before k asks.

    Without `draw_group` (or before `n_startup_trials` trials have finished) parameters come
    from Optuna's `RandomSampler`, as TPE's start-up does."""

    def __init__(self, seed: int | None = None, n_startup_trials: int = 10,
                 n_ei_candidates: int = N_EI_CANDIDATES) -> None:
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates
        self._space: dict[str, BaseDistribution] = {}
        self._queue: list[dict[str, Any]] = []

    def draw_group(self, study: Any, k: int) -> None:
        """Fit the estimators on the finished trials once and draw the next k asks' points."""
        self._space, self._queue = {}, []
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if k <= 0 or len(trials) < self.n_startup_trials:
            return
        space = {name: d for name, d in optuna.search_space.intersection_search_space(
            trials, include_pruned=True).items() if not d.single()}
        if not space:
            return
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        below, above = _split(trials, default_gamma(len(trials)), maximize)
        estimators = [ParzenEstimator(self._observations(group, space), space)
                      for group in (below, above)]
        m = self.n_ei_candidates
        candidates = np.concatenate([estimators[0].sample(self._rng, m) for _ in range(k)])
        score = estimators[0].log_pdf(candidates) - estimators[1].log_pdf(candidates)
        best = np.argmax(score.reshape(k, m), axis=1) + np.arange(k) * m
        for row in candidates[best]:
            self._queue.append({name: d.to_external_repr(row[i].item())
                                for i, (name, d) in enumerate(space.items())})
        self._space = space

    def take_drawn(self, names: set[str], k: int) -> list[dict[str, Any]] | None:
        """The group's k drawn points, handed out at once (and forgotten here) when they set
        exactly the parameters `names`: the worker then creates its trials with these values
        directly. None, and nothing forgotten, otherwise (asks take them one by one)."""
        if len(self._queue) != k or any(p.keys() != names for p in self._queue):
            return None
        drawn, self._queue = self._queue, []
        return drawn

    @staticmethod
    def _observations(trials: list[Any], space: dict[str, BaseDistribution]
                      ) -> dict[str, np.ndarray]:
        return {name: np.asarray([d.to_internal_repr(t.params[name]) for t in trials], float)
                for name, d in space.items()}

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, BaseDistribution]:
        return dict(self._space) if self._queue else {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, BaseDistribution]
                        ) -> dict[str, Any]:
        if not self._queue or not search_space:
            return {}
        params = self._queue.pop(0)
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(self, study: Any, trial: Any, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._random.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._random.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

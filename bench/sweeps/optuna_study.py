"""The Optuna side of a study: its seeded sampler and pruner, each worker's sampler seed, and
creating or loading the study in a storage (refusing one made from other settings, or not by
nnbench)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import optuna

from bench.errors import UsageError
from bench.sweeps.storage import quiet_optuna_warnings
from bench.sweeps.study import StudySpec

# Settings that may change between runs of one study without changing what a trial means.

MUTABLE_KEYS = ("trials", "group", "description")


def make_sampler(spec: StudySpec, seed: int) -> Any:
    """The study's sampler, seeded."""
    import optuna

    startup = spec.sampler_startup_trials
    if spec.sampler == "tpe" and not spec.conditional and len(spec.directions) == 1:
        from bench.sweeps.group_tpe import GroupTPESampler  # one TPE fit per group of trials

        return GroupTPESampler(seed=seed, **({} if startup is None
                                             else {"n_startup_trials": startup}))
    if spec.sampler == "tpe":
        kwargs: dict[str, Any] = {} if startup is None else {"n_startup_trials": startup}
        if spec.conditional:  # TPE's joint model per group of parameters that appear together
            kwargs.update(multivariate=True, group=True)
        with quiet_optuna_warnings():  # multivariate and group are "experimental" in Optuna
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True, **kwargs)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return _ask_tell_grid_sampler({p.name: p.grid_values() for p in spec.space}, seed)
    if spec.sampler == "cmaes":
        kwargs = {} if startup is None else {"n_startup_trials": startup}
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            **kwargs)
    if spec.sampler == "qmc":
        with quiet_optuna_warnings():  # QMCSampler is "experimental" in Optuna's terms
            return optuna.samplers.QMCSampler(seed=seed, scramble=True,
                                              warn_asynchronous_seeding=False,
                                              warn_independent_sampling=False)
    raise UsageError(f"unknown sampler {spec.sampler!r}")


def _ask_tell_grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    """A GridSampler that ask/tell can exhaust (the class is made here: optuna loads lazily)."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        """GridSampler without its `study.stop()` when the grid is exhausted.

        `stop` only works inside `study.optimize`; with ask/tell the study's target (which may
        not exceed the grid size) ends the sweep instead.
        """

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            del study, trial, state, values

    return AskTellGridSampler(search_space, seed=seed)


def _min_resource(spec: StudySpec) -> int:
    """The first rung (epochs) of successive halving and hyperband."""
    if spec.pruner == "hyperband":
        return spec.pruner_min_resource or max(1, spec.pruner_warmup_epochs)
    return spec.pruner_min_resource or 1


def decision_epochs(spec: StudySpec) -> frozenset[int]:
    """The epochs after which the study's pruner can stop a trial; at any other epoch Optuna's
    `prune` returns False and changes nothing, so a sweep asks `should_prune` only at these
    (the same decisions, without a call that costs ~0.1 ms per trial and epoch: Hyperband
    builds a bracket study per call).

    Median and percentile (interval 1): every epoch from the warm-up on. Successive halving
    and hyperband: the rungs `min_resource * reduction_factor**j` (bracket b's rungs start at
    j = b, so the union over brackets is every j). `tests/test_pruning.py` checks the decisions
    equal those of asking after every epoch, for each pruner.
    """
    epochs = range(1, spec.max_epochs + 1)
    if spec.pruner in ("median", "percentile"):
        return frozenset(e for e in epochs if e >= spec.pruner_warmup_epochs)
    if spec.pruner in ("successive_halving", "hyperband"):
        rungs, rung = set(), _min_resource(spec)
        while rung <= spec.max_epochs:
            rungs.add(rung)
            rung *= spec.pruner_reduction_factor
        return frozenset(rungs)
    return frozenset()


def make_pruner(spec: StudySpec) -> Any:
    """The study's pruner (NopPruner for 'none')."""
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                           n_warmup_steps=spec.pruner_warmup_epochs)
    if spec.pruner == "percentile":
        return optuna.pruners.PercentilePruner(spec.pruner_percentile,
                                               n_startup_trials=spec.pruner_startup_trials,
                                               n_warmup_steps=spec.pruner_warmup_epochs)
    if spec.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_min_resource(spec), reduction_factor=spec.pruner_reduction_factor)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=_min_resource(spec), max_resource=spec.max_epochs,
            reduction_factor=spec.pruner_reduction_factor)
    return optuna.pruners.NopPruner()


def worker_seed(spec: StudySpec, *, existing_trials: int, worker_index: int,
                shared: bool) -> int:
    """The sampler seed of one worker.

    A fresh single-worker sweep uses the study's seed as is (reproducible). A resumed sweep,
    a second worker, or a worker on a shared server derives a distinct seed, so that random
    start-up points are not proposed twice.
    """
    if existing_trials == 0 and worker_index == 0 and not shared:
        return spec.sampler_seed
    salt = [spec.sampler_seed, existing_trials, worker_index]
    if shared:
        salt += [sum(socket.gethostname().encode()), os.getpid()]
    return int(np.random.SeedSequence(salt).generate_state(1)[0])


def open_study(spec: StudySpec, storage: Any) -> Any:
    """Create or load the Optuna study for `spec`, refusing one made from another study file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(spec, spec.sampler_seed)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler,
                                  pruner=make_pruner(spec))
    except KeyError:
        study = optuna.create_study(study_name=spec.name, storage=storage, sampler=sampler,
                                    pruner=make_pruner(spec), directions=list(spec.directions),
                                    load_if_exists=True)
    mine = spec.to_dict()
    stored = study.user_attrs.get("nnbench_study")
    if not isinstance(stored, dict | None) or (stored is None and study.get_trials(deepcopy=False)):
        raise UsageError(f"study {spec.name!r} in the storage was not made by nnbench (it has "
                         "trials but no valid nnbench settings); give the study another `name` "
                         "or use another --storage")
    if stored is not None:
        changed = sorted(k for k in set(mine) | set(stored)
                         if k not in MUTABLE_KEYS and mine.get(k) != stored.get(k))
        if changed:
            raise UsageError(f"study {spec.name!r} in the storage was made from different "
                             f"settings ({', '.join(changed)} changed); give the study a new "
                             "`name` or use another --storage")
    if stored != mine:
        attrs = {"nnbench_study": mine, "study_file": spec.path, "task": spec.task,
                 "model": spec.model, "objective": spec.objective,
                 "objectives": list(spec.objectives), "directions": list(spec.directions)}
        for key, value in attrs.items():
            study.set_user_attr(key, value)
    return study


class TimedSampler(optuna.samplers.BaseSampler):
    """Any Optuna sampler, with the seconds spent choosing parameters added up in `seconds`.

    A plain delegate on the public `BaseSampler` interface: what it samples is exactly what the
    wrapped sampler samples (it is how `bench sweep` splits its time into engine, sampler,
    storage and other)."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __str__(self) -> str:
        return str(self.inner)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            return self.inner.infer_relative_search_space(study, trial)
        finally:
            self.seconds += time.perf_counter() - began

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]
                        ) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            return self.inner.sample_relative(study, trial, search_space)
        finally:
            self.seconds += time.perf_counter() - began

    def sample_independent(self, study: Any, trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)
        finally:
            self.seconds += time.perf_counter() - began

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        began = time.perf_counter()
        try:
            self.inner.after_trial(study, trial, state, values)
        finally:
            self.seconds += time.perf_counter() - began

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def take_drawn(self, names: set[str], k: int) -> list[dict[str, Any]] | None:
        """A group sampler's k drawn points for direct trial creation (see GroupTPESampler)."""
        take = getattr(self.inner, "take_drawn", None)
        return None if take is None else take(names, k)

    def draw_group(self, study: Any, k: int) -> None:
        """Before asking k trials: let a group sampler fit once and draw them (timed)."""
        draw = getattr(self.inner, "draw_group", None)
        if draw is None:
            return
        began = time.perf_counter()
        try:
            draw(study, k)
        finally:
            self.seconds += time.perf_counter() - began


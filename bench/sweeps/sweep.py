"""Optuna sweeps: storage, sampler, pruner, ask/tell in groups, seeded repeats, workers, resume.

A worker asks Optuna for a group of trials, expands each trial into one RunSpec per seed, trains
the whole group with `bench.engines.registry.train_specs` (the batched engine when present) and
tells each trial the mean over its seeds of the objective metric(s). Everything a run produced is
kept on its trial (user attribute "runs", JSON text read by `bench.sweeps.trials.decode_runs`),
so the study is the single record of the sweep and stays readable by plain Optuna tooling
(`optuna.load_study`, `trials_dataframe()`, optuna-dashboard).

Sampling. A group's asks all see the same finished trials, so a TPE study's sampler
(`bench.sweeps.group_tpe.GroupTPESampler`) fits once per group and draws the whole group from
that fit, as Optuna's TPE would draw them one ask at a time; the group's asks and tells each
hold the storage lock once.

Counting. A trial is *finished* when it is COMPLETE, PRUNED, or FAIL with a "failure_reason"
that starts with "diverged". Other FAIL trials (a worker killed mid-trial, a group skipped
because other workers already filled the target) do not count. A worker asks only for the
trials still missing (target - finished - running), so re-running the command resumes and stops
at the target; when several workers race, trials numbered beyond the target are told FAIL
("skipped") before any training, so the target is reached and not exceeded.

Stale trials (their worker died): a RUNNING trial whose worker process on this host no longer
exists is failed at once; on an RDB storage (PostgreSQL, SQLite) workers also send Optuna
heartbeats, and trials whose heartbeat stops for `grace_period` seconds are failed by any
worker on any host (`optuna.storages.fail_stale_trials`).

Pruning. The engines call `_EpochPruning` after every epoch: each trial reports the mean over
its seeds of the objective and asks the pruner; a pruned trial's seeds leave the batched group
at once (the engine compacts it), and the trial is told PRUNED with the epoch and the pruner.
"""

from __future__ import annotations

import bisect
import copy
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.catalog import registry
from bench.engines.registry import EpochReport, choose_engine, train_specs
from bench.engines.setup import load_data, plan_run
from bench.errors import DataUnavailableError, UsageError
from bench.numbers import fmt_param, fmt_score
from bench.results import RunResult, encode_params
from bench.spec import RunSpec, resolve_device
from bench.sweeps.optuna_study import (
    TimedSampler,
    decision_epochs,
    make_sampler,
    open_study,
    worker_seed,
)
from bench.sweeps.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    display_url,
    is_shared_storage,
    open_storage,
    quiet_optuna_warnings,
    storage_batch,
    sync_storage,
)
from bench.sweeps.study import StudySpec, check_grid_size
from bench.sweeps.trials import (
    DIVERGED_PREFIX,
    count_finished,
    encode_runs,
    fail_stale_trials,
    heartbeats,
    is_finished,
    is_running,
)

# Settings that may change between runs of one study without changing what a trial means.


# ---------------------------------------------------------------------------------------------
# Storage, sampler, pruner


# ---------------------------------------------------------------------------------------------
# Counting and stale trials


# ---------------------------------------------------------------------------------------------
# One worker


@dataclass
class WorkerStats:
    """What one worker did and where its time went."""

    told: dict[str, int] = field(default_factory=dict)  # "complete", "pruned", ... -> count
    train_seconds: float = 0.0  # inside train_specs (the engine)
    sampler_seconds: float = 0.0  # inside the sampler (choosing parameters, after_trial)
    storage_seconds: float = 0.0  # asking, telling, syncing and counting, less the sampler
    total_seconds: float = 0.0  # the whole worker loop
    # per group: (trials asked, seconds outside the engine), for overhead as the study grows
    groups: list[tuple[int, float]] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        self.told[outcome] = self.told.get(outcome, 0) + 1

    def overhead_per_trial(self, first: bool, trials: int = 256) -> float:
        """Seconds outside the engine per trial over the first (or last) `trials` trials."""
        groups = self.groups if first else self.groups[::-1]
        count, seconds = 0, 0.0
        for n, sec in groups:
            if count >= trials:
                break
            count, seconds = count + n, seconds + sec
        return seconds / count if count else float("nan")

    @property
    def other_seconds(self) -> float:
        """The rest: turning trials into RunSpecs, checking them, progress."""
        return max(0.0, self.total_seconds - self.train_seconds - self.sampler_seconds
                   - self.storage_seconds)

    def split_line(self) -> str:
        """'time 12.4 s: engine 8.4 s (68%), sampler 2.9 s (23%), storage ..., other ...'."""
        total = self.total_seconds or float("nan")
        parts = [("engine", self.train_seconds), ("sampler", self.sampler_seconds),
                 ("storage", self.storage_seconds), ("other", self.other_seconds)]
        return f"time {self.total_seconds:.1f} s: " + ", ".join(
            f"{name} {sec:.1f} s ({sec / total:.0%})" for name, sec in parts)


def _metric(result: RunResult, name: str) -> float:
    if name in result.metrics:
        return float(result.metrics[name])
    return float(result.timing[name])


def with_seed(spec: RunSpec, seed: int) -> RunSpec:
    """`spec.replace(seed=seed)` without validating again: only the seed differs, and a study's
    seeds (0..seeds-1) are bounded when it is loaded. A sweep makes thousands of these, and
    validation was most of what expanding trials into runs cost (tests/test_sweep.py checks the
    result equals `replace`)."""
    out = copy.copy(spec)
    object.__setattr__(out, "seed", seed)
    return out


class _DataSizes:
    """Training-set sizes per (task, data_seed, n_samples), loaded once, for plan checks."""

    def __init__(self) -> None:
        self._sizes: dict[tuple[Any, ...], int] = {}

    def check(self, spec: RunSpec) -> None:
        """Raise UsageError where `spec` cannot be planned (as on the CPU, whatever its device)."""
        # `replace` validates the whole spec again (~0.5 ms): only where the device differs
        cpu = spec if spec.device == "cpu" else spec.replace(device="cpu")
        key = (spec.task, spec.data_seed, spec.n_samples)
        if key not in self._sizes:
            self._sizes[key] = load_data(cpu, "cpu").n_train
        plan_run(cpu, self._sizes[key])


def check_data(spec: StudySpec, shared: bool = False) -> None:
    """Refuse, before the storage is opened, a study no trial could run: its data cannot be
    loaded here (unless the storage is `shared`, where another host may have it), or its
    smallest batch size is above its training set. Either way every trial would be stored as
    "cannot run here" and count towards the target. A study whose sample count or data seed
    varies, or whose batch size is full-batch or conditional, leaves the batch size to each
    trial's check."""
    try:
        probe = spec.run_spec({}, 0)
    except UsageError:
        return  # the fixed settings alone are not a whole spec: each trial says why
    try:
        n_train = load_data(probe, "cpu").n_train  # cached: the worker's first trial reuses it
    except DataUnavailableError:
        if shared:
            return
        raise
    except UsageError:
        return
    if any(p.name in ("n_samples", "data_seed") for p in spec.space):
        return
    varied = next((p for p in spec.space if p.name == "batch_size"), None)
    if varied is None:
        key, sizes = "fixed.batch_size", [spec.fixed.get("batch_size")]
    elif varied.when:
        return
    else:
        key = "space.batch_size"
        sizes = list(varied.choices) if varied.kind == "categorical" else [varied.low]
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in sizes):
        return  # full batch (None or "full") fits any training set
    if min(sizes) > n_train:
        raise UsageError(f"{spec.path}: {key}: {min(sizes)} is above the training set of "
                         f"{spec.task} ({n_train} examples), so no trial could run; use a "
                         f"batch_size of {n_train} or less")


@dataclass
class _Member:
    """One asked trial of a group and its per-seed RunSpecs (or why it cannot run)."""

    trial: Any
    specs: list[RunSpec] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)
    invalid: str | None = None
    pruned_epoch: int | None = None  # the epoch after which the pruner stopped it


class _EpochPruning:
    """The engines' per-epoch hook for one trained batch of trials: once every seed of a trial
    has finished epoch e, the trial reports the mean over its seeds of the objective
    (`trial.report`) and, at an epoch where the pruner can decide (`decision_epochs`), asks
    `trial.should_prune()`; a pruned trial's seeds stop at once."""

    def __init__(self, spec: StudySpec, members: list[_Member], storage: Any = None) -> None:
        self.metric = spec.objective.removeprefix("val_")
        self.decides = decision_epochs(spec)
        self.members = members
        self.storage = storage
        self._batch: ExitStack | None = None  # a burst's reports under one journal lock
        self.owner: list[int] = []  # run index -> member index
        self.runs_of: list[list[int]] = []  # member index -> its run indices
        for index, member in enumerate(members):
            first = len(self.owner)
            self.owner += [index] * len(member.specs)
            self.runs_of.append(list(range(first, len(self.owner))))
        self.pending: dict[tuple[int, int], list[float]] = {}
        self.ended: set[int] = set()

    def __call__(self, report: EpochReport) -> list[int] | None:
        index = self.owner[report.run]
        if index in self.ended:
            return None
        if report.diverged:  # the trial ends as diverged; nothing to report
            self.ended.add(index)
            return None
        values = self.pending.setdefault((index, report.epoch), [])
        values.append(report.val[self.metric])
        if len(values) < len(self.runs_of[index]):
            return None
        del self.pending[(index, report.epoch)]
        member = self.members[index]
        if self._batch is None and self.storage is not None:
            self._batch = ExitStack()
            self._batch.enter_context(storage_batch(self.storage))
        # the mean over seeds (np.mean costs ~15 us on a short list; fsum would raise on
        # values that overflow, where this gives inf as np.mean does)
        member.trial.report(sum(values) / len(values), report.epoch)
        if report.epoch not in self.decides or not member.trial.should_prune():
            return None
        self.ended.add(index)
        member.pruned_epoch = report.epoch
        return self.runs_of[index]

    def epoch_done(self) -> None:
        """The engine recorded every run of this epoch (`Ledger.newly_ended`): release the
        storage lock, which is never held while training."""
        if self._batch is not None:
            batch, self._batch = self._batch, None
            batch.close()


class Worker:
    """Asks, trains and tells groups of trials of one study until its target is reached."""

    def __init__(self, spec: StudySpec, storage_url: str | None, *, worker_index: int = 0,
                 engine: str = "auto", heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD,
                 on_group: Callable[[Any], None] | None = None) -> None:
        self.spec = spec
        self.engine = engine
        self.host = socket.gethostname()
        self.storage = open_storage(storage_url, heartbeat_interval=heartbeat_interval,
                                    grace_period=grace_period)
        self.study = open_study(spec, self.storage)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.distributions = spec.distributions()
        seed = worker_seed(spec, existing_trials=len(self.study.get_trials(deepcopy=False)),
                           worker_index=worker_index, shared=is_shared_storage(storage_url))
        self.sampler = TimedSampler(make_sampler(spec, seed))
        self.study.sampler = self.sampler
        self.sizes = _DataSizes()
        task = registry.get_task(spec.task)  # 2-D classification: the report draws boundaries
        self.keep_params = task.input_dim == 2 and task.kind != "regression"
        # the best complete value so far per optimizer (or loss) value, as the report's
        # decision-boundary chart groups trials: see `_keeps_params`
        names = {p.name for p in spec.space}
        self._factor = next((f for f in ("optimizer", "loss") if f in names), None)
        self._maximize = spec.directions[0] == "maximize"
        self._best: dict[Any, float] = {}
        if self.keep_params and len(spec.directions) == 1:
            from optuna.trial import TrialState

            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                self._at_least_best(t.params, t.value)
        self.on_group = on_group
        self.stats = WorkerStats()
        self._asked: list[Any] = []  # trials of the current group not yet told

    def run(self) -> WorkerStats:
        """Loop: fail stale trials, ask what is missing, train, tell; stop at the target."""
        start = time.perf_counter()
        stats = self.stats
        while True:
            began = time.perf_counter()
            try:
                fail_stale_trials(self.study, self.storage)
                trials = self.study.get_trials(deepcopy=False)
                room = self.spec.trials - sum(is_finished(t) or is_running(t) for t in trials)
                group = self._ask(min(room, self.spec.group)) if room > 0 else []
                stats.storage_seconds += time.perf_counter() - began
                if room <= 0:
                    break
                if group:
                    engine_before = stats.train_seconds
                    self._train_and_tell(group)
                    stats.groups.append((len(group), time.perf_counter() - began
                                         - (stats.train_seconds - engine_before)))
            except BaseException as exc:  # an error, Ctrl-C, SIGTERM: fail what is not told
                first = str(exc).splitlines()[0] if str(exc) else ""
                self._fail_untold(f"stopped before it was told: {type(exc).__name__}: {first}")
                raise
            self._asked = []
            if self.on_group is not None:
                self.on_group(self.study)
        stats.total_seconds = time.perf_counter() - start
        stats.sampler_seconds = self.sampler.seconds
        stats.storage_seconds = max(0.0, stats.storage_seconds - stats.sampler_seconds)
        return stats

    def _ask(self, k: int) -> list[Any]:
        """Ask k trials; those numbered beyond the target (other workers raced us) are skipped."""
        from optuna.trial import TrialState

        asked = []
        worker = {"host": self.host, "pid": os.getpid()}
        self.sampler.draw_group(self.study, k)
        drawn = self.sampler.take_drawn(set(self.distributions), k)  # None: ask one by one
        with storage_batch(self.storage):  # the group's records under one lock acquisition
            for i in range(k):
                if drawn is not None:  # the values are known: one record creates the trial
                    trial = self._create_running(drawn[i], worker)
                    self._asked.append(trial)
                else:
                    with quiet_optuna_warnings():
                        trial = self.spec.ask(self.study)
                    self._asked.append(trial)  # failed by `run` if the worker stops untold
                    trial.set_user_attr("worker", worker)
                asked.append(trial)
        numbers = {t.number for t in asked}
        counted = sorted(t.number for t in self.study.get_trials(deepcopy=False)
                         if (is_finished(t) or is_running(t)) and t.number not in numbers)
        keep = []
        for trial in asked:
            ahead = bisect.bisect_left(counted, trial.number) + len(keep)  # counted below it
            if ahead < self.spec.trials:
                keep.append(trial)
            else:
                trial.set_user_attr("failure_reason", "skipped: other workers already asked "
                                                      "for the trials the target needs")
                self.study.tell(trial, state=TrialState.FAIL)
                self.stats.add("skipped")
        return keep

    def _create_running(self, params: dict[str, Any], worker: dict[str, Any]) -> Any:
        """A RUNNING trial with these parameter values and its worker, written as one storage
        record (`study.ask` plus suggestions and the worker attribute take four, and scan
        every trial for a waiting one), through the public storage and trial API."""
        from optuna.trial import Trial, TrialState, create_trial

        template = create_trial(state=TrialState.RUNNING, params=params,
                                distributions=self.distributions, user_attrs={"worker": worker})
        return Trial(self.study, self.storage.create_new_trial(self.study_id, template))

    def _expand(self, trial: Any) -> _Member:
        """The trial's RunSpecs, one per seed, on a resolved device; or why they are invalid."""
        member = _Member(trial)
        try:
            first = self.spec.run_spec(trial.params, 0)
            if first.device == "cuda" and not torch.cuda.is_available():
                raise UsageError(f"device 'cuda' is not available on {self.host}")
            device = resolve_device(first.device)
            if (first.device, first.engine) != (device, "auto"):  # `replace` validates again
                first = first.replace(device=device, engine="auto")
            self.sizes.check(first)
            member.specs = [first] + [with_seed(first, seed) for seed in range(1, self.spec.seeds)]
        except UsageError as exc:
            member.invalid = str(exc)
        return member

    def _train_and_tell(self, trials: list[Any]) -> None:
        members = [self._expand(t) for t in trials]
        runnable = [m for m in members if m.invalid is None]
        with heartbeats(self.storage, self.study, [m.trial.number for m in members]):
            for device in sorted({m.specs[0].device for m in runnable}):
                on_device = [m for m in runnable if m.specs[0].device == device]
                specs = [s for m in on_device for s in m.specs]
                hook = _EpochPruning(self.spec, on_device, self.storage) \
                    if self.spec.pruner != "none" else None
                keep = self.keep_params and choose_engine(specs, self.engine) in (
                    "batched", "reference")
                began = time.perf_counter()
                try:
                    results = train_specs(specs, self.engine, on_epoch=hook,
                                          **({"keep_params": True} if keep else {}))
                finally:
                    if hook is not None:
                        hook.epoch_done()
                self.stats.train_seconds += time.perf_counter() - began
                for m in on_device:
                    m.results, results = results[:len(m.specs)], results[len(m.specs):]
        began = time.perf_counter()
        with storage_batch(self.storage):
            for m in members:
                self._tell(m)
        sync_storage(self.storage)
        self.stats.storage_seconds += time.perf_counter() - began

    def _fail_untold(self, reason: str) -> None:
        """Fail the trials this worker asked and has not told (best effort, as another error
        propagates); told ones are left as they are."""
        from optuna.trial import TrialState

        for trial in self._asked:
            try:  # a told trial refuses the attribute: it is left as it is
                trial.set_user_attr("failure_reason", reason)
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:
                continue
        self._asked = []

    def _keeps_params(self, m: _Member, values: list[float]) -> bool:
        """Whether a complete trial's runs keep their final parameters (2-D classification
        tasks): when it scores at least as well as every complete trial this worker has seen with
        the same optimizer, or loss, when the study varies one. The report draws the decision
        boundary of the best trial of each, and that one scores at least as well as every trial
        told before it, so it always keeps them; the others need not pay for encoding and
        storing them (about 1 ms and 30 KB per trial of notebook 000's network at 5 seeds)."""
        if not self.keep_params:
            return False
        if len(values) > 1:  # several objectives: no single best, keep them all
            return True
        return self._at_least_best(m.trial.params, values[0])

    def _at_least_best(self, params: dict[str, Any], value: float) -> bool:
        """Whether `value` is at least the best seen with these params' optimizer (or loss);
        if so it becomes that best."""
        key = params.get(self._factor) if self._factor else None
        best = self._best.get(key)
        if best is not None and (value < best if self._maximize else value > best):
            return False
        self._best[key] = value
        return True

    def _run_record(self, result: RunResult, keep_params: bool = True) -> dict[str, Any]:
        """What a trial keeps of one run: its RunResult, host and device, and, when asked,
        its final parameters (small models), so the report draws boundaries without
        retraining."""
        record = {**result.to_dict(), "host": self.host, "device": result.spec.device}
        if keep_params and result.params is not None:
            encoded = encode_params(result.params)
            if encoded is not None:
                record["final_params"] = encoded
        return record

    def _tell(self, m: _Member) -> None:
        """Record the member's runs and how the trial ended, and tell Optuna: COMPLETE, PRUNED
        (by the pruner, or it cannot run here) or FAIL (diverged). The user attribute `end`
        says which, with its details, for every table and chart."""
        from optuna.trial import TrialState

        trial, spec = m.trial, self.spec
        said = {"objective": spec.objective}  # in `end`: one record fewer per trial
        if m.invalid is not None:
            trial.set_user_attr("runs", encode_runs([]))
            trial.set_user_attr("failure_reason", f"cannot run here: {m.invalid}")
            trial.set_user_attr("end", {**said, "kind": "cannot_run", "why": m.invalid,
                                        "host": self.host})
            self.study.tell(trial, state=TrialState.PRUNED)
            self.stats.add("cannot_run")
            return
        diverged = [r for r in m.results if r.diverged]
        values = [float(np.mean([_metric(r, name) for r in m.results]))
                  for name in spec.objectives]
        complete = (m.pruned_epoch is None and not diverged
                    and all(math.isfinite(v) for v in values))
        keep = complete and self._keeps_params(m, values)
        trial.set_user_attr("runs", encode_runs([self._run_record(r, keep) for r in m.results]))
        if m.pruned_epoch is not None:
            trial.set_user_attr("failure_reason", f"pruned at epoch {m.pruned_epoch} by the "
                                                  f"{spec.pruner} pruner")
            trial.set_user_attr("end", {**said, "kind": "pruned", "epoch": m.pruned_epoch,
                                        "pruner": spec.pruner})
            self.study.tell(trial, state=TrialState.PRUNED)
            self.stats.add("pruned")
            return
        if not complete:
            epoch = min((r.diverged_epoch or r.epochs_run for r in diverged),
                        default=max(r.epochs_run for r in m.results))
            seeds = [r.seed for r in diverged]
            reason = (f"{DIVERGED_PREFIX} at epoch {epoch} (seeds "
                      f"{', '.join(map(str, seeds))})" if diverged else
                      f"{DIVERGED_PREFIX}: objective not finite ({values})")
            trial.set_user_attr("failure_reason", reason)
            trial.set_user_attr("end", {**said, "kind": "diverged", "epoch": epoch,
                                        "seeds": seeds})
            self.study.tell(trial, state=TrialState.FAIL)
            self.stats.add("diverged")
            return
        trial.set_user_attr("end", {**said, "kind": "complete"})
        self.study.tell(trial, values)
        self.stats.add("complete")


# ---------------------------------------------------------------------------------------------
# Several workers, progress, summary


@dataclass
class SweepSummary:
    """The state of a study after a sweep command."""

    study: str
    storage: str
    target: int
    finished: int
    states: dict[str, int]
    best: str
    stats: WorkerStats
    worker_exit_codes: list[int]

    @property
    def ok(self) -> bool:
        """True when every worker exited cleanly with the target reached or in other hands.

        A worker stops asking once finished + running trials cover the target, so with
        several hosts one may end while the last trials still run on another.
        """
        running = self.states.get("RUNNING", 0)
        return self.finished + running >= self.target and not any(self.worker_exit_codes)

    def line(self) -> str:
        """One human line: counts by state and the best trial."""
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()))
        return (f"{self.study}: {self.finished}/{self.target} finished ({states or 'none'}); "
                f"{self.best}; storage {self.storage}")


def describe_best(study: Any, spec: StudySpec) -> str:
    """'best val_accuracy 0.97 (trial 12: lr=0.1, ...)' or the Pareto-front size."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return "no completed trial yet"
    if len(spec.directions) > 1:
        return f"{len(study.best_trials)} trials on the Pareto front of " \
               f"{' vs '.join(spec.objectives)}"
    best = study.best_trial
    params = ", ".join(f"{k}={fmt_param(v)}" for k, v in best.params.items())
    return f"best {spec.objective} {fmt_score(best.value, spec.objective)} (trial " \
           f"{best.number}" + (f": {params})" if params else ")")


class _Progress:
    """tqdm bar of finished trials and the best value; silent when quiet or not a terminal."""

    def __init__(self, spec: StudySpec, study: Any, quiet: bool) -> None:
        self.spec = spec
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=spec.trials, desc=spec.name, unit="trial", leave=True,
                            initial=min(count_finished(study), spec.trials))

    def update(self, study: Any) -> None:
        if self.bar is None:
            return
        self.bar.n = min(count_finished(study), self.spec.trials)
        best = describe_best(study, self.spec)
        self.bar.set_postfix_str(best.split(" (")[0], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def die_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Make this process end when its parent does, however the parent dies (kill -9 included).

    SIGTERM, which a worker turns into an exception that fails its untold trials and exits, is
    sent by the kernel when the parent dies (Linux `PR_SET_PDEATHSIG`); a thread that watches
    the parent pid does the same elsewhere, and covers a parent that died before this call.
    """
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="nnbench-parent-watch").start()


def _raise_terminated(signum: int, frame: Any) -> None:
    del frame
    raise SystemExit(128 + signum)


def _worker_process(spec: StudySpec, storage_url: str | None, index: int, threads: int,
                    engine: str, heartbeat_interval: int, grace_period: int,
                    parent_pid: int) -> None:
    """Entry point of a `--workers N` child process (spawned: nothing inherited)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    Worker(spec, storage_url, worker_index=index, engine=engine,
           heartbeat_interval=heartbeat_interval, grace_period=grace_period).run()


def sweep(spec: StudySpec, storage_url: str | None = None, *, workers: int = 1,
          quiet: bool = False, engine: str = "auto", threads: int = 1, echo: bool = False,
          heartbeat_interval: int = HEARTBEAT_INTERVAL,
          grace_period: int = GRACE_PERIOD) -> SweepSummary:
    """Run (or resume) one study until it has `spec.trials` finished trials.

    `threads` is the torch thread count of each spawned worker (a single worker runs in this
    process with whatever the caller set); `echo` prints the summary line when done.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    check_grid_size(spec)
    check_data(spec, shared=is_shared_storage(storage_url))
    worker = None
    if workers == 1:  # its study serves the progress bar and the summary: one journal replay
        worker = Worker(spec, storage_url, engine=engine, heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period)
        study = worker.study
    else:
        study = open_study(spec, open_storage(storage_url, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period))
    progress = _Progress(spec, study, quiet)
    stats = WorkerStats()
    exit_codes: list[int] = []
    try:
        if worker is not None:
            worker.on_group = progress.update
            stats = worker.run()
        else:
            exit_codes = _run_processes(spec, storage_url, workers, threads, engine,
                                        heartbeat_interval,
                                        grace_period, lambda: progress.update(study))
    finally:
        progress.close()
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        key = t.state.name
        if key == "FAIL" and is_finished(t):
            key = "DIVERGED"
        states[key] = states.get(key, 0) + 1
    summary = SweepSummary(study=spec.name, storage=display_url(storage_url),
                           target=spec.trials, finished=sum(is_finished(t) for t in trials),
                           states=states, best=describe_best(study, spec), stats=stats,
                           worker_exit_codes=exit_codes)
    if echo:
        print(summary.line(), flush=True)
        if workers == 1 and stats.total_seconds > 0:
            print(f"  {stats.split_line()}", flush=True)
    return summary


def _run_processes(spec: StudySpec, storage_url: str | None, workers: int, threads: int,
                   engine: str, heartbeat_interval: int, grace_period: int,
                   poll: Callable[[], None]) -> list[int]:
    """Start `workers` spawned worker processes, poll progress until all exit; exit codes."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, name=f"nnbench-worker-{i}",
                         args=(spec, storage_url, i, threads, engine, heartbeat_interval,
                               grace_period, os.getpid()))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            poll()
            for p in procs:
                p.join(timeout=1.0 / len(procs))
        poll()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [p.exitcode or 0 for p in procs]

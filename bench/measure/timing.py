"""Honest CPU-vs-CUDA training timings, built on the engines' clock (`bench.engines.clock`:
`Stopwatch`, `synchronize`, `record_stopwatches`, `num_threads`).

Layers, smallest first (the shape of `torch.utils.benchmark`):

- `Lap`, `summarize`, `measure`: repeat a timed callable, drop warm-up laps, stop once the kept
  laps reach a minimum total time; report raw samples, median and IQR, flag noisy ones.
- `TimingCase`, `engine_laps`, `measure_case`: one grid cell (task, model or width, batch size,
  engine, K, device, dtype, threads) timed per training epoch through the real engines, which
  the engine registry (`bench.engines.registry`) runs by name. The machine envelope of a
  `bench time` JSON file is `bench.measure.machine`'s.

Nothing here imports optuna, pandas or seaborn: `bench time` must run where only torch, numpy,
scikit-learn and scipy are installed.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.catalog.tasks import TaskData
from bench.engines.clock import Clock, Stopwatch, record_stopwatches
from bench.engines.registry import engine_names, get_engine
from bench.engines.setup import load_data, plan_run
from bench.errors import UsageError
from bench.notebooks.recipes import get_recipe
from bench.spec import RunSpec, resolve_device

NOISY_IQR_OVER_MEDIAN = 0.1
ENGINES = engine_names(include_auto=False)  # the registry's engines ("dataloader" reads as notebook)
# What every timing case trains with: notebook 000's loss and optimizer (its recipe's values).
NOTEBOOK_000_TRAINING = ("loss", "optimizer", "lr", "momentum")
SCHEMA = "nnbench.timing/1"
# Most runs one batched timing cell trains at once: each is a RunSpec and a model in memory, so
# a K of 10^9 would build specs for minutes before anything is timed.
MAX_K = 65536
# Bounds on the other counts a timing run takes, far above any useful value (defaults: 2 epochs
# per call, 1 warm-up, 3 to 50 kept epochs): beyond them a run would go on for days.
MAX_EPOCHS_PER_CALL = 10_000
MAX_LAPS = 100_000  # warm-up and kept epochs, and perf's repeats
MAX_THREADS = 4096


class NoisyTimingWarning(UserWarning):
    """A measurement whose IQR is more than a tenth of its median: its figures are shaky."""


# --- statistics and the repeat loop ------------------------------------------------------------

@dataclass(frozen=True)
class Lap:
    """One measured repeat: synchronised wall seconds, and CUDA-event seconds on a GPU."""

    seconds: float
    cuda_seconds: float | None = None


@dataclass(frozen=True)
class Summary:
    """Median, inter-quartile range and the noise verdict of raw samples."""

    median: float
    iqr: float
    iqr_over_median: float
    noisy: bool


def summarize(samples: Sequence[float], noisy_above: float = NOISY_IQR_OVER_MEDIAN) -> Summary:
    """Median and IQR (linear-interpolated quartiles); noisy when IQR/median > `noisy_above`."""
    if not samples:
        raise ValueError("no samples to summarize")
    xs = np.asarray(samples, dtype=np.float64)
    median = float(np.median(xs))
    q1, q3 = np.percentile(xs, [25.0, 75.0])
    iqr = float(q3 - q1)
    ratio = iqr / median if median > 0 else math.inf
    return Summary(median, iqr, ratio, bool(ratio > noisy_above))


@dataclass(frozen=True)
class Samples:
    """What `measure` kept: the laps after warm-up, how many were dropped, how many calls."""

    laps: tuple[Lap, ...]
    warmup: int
    calls: int

    @property
    def seconds(self) -> list[float]:
        """Wall seconds of the kept laps."""
        return [lap.seconds for lap in self.laps]

    @property
    def cuda_seconds(self) -> list[float] | None:
        """CUDA-event seconds of the kept laps, or None when there are none (CPU)."""
        values = [lap.cuda_seconds for lap in self.laps]
        return None if any(v is None for v in values) else [float(v) for v in values]


def measure(run: Callable[[], Sequence[Lap]], *, warmup: int = 1, min_time: float = 1.0,
            min_repeats: int = 3, max_repeats: int = 100) -> Samples:
    """Call `run` (which returns one or more laps) until enough laps are kept.

    The first `warmup` laps are dropped (they pay for lazy initialisation, allocator growth and
    cold caches). Calls continue until at least `min_repeats` laps are kept and their total is
    at least `min_time` seconds, or `max_repeats` laps are kept.
    """
    if (warmup < 0 or min_repeats < 1 or max_repeats < min_repeats
            or not (math.isfinite(min_time) and min_time >= 0)):
        raise UsageError("need warmup >= 0, 1 <= min_repeats <= max_repeats and a finite "
                         "min_time >= 0; "
                         f"got {warmup}, {min_repeats}, {max_repeats}, {min_time}")
    kept: list[Lap] = []
    dropped = calls = 0
    while True:
        laps = list(run())
        calls += 1
        if not laps:
            raise RuntimeError("the timed callable produced no laps")
        for lap in laps:
            if dropped < warmup:
                dropped += 1
            else:
                kept.append(lap)
        if len(kept) >= max_repeats:
            kept = kept[:max_repeats]
            break
        if len(kept) >= min_repeats and sum(lap.seconds for lap in kept) >= min_time:
            break
    return Samples(tuple(kept), dropped, calls)


def time_call(fn: Callable[[], object], device: str = "cpu",
              clock: Clock = time.perf_counter) -> Lap:
    """One synchronised lap around `fn()` (with CUDA events on a CUDA device)."""
    with record_stopwatches():
        watch = Stopwatch(device, clock)
    with watch.measure():
        fn()
    return Lap(watch.laps[-1], watch.cuda_laps[-1] if watch.cuda_laps else None)


# --- one grid cell ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimingCase:
    """What one timing measures: a training setup on one device with one engine."""

    task: str
    model: str  # a registry model; "mlp" with `width` is the generic two-hidden-layer MLP
    width: int | None
    batch_size: int | None  # None: full batch
    engine: str  # a registry engine: "notebook" (formerly "dataloader"), "reference", "batched"
    k: int  # runs trained together (an engine that stacks runs); 1 otherwise
    device: str
    dtype: str = "float32"
    n_samples: int | None = None  # training-set size of a synthetic task; None: its default

    def spec(self, epochs: int, seed: int = 0) -> RunSpec:
        """The RunSpec of the case's first run: the case's task, model and batch size, trained
        with notebook 000's loss and optimizer (MSE, SGD lr 0.1 momentum 0.9, from its recipe),
        shuffled every epoch (unlike the recipe: the timings have always shuffled)."""
        recipe = get_recipe("moons_bn_mlp").spec
        extra: dict[str, Any] = {f: getattr(recipe, f) for f in NOTEBOOK_000_TRAINING}
        if self.width is not None:
            extra.update(hidden=(self.width, self.width), activation="relu")
        return RunSpec(task=self.task, model=self.model, batch_size=self.batch_size,
                       epochs=epochs, dtype=self.dtype, seed=seed, device=self.device,
                       n_samples=self.n_samples, shuffle=True, engine=get_engine(self.engine).name,
                       **extra)


@dataclass
class CaseTiming:
    """The kept samples of one case and what the JSON file reports about them."""

    case: TimingCase
    n_train: int
    batch_size: int
    threads: int
    epochs_per_call: int
    samples: Samples
    clock: str  # "engine train clock" (per-epoch laps) or "whole call" (per call / epochs)
    summary: Summary = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.samples.seconds)

    def to_dict(self) -> dict[str, Any]:
        """One entry of the JSON file's `measurements` list (schema nnbench.timing/1)."""
        c, s = self.case, self.summary
        cuda = self.samples.cuda_seconds
        return {
            "task": c.task, "model": c.model, "width": c.width, "batch_size": self.batch_size,
            "engine": c.engine, "k": c.k, "device": c.device, "dtype": c.dtype,
            "threads": self.threads, "warmup": self.samples.warmup,
            "repeats": len(self.samples.laps), "epoch_seconds": self.samples.seconds,
            "epoch_seconds_median": s.median, "epoch_seconds_iqr": s.iqr,
            "iqr_over_median": s.iqr_over_median, "noisy": s.noisy,
            "samples_per_second_median": self.n_train * c.k / s.median if s.median > 0
            else None,
            "per_trial_epoch_seconds_median": s.median / c.k,
            "cuda_event_seconds_median": float(np.median(cuda)) if cuda else None,
            "cuda_event_seconds": cuda,
            "n_train": self.n_train, "epochs_per_call": self.epochs_per_call,
            "calls": self.samples.calls, "clock": self.clock,
        }


def engine_laps(engine: str, specs: Sequence[RunSpec], data: TaskData | None
                ) -> tuple[list[Lap], str]:
    """Train `specs` once with `engine` and return its per-epoch training laps.

    An engine that stacks runs trains them all at once; any other trains the first only.

    The laps come from the engine's own training Stopwatch (the watch whose total equals the
    reported `train_seconds`; the first one created otherwise), so model building, evaluation
    and final metrics are not in them. An engine that uses no Stopwatch is timed as a whole
    call divided by its epochs ("whole call").
    """
    chosen = get_engine(engine)
    device = resolve_device(specs[0].device)
    outer = Stopwatch(device)
    with record_stopwatches() as watches, outer.measure():
        results = chosen.train(specs if chosen.stacks else specs[:1], data=data)
    watches = [w for w in watches if w is not outer and w.laps]
    epochs = max(r.epochs_run for r in results)
    if not watches:
        return [Lap(outer.seconds / max(epochs, 1))], "whole call"
    reported = float(results[0].timing.get("train_seconds", math.nan))
    train_watch = next((w for w in watches
                        if any(math.isclose(w.seconds, reported * m, rel_tol=1e-9)
                               for m in (1, len(specs)))), watches[0])
    cuda = train_watch.cuda_laps or [None] * len(train_watch.laps)
    return [Lap(s, c) for s, c in zip(train_watch.laps, cuda, strict=True)], "engine train clock"


def measure_case(case: TimingCase, *, epochs: int, warmup: int, min_time: float,
                 min_repeats: int = 3, max_repeats: int = 50,
                 data: TaskData | None = None) -> CaseTiming:
    """Time one case per training epoch through its engine; warns when the result is noisy."""
    spec = case.spec(epochs)
    if data is None:
        data = load_data(spec, case.device)
    plan = plan_run(spec, data.n_train)
    specs = [spec] + [spec.replace(seed=i) for i in range(1, case.k)]
    clock_kind: list[str] = []

    def run() -> list[Lap]:
        laps, kind = engine_laps(case.engine, specs, data)
        clock_kind.append(kind)
        return laps

    samples = measure(run, warmup=warmup, min_time=min_time, min_repeats=min_repeats,
                      max_repeats=max_repeats)
    timing = CaseTiming(case, data.n_train, plan.batch_size, torch.get_num_threads(), epochs,
                        samples, clock_kind[-1])
    if timing.summary.noisy:
        warnings.warn(f"noisy timing: IQR is {timing.summary.iqr_over_median:.0%} of the median "
                      f"for {describe(case, plan.batch_size)}; rerun on a quieter machine or "
                      "raise --min-time", NoisyTimingWarning, stacklevel=2)
    return timing


def describe(case: TimingCase, batch_size: int | None = None) -> str:
    """A short human label of a case: 'moons mlp w16 bs64 reference cpu'."""
    model = f"mlp w{case.width}" if case.width is not None else case.model
    bs = batch_size if batch_size is not None else (case.batch_size or "full")
    k = f" k{case.k}" if case.k > 1 else ""
    return f"{case.task} {model} bs{bs} {case.engine}{k} {case.device}"


def cuda_crossover(measurements: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU-over-CUDA epoch-time ratios for cases measured on both devices (>1: CUDA pays)."""
    def key(m: dict[str, Any]) -> tuple:
        return (m["task"], m["model"], m["width"], m["batch_size"], m["engine"], m["k"],
                m["dtype"])

    cpu = {key(m): m for m in measurements if m["device"] == "cpu"}
    rows = []
    for m in measurements:
        if m["device"] == "cuda" and key(m) in cpu:
            base = cpu[key(m)]
            rows.append({**{k: m[k] for k in ("task", "model", "width", "batch_size", "engine",
                                               "k")},
                         "cpu_seconds": base["epoch_seconds_median"],
                         "cuda_seconds": m["epoch_seconds_median"],
                         "cuda_speedup": base["epoch_seconds_median"]
                         / m["epoch_seconds_median"]})
    return rows


# --- the envelope ---------------------------------------------------------------------------------



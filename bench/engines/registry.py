"""The engine contract and the registry of engines by name: the one place that dispatches on an
engine's name.

Contract: an engine trains a list of RunSpecs and returns one RunResult per spec, in order,
through `train_specs(specs, *, on_epoch=None, progress=None, data=None, **options)`:

- `on_epoch(report: EpochReport)` is called once per epoch of every run, after the epoch is
  recorded (the same numbers the run's RunResult keeps in its curves). It may return the indices
  (into `specs`) of runs to stop: a stopped run ends after its current epoch (or, when it has not
  started yet, after its first), keeps the metrics of its model at that point and says
  `stopped=True` with `epochs_run` below `spec.epochs`. Diverged runs end by themselves.
- `progress(n)` is called with the number of runs just finished.
- `data` is the specs' task data when the caller has already loaded it (all specs share it).

The names are the vocabulary `RunSpec.engine` accepts (`bench.spec.ENGINES`: the spec sits below
the engines and validates its field at construction, so the names are spelled there and this
table must cover exactly them; `auto` picks one). Old names still read from stored files and
flags map through `ALIASES` ("dataloader" was the notebooks' loop in `bench time`).

Importing this module loads no torch: an engine's module is imported when it first trains.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.catalog import registry as catalog
from bench.catalog.names import lookup
from bench.results import RunResult
from bench.spec import ENGINES as SPEC_ENGINES
from bench.spec import RunSpec, resolve_device

if TYPE_CHECKING:  # annotations only: importing the registry must not load torch
    from bench.catalog.tasks import TaskData

AUTO = "auto"
ALIASES = {"dataloader": "notebook"}  # former names, as old timing files and flags spell them

Progress = Callable[[int], None]  # called with the number of runs just finished


@dataclass(frozen=True)
class EpochReport:
    """One epoch of one run, as every engine reports it to the `on_epoch` hook.

    `run` is the run's index in the list the engine was given; `val` holds the validation
    `loss` and the task's metrics (`accuracy`, or `mse` and `r2`); `diverged` is True when the
    train or validation loss of this epoch is not finite (the run ends here).
    """

    run: int
    epoch: int
    train_loss: float
    val: dict[str, float] = field(default_factory=dict)
    diverged: bool = False


EpochHook = Callable[[EpochReport], Iterable[int] | None]


class Trainer(Protocol):
    """The signature every engine module's `train_specs` has."""

    def __call__(self, specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
                 progress: Progress | None = None, data: TaskData | None = None,
                 **options: Any) -> list[RunResult]: ...


@dataclass(frozen=True)
class Engine:
    """A named engine: where its `train_specs` lives and what it is."""

    name: str
    description: str
    module: str  # imported on first use (engines load torch)
    stacks: bool  # trains many runs as one stacked computation (a group of K is one call)
    stops_runs: str  # how a stop request from the hook is honoured, in words

    def trainer(self) -> Trainer:
        """The engine's `train_specs` function (imports its module)."""
        return importlib.import_module(self.module).train_specs

    def train(self, specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
              progress: Progress | None = None, data: TaskData | None = None,
              **options: Any) -> list[RunResult]:
        """Train every spec with this engine; results in input order (the contract above)."""
        return self.trainer()(list(specs), on_epoch=on_epoch, progress=progress, data=data,
                              **options)


_ENGINES: dict[str, Engine] = {e.name: e for e in [
    Engine("reference", "nn.Module and torch.optim, one run at a time: the readable definition",
           "bench.engines.reference", stacks=False,
           stops_runs="the run ends after the epoch the request came in"),
    Engine("batched", "runs that share a shape trained as one stacked computation (fused C++ "
           "step on the CPU; torch.func for networks given as code)", "bench.engines.batched",
           stacks=True,
           stops_runs="the member leaves the stacked computation after that epoch (the "
                      "group is compacted; the members left train on bit for bit as before, "
                      "to rounding on the torch.func path)"),
    Engine("notebook", "the notebooks' loop: per-item Dataset + DataLoader, .item() every step",
           "bench.engines.notebook", stacks=False,
           stops_runs="the run ends after the epoch the request came in"),
]}
if set(_ENGINES) | {AUTO} != set(SPEC_ENGINES):
    raise RuntimeError(f"engine registry {sorted(_ENGINES)} and RunSpec's engine names "
                       f"{sorted(SPEC_ENGINES)} differ")


def engine_names(include_auto: bool = True) -> tuple[str, ...]:
    """Every engine name a flag or RunSpec accepts (with "auto" unless asked not to)."""
    return (*_ENGINES, AUTO) if include_auto else tuple(_ENGINES)


def canonical_name(name: str) -> str:
    """The current name of an engine, mapping former names (old files say "dataloader")."""
    return ALIASES.get(name, name)


def get_engine(name: str) -> Engine:
    """The engine called `name` (or a former name of it); unknown names are one UsageError
    naming the valid ones."""
    return lookup("engine", _ENGINES, canonical_name(name))


def check_engine_name(name: str, allow_auto: bool = True) -> str:
    """`name` in its current spelling (former names mapped), or a UsageError naming the valid
    names ("auto" among them when `allow_auto`)."""
    names = {n: n for n in engine_names(include_auto=allow_auto)}
    return lookup("engine", names, canonical_name(name))


# What members of one stacked group must share; everything else may differ per member.
GROUP_FIELDS = ("task", "data_seed", "n_samples", "model", "hidden", "activation", "batch_norm",
                "init", "loss", "optimizer", "nesterov", "batch_size", "epochs", "shuffle",
                "dtype", "device")


def group_key(spec: RunSpec) -> tuple:
    """The shape a spec shares with the other members of its stacked group."""
    return (*(getattr(spec, f) for f in GROUP_FIELDS), resolve_device(spec.device))


# `engine = auto` for a model given as code (`ModelDef.factory`): the batched engine's torch.func
# path from this many runs in a group on, by the model's forward multiply-adds per example
# (`module_size`); below, the reference engine. Measured with `bench perf` on this 2-core CPU
# (docs/PERFORMANCE.md, 2026-12-02): relu_mlp_20x3_code (~900 per example) breaks even between
# K=2 and 3, lenet5 on digits (~36,000) at about K=4 (0.85x-1.02x there, 1.13x-1.26x from 6).
AUTO_CODE_MIN_RUNS = ((10_000, 3), (math.inf, 6))  # (multiply-adds below, runs from)


def choose_engine(specs: Sequence[RunSpec], engine: str = AUTO) -> str:
    """The engine that trains `specs`: the named one, or for "auto" the faster one for these
    runs trained as one group: reference for a single run; batched for several runs of a
    layer-list model (the fused or stacked step pays from K=2); for a model given as code,
    batched from `AUTO_CODE_MIN_RUNS` runs on (torch.func's per-step cost pays only over
    enough members), else reference."""
    if engine != AUTO:
        return get_engine(engine).name
    if len(specs) < 2:
        return "reference"
    model = catalog.get_model(specs[0].model)
    if model.factory is None:
        return "batched"
    from bench.catalog.models import module_size  # loads torch
    from bench.engines.network import network_of

    task = catalog.get_task(specs[0].task)
    head = network_of(specs[0])[0]
    macs = module_size(model, task.input_shape, head.n_outputs).multiply_adds
    needed = next(runs for below, runs in AUTO_CODE_MIN_RUNS if macs < below)
    return "batched" if len(specs) >= needed else "reference"


def train_specs(specs: Sequence[RunSpec], engine: str = AUTO, *,
                on_epoch: EpochHook | None = None, progress: Progress | None = None,
                data: TaskData | None = None, **options: Any) -> list[RunResult]:
    """Train every spec with the chosen engine; results in input order. With "auto" the
    choice (`choose_engine`) is made per group of specs that would train together (the
    `group_key`), so a mix of models gets the faster engine for each."""
    if engine != AUTO or len(specs) < 2:
        return get_engine(choose_engine(specs, engine)).train(
            specs, on_epoch=on_epoch, progress=progress, data=data, **options)
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec), []).append(i)
    by_engine: dict[str, list[int]] = {}
    for indices in groups.values():
        name = choose_engine([specs[i] for i in indices])
        by_engine.setdefault(name, []).extend(indices)
    if len(by_engine) == 1:
        return get_engine(next(iter(by_engine))).train(
            specs, on_epoch=on_epoch, progress=progress, data=data, **options)
    results: list[RunResult | None] = [None] * len(specs)
    pending: list[int] = []  # stop requests from the hook (see `relay`)
    for name, indices in by_engine.items():
        indices.sort()
        trained = get_engine(name).train([specs[i] for i in indices],
                                         on_epoch=relay(on_epoch, indices, pending),
                                         progress=progress, data=data, **options)
        for i, result in zip(indices, trained, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def relay(on_epoch: EpochHook | None, indices: Sequence[int],
          pending: list[int]) -> EpochHook | None:
    """A hook for a sub-list of runs (`indices[j]` is local run j's index in the caller's list)
    that reports to `on_epoch` with the caller's indices and appends the stop requests it
    returns to `pending`, shared across the sub-lists; it answers with the local runs among
    the requests it has not yet answered with (a stop request is sticky in `Ledger`, so each
    is passed on once and a call costs in proportion to the new requests, not to all)."""
    if on_epoch is None:
        return None
    local = {g: j for j, g in enumerate(indices)}
    seen = 0  # pending[:seen] were passed on already

    def hook(report: EpochReport) -> list[int]:
        nonlocal seen
        outer = EpochReport(indices[report.run], report.epoch, report.train_loss, report.val,
                            report.diverged)
        pending.extend(int(j) for j in on_epoch(outer) or ())
        new, seen = pending[seen:], len(pending)
        return [local[g] for g in new if g in local]

    done = getattr(on_epoch, "epoch_done", None)  # `Ledger.newly_ended` calls it through us
    if done is not None:
        hook.epoch_done = done  # type: ignore[attr-defined]
    return hook

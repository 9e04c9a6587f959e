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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.catalog.names import lookup
from bench.results import RunResult
from bench.spec import ENGINES as SPEC_ENGINES
from bench.spec import RunSpec

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


def choose_engine(specs: Sequence[RunSpec], engine: str = AUTO) -> str:
    """The engine that trains `specs`: the named one, or for "auto" batched when there is more
    than one run (stacking pays), else reference."""
    if engine == AUTO:
        return "batched" if len(specs) > 1 else "reference"
    return get_engine(engine).name


def train_specs(specs: Sequence[RunSpec], engine: str = AUTO, *,
                on_epoch: EpochHook | None = None, progress: Progress | None = None,
                data: TaskData | None = None, **options: Any) -> list[RunResult]:
    """Train every spec with the chosen engine (see `choose_engine`); results in input order."""
    return get_engine(choose_engine(specs, engine)).train(
        specs, on_epoch=on_epoch, progress=progress, data=data, **options)

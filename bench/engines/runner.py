"""`run_specs`: the name the sweeps, `bench run` and `bench reproduce` have trained through; a thin
wrapper over the engine registry (`bench.engines.registry.train_specs`), which chooses the engine."""

from __future__ import annotations

from collections.abc import Sequence

from bench.engines.registry import AUTO, EpochHook, Progress, choose_engine, train_specs
from bench.results import RunResult
from bench.spec import RunSpec

__all__ = ["Progress", "choose_engine", "run_specs"]


def run_specs(specs: Sequence[RunSpec], engine: str = AUTO, progress: Progress | None = None,
              on_epoch: EpochHook | None = None) -> list[RunResult]:
    """Train every spec with `engine` ("auto": batched for more than one run) and return results
    in the same order; `on_epoch` is the engines' per-epoch hook."""
    return train_specs(specs, engine, progress=progress, on_epoch=on_epoch)

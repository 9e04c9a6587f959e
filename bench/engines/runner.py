"""Run many RunSpecs with the right engine: the one place that chooses reference vs batched."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.errors import UsageError
from bench.results import RunResult
from bench.spec import RunSpec

Progress = Callable[[int], None]  # called with the number of runs just finished


def choose_engine(specs: Sequence[RunSpec], engine: str = "auto") -> str:
    """'reference' or 'batched': auto picks batched when there is more than one run."""
    if engine not in ("auto", "reference", "batched"):
        raise UsageError(f"unknown engine {engine!r}; choose reference, batched or auto")
    if engine != "auto":
        return engine
    return "batched" if len(specs) > 1 else "reference"


def run_specs(specs: Sequence[RunSpec], engine: str = "auto",
              progress: Progress | None = None) -> list[RunResult]:
    """Train every spec and return results in the same order."""
    chosen = choose_engine(specs, engine)
    if chosen == "batched":
        from bench.engines.batched import train_many

        return train_many(list(specs), progress=progress)
    from bench.engines.reference import train

    results = []
    for spec in specs:
        results.append(train(spec))
        if progress is not None:
            progress(1)
    return results

"""The per-epoch bookkeeping every engine shares: curves, the divergence verdict, time to
target, the `on_epoch` hook and its stop requests, and the RunResult of each run.

An engine trains; after each epoch it hands each live run's train loss and validation scores to
`Ledger.record`, asks `Ledger.newly_ended` which runs end now (diverged: the train or the
validation loss is not finite; or stopped by the hook), and at the end builds each RunResult with
`Ledger.result`. So the rules are written once and every engine applies the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.engines.registry import EpochHook, EpochReport
from bench.results import RunResult, metric_names, reached
from bench.spec import RunSpec


def empty_curves(kind: str) -> dict[str, list[float]]:
    """Per-epoch curves a run records: train and validation loss, validation metrics."""
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    curves.update({f"val_{m}": [] for m in metric_names(kind)})
    return curves


def final_metric_keys(kind: str) -> list[str]:
    """The final metrics a run reports: train / val / test of each metric, and val_loss."""
    names = metric_names(kind)
    return [f"{split}_{m}" for split in ("train", "val", "test") for m in names] + ["val_loss"]


class Ledger:
    """The record of a list of runs trained together (one run for the reference engine).

    Indices are positions in `specs`. `on_epoch` sees every recorded epoch; the indices it
    returns are stopped after their current epoch (runs not yet recorded this epoch finish it).
    """

    def __init__(self, specs: Sequence[RunSpec], kind: str, metric: str,
                 on_epoch: EpochHook | None = None) -> None:
        self.specs, self.kind, self.metric, self.on_epoch = list(specs), kind, metric, on_epoch
        k = len(self.specs)
        self.curves = [empty_curves(kind) for _ in range(k)]
        self.epochs_run = [0] * k
        self.diverged_epoch: list[int | None] = [None] * k
        self.time_to_target: list[dict[str, float] | None] = [None] * k
        self.stopped = [False] * k
        self._ended = [False] * k
        self._stop_requested = [False] * k

    def alive(self, i: int) -> bool:
        """Whether run i still trains (neither diverged nor stopped)."""
        return not self._ended[i]

    def any_alive(self) -> bool:
        """Whether any run still trains."""
        return not all(self._ended)

    def diverged(self, i: int) -> bool:
        """Whether run i diverged."""
        return self.diverged_epoch[i] is not None

    def record(self, i: int, epoch: int, train_loss: float, val: Mapping[str, float],
               train_seconds: float) -> None:
        """Record epoch `epoch` of run i: its mean train loss, validation `loss` and metrics,
        and the run's training seconds so far (for time to target); then call the hook."""
        c = self.curves[i]
        c["train_loss"].append(train_loss)
        c["val_loss"].append(val["loss"])
        for m in metric_names(self.kind):
            c[f"val_{m}"].append(val[m])
        self.epochs_run[i] = epoch
        diverged = not (math.isfinite(train_loss) and math.isfinite(val["loss"]))
        if diverged:
            self.diverged_epoch[i] = epoch
        else:
            target = self.specs[i].target
            if (target is not None and self.time_to_target[i] is None
                    and reached(val[self.metric], target, self.metric)):
                self.time_to_target[i] = {"epoch": epoch, "seconds": train_seconds}
        if self.on_epoch is not None:
            report = EpochReport(i, epoch, train_loss, dict(val), diverged)
            for j in self.on_epoch(report) or ():
                if 0 <= int(j) < len(self.specs):
                    self._stop_requested[int(j)] = True

    def newly_ended(self) -> list[int]:
        """Runs that end now: diverged at their last recorded epoch, or asked to stop (and
        recorded at least one epoch). Each is returned once.

        Engines ask this after each epoch's records, so it first tells a hook object that
        has an `epoch_done()` method that the burst of records is over (the sweep's pruning
        hook writes a burst's reports under one storage lock)."""
        done = getattr(self.on_epoch, "epoch_done", None)
        if done is not None:
            done()
        out = []
        for i in range(len(self.specs)):
            if self._ended[i] or self.epochs_run[i] == 0:
                continue
            if self.diverged_epoch[i] is not None or self._stop_requested[i]:
                self._ended[i] = True
                self.stopped[i] = self.diverged_epoch[i] is None
                out.append(i)
        return out

    def result(self, i: int, *, metrics: Mapping[str, float], train_seconds: float,
               eval_seconds: float, n_train: int, engine: str, **extra: Any) -> RunResult:
        """Run i's RunResult; its final metrics are all NaN when it diverged (the curves stop at
        the epoch it diverged). `extra` passes step_losses and params through."""
        if self.diverged(i):
            metrics = dict.fromkeys(metrics, math.nan)
        epochs = self.epochs_run[i]
        return RunResult(
            spec=self.specs[i],
            metrics=dict(metrics),
            curves=self.curves[i],
            timing={"train_seconds": train_seconds, "eval_seconds": eval_seconds,
                    "samples_per_second": epochs * n_train / train_seconds
                    if train_seconds > 0 else math.nan},
            diverged=self.diverged(i),
            diverged_epoch=self.diverged_epoch[i],
            epochs_run=epochs,
            time_to_target=self.time_to_target[i],
            engine=engine,
            stopped=self.stopped[i],
            **extra,
        )


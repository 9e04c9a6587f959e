"""The notebooks' way of training, kept as a speed baseline: per-item Dataset + DataLoader.

Notebook 000 wraps its tensors in a `Dataset` whose `__getitem__` returns one example, lets a
`DataLoader` collate mini-batches, and calls `.item()` on the loss every step. Same model,
loss, optimizer and initial weights as the reference engine; only the data path and the
per-step host sync differ, which is exactly what the speed comparisons measure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from bench.catalog import registry
from bench.catalog.tasks import TaskData
from bench.engines.bookkeeping import Ledger
from bench.engines.clock import Stopwatch
from bench.engines.registry import EpochHook, Progress, relay
from bench.engines.setup import evaluate, l1_penalty, prepare_run, shuffle_generator
from bench.results import RunResult
from bench.spec import RunSpec


class ItemDataset(Dataset):
    """One (x, y) pair per `__getitem__`, as the notebooks write it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


def train_specs(specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
                progress: Progress | None = None, data: TaskData | None = None) -> list[RunResult]:
    """The engine contract (`bench.engines.registry`): train each spec in turn like the
    notebooks."""
    pending: list[int] = []
    results = []
    for i, spec in enumerate(specs):
        results.append(train_with_dataloader(spec, data, on_epoch=relay(on_epoch, [i], pending)))
        if progress is not None:
            progress(1)
    return results


def train_with_dataloader(spec: RunSpec, data: TaskData | None = None, *,
                          on_epoch: EpochHook | None = None) -> RunResult:
    """Train like the notebooks (DataLoader over a per-item Dataset, `.item()` every step).

    The epoch bookkeeping is every engine's (`bench.engines.bookkeeping`): a run diverges when
    its train or validation loss is not finite, and `on_epoch` may stop it."""
    run = prepare_run(spec, data)
    data, plan, model, optimizer, params = run.data, run.plan, run.model, run.optimizer, run.params
    device, kind = plan.device, data.task.kind
    loss_fn = registry.get_loss(spec.loss).fn
    loader = DataLoader(ItemDataset(data.x_train, run.targets), batch_size=plan.batch_size,
                        shuffle=spec.shuffle, generator=shuffle_generator(spec.seed))
    metric = data.task.default_metric
    ledger = Ledger([spec], kind, metric, on_epoch)
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    for epoch in range(1, spec.epochs + 1):
        with train_clock.measure():
            running = 0.0
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb, plan.head)
                total = loss + spec.l1 * l1_penalty(params) if spec.l1 else loss
                total.backward()
                optimizer.step()
                running += loss.item()
        with eval_clock.measure():
            val = evaluate(model, data.x_val, data.y_val, plan.head, spec.loss, kind)
        ledger.record(0, epoch, running / len(loader), val, train_clock.seconds)
        if ledger.newly_ended():
            break
    # The notebooks report the last epoch's validation figures only.
    return ledger.result(0, metrics={f"val_{metric}": val[metric], "val_loss": val["loss"]},
                         train_seconds=train_clock.seconds, eval_seconds=eval_clock.seconds,
                         n_train=data.n_train, engine="notebook")

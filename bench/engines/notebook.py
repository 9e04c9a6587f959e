"""The notebooks' way of training, kept as a speed baseline: per-item Dataset + DataLoader.

Notebook 000 wraps its tensors in a `Dataset` whose `__getitem__` returns one example, lets a
`DataLoader` collate mini-batches, and calls `.item()` on the loss every step. Same model,
loss, optimizer and initial weights as the reference engine; only the data path and the
per-step host sync differ, which is exactly what the speed comparisons measure.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset

from bench.catalog import registry
from bench.catalog.tasks import TaskData
from bench.engines.clock import Stopwatch
from bench.engines.setup import empty_curves, evaluate, l1_penalty, prepare_run, shuffle_generator
from bench.results import RunResult, metric_names
from bench.spec import RunSpec


class ItemDataset(Dataset):
    """One (x, y) pair per `__getitem__`, as the notebooks write it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


def train_with_dataloader(spec: RunSpec, data: TaskData | None = None) -> RunResult:
    """Train like the notebooks (DataLoader over a per-item Dataset, `.item()` every step)."""
    run = prepare_run(spec, data)
    data, plan, model, optimizer, params = run.data, run.plan, run.model, run.optimizer, run.params
    device, kind = plan.device, data.task.kind
    loss_fn = registry.get_loss(spec.loss).fn
    loader = DataLoader(ItemDataset(data.x_train, run.targets), batch_size=plan.batch_size,
                        shuffle=spec.shuffle, generator=shuffle_generator(spec.seed))
    curves = empty_curves(kind)
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    diverged_epoch = None
    epochs_run = 0
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
        epochs_run = epoch
        with eval_clock.measure():
            val = evaluate(model, data.x_val, data.y_val, plan.head, spec.loss, kind)
        curves["train_loss"].append(running / len(loader))
        curves["val_loss"].append(val["loss"])
        for m in metric_names(kind):
            curves[f"val_{m}"].append(val[m])
        if not math.isfinite(curves["train_loss"][-1]):
            diverged_epoch = epoch
            break
    metric = data.task.default_metric
    return RunResult(
        spec=spec,
        metrics={f"val_{metric}": curves[f"val_{metric}"][-1], "val_loss": curves["val_loss"][-1]},
        curves=curves,
        timing={"train_seconds": train_clock.seconds, "eval_seconds": eval_clock.seconds,
                "samples_per_second": epochs_run * data.n_train / train_clock.seconds},
        diverged=diverged_epoch is not None,
        diverged_epoch=diverged_epoch,
        epochs_run=epochs_run,
        engine="notebook",
    )

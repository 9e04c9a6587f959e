"""The reference engine: one RunSpec in, one RunResult out, with `nn.Module` and `torch.optim`.

This is the readable definition of what a run means. The batched engine must compute the same
thing (tested step by step in float64) and the speed benchmarks measure against this loop.
Data stays on the device; mini-batches are index slices of preloaded tensors, never a per-item
Dataset/DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.catalog import registry
from bench.catalog.models import Head
from bench.catalog.tasks import TaskData
from bench.engines.bookkeeping import Ledger, final_metric_keys
from bench.engines.clock import Stopwatch
from bench.engines.registry import EpochHook, Progress, relay
from bench.engines.setup import evaluate, l1_penalty, prepare_run, shuffle_generator
from bench.results import RunResult, metric_names
from bench.spec import RunSpec


def train_specs(specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
                progress: Progress | None = None, data: TaskData | None = None,
                record_steps: bool = False, keep_params: bool = False) -> list[RunResult]:
    """The engine contract (`bench.engines.registry`): train each spec in turn with `train`."""
    pending: list[int] = []
    results = []
    for i, spec in enumerate(specs):
        results.append(train(spec, data, record_steps=record_steps, keep_params=keep_params,
                             on_epoch=relay(on_epoch, [i], pending)))
        if progress is not None:
            progress(1)
    return results


def train(spec: RunSpec, data: TaskData | None = None, *, record_steps: bool = False,
          keep_params: bool = False, on_epoch: EpochHook | None = None) -> RunResult:
    """Train one model as `spec` says and measure it; the readable reference loop.

    `on_epoch` sees each epoch as run 0 and may stop it (see `bench.engines.registry`)."""
    run = prepare_run(spec, data)
    data, plan, model, optimizer = run.data, run.plan, run.model, run.optimizer
    device, kind, params = plan.device, data.task.kind, run.params
    loss_fn = registry.get_loss(spec.loss).fn
    x, y = data.x_train, run.targets
    n, bs = data.n_train, plan.batch_size
    gen = shuffle_generator(spec.seed)

    ledger = Ledger([spec], kind, data.task.default_metric, on_epoch)
    step_losses: list[torch.Tensor] = []
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)

    for epoch in range(1, spec.epochs + 1):
        # Forward, backward, update over one epoch of on-device mini-batches.
        with train_clock.measure():
            order = torch.randperm(n, generator=gen).to(device) if spec.shuffle else None
            loss_sum = torch.zeros((), device=device, dtype=plan.dtype)
            n_batches = 0
            for start in range(0, n, bs):
                idx = order[start:start + bs] if order is not None else slice(start, start + bs)
                data_loss = loss_fn(model(x[idx]), y[idx], plan.head)
                total = data_loss + spec.l1 * l1_penalty(params) if spec.l1 else data_loss
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                loss_sum += data_loss.detach()
                n_batches += 1
                if record_steps:
                    step_losses.append(data_loss.detach().clone())
            train_loss = float(loss_sum) / n_batches  # one host sync per epoch

        # Validation, timed apart from training.
        with eval_clock.measure():
            val = evaluate(model, data.x_val, data.y_val, plan.head, spec.loss, kind)
        ledger.record(0, epoch, train_loss, val, train_clock.seconds)
        if ledger.newly_ended():
            break

    metrics = (dict.fromkeys(final_metric_keys(kind)) if ledger.diverged(0)
               else _final_metrics(model, data, plan.head, spec.loss, kind, val))
    return ledger.result(
        0, metrics=metrics, train_seconds=train_clock.seconds, eval_seconds=eval_clock.seconds,
        n_train=n, engine="reference",
        step_losses=[float(v) for v in step_losses] if record_steps else None,
        params={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if keep_params else None)


def _final_metrics(model: torch.nn.Module, data: TaskData, head: Head, loss: str, kind: str,
                   last_val: dict[str, float]) -> dict[str, float]:
    """Final train / val / test metrics of a run that did not diverge.

    Validation reuses the last epoch's evaluation (same parameters, same numbers)."""
    names = metric_names(kind)
    scores = {"train": evaluate(model, data.x_train, data.y_train, head, loss, kind),
              "val": last_val,
              "test": evaluate(model, data.x_test, data.y_test, head, loss, kind)}
    out = {f"{split}_{m}": scores[split][m] for split in scores for m in names}
    out["val_loss"] = last_val["loss"]
    return out



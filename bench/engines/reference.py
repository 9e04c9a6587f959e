"""The reference engine: one RunSpec in, one RunResult out, with `nn.Module` and `torch.optim`.

This is the readable definition of what a run means. The batched engine must compute the same
thing (tested step by step in float64) and the speed benchmarks measure against this loop.
Data stays on the device; mini-batches are index slices of preloaded tensors, never a per-item
Dataset/DataLoader.
"""

from __future__ import annotations

import math

import torch

from bench.catalog import registry
from bench.catalog.models import Head
from bench.catalog.tasks import TaskData
from bench.engines.clock import Stopwatch
from bench.engines.setup import empty_curves, evaluate, l1_penalty, prepare_run, shuffle_generator
from bench.results import RunResult, metric_names, reached
from bench.spec import RunSpec


def train(spec: RunSpec, data: TaskData | None = None, *, record_steps: bool = False,
          keep_params: bool = False) -> RunResult:
    """Train one model as `spec` says and measure it; the readable reference loop."""
    run = prepare_run(spec, data)
    data, plan, model, optimizer = run.data, run.plan, run.model, run.optimizer
    device, kind, params = plan.device, data.task.kind, run.params
    loss_fn = registry.get_loss(spec.loss).fn
    metric = data.task.default_metric
    x, y = data.x_train, run.targets
    n, bs = data.n_train, plan.batch_size
    gen = shuffle_generator(spec.seed)

    curves = empty_curves(kind)
    step_losses: list[torch.Tensor] = []
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    diverged_epoch: int | None = None
    time_to_target: dict[str, float] | None = None
    epochs_run = 0

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
        epochs_run = epoch

        # Validation, timed apart from training.
        with eval_clock.measure():
            val = evaluate(model, data.x_val, data.y_val, plan.head, spec.loss, kind)
        curves["train_loss"].append(train_loss)
        curves["val_loss"].append(val["loss"])
        for m in metric_names(kind):
            curves[f"val_{m}"].append(val[m])
        if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
            diverged_epoch = epoch
            break
        if (spec.target is not None and time_to_target is None
                and reached(val[metric], spec.target, metric)):
            time_to_target = {"epoch": epoch, "seconds": train_clock.seconds}

    metrics = _final_metrics(model, data, plan.head, spec.loss, kind, diverged_epoch, val)
    return RunResult(
        spec=spec,
        metrics=metrics,
        curves=curves,
        timing={
            "train_seconds": train_clock.seconds,
            "eval_seconds": eval_clock.seconds,
            "samples_per_second": epochs_run * n / train_clock.seconds
            if train_clock.seconds > 0 else math.nan,
        },
        diverged=diverged_epoch is not None,
        diverged_epoch=diverged_epoch,
        epochs_run=epochs_run,
        time_to_target=time_to_target,
        engine="reference",
        step_losses=[float(v) for v in step_losses] if record_steps else None,
        params={k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if keep_params else None,
    )


def _final_metrics(model: torch.nn.Module, data: TaskData, head: Head, loss: str, kind: str,
                   diverged_epoch: int | None, last_val: dict[str, float]) -> dict[str, float]:
    """Final train / val / test metrics; all NaN for a diverged run.

    Validation reuses the last epoch's evaluation (same parameters, same numbers)."""
    names = metric_names(kind)
    keys = [f"{split}_{m}" for split in ("train", "val", "test") for m in names] + ["val_loss"]
    if diverged_epoch is not None:
        return dict.fromkeys(keys, math.nan)
    scores = {"train": evaluate(model, data.x_train, data.y_train, head, loss, kind),
              "val": last_val,
              "test": evaluate(model, data.x_test, data.y_test, head, loss, kind)}
    out = {f"{split}_{m}": scores[split][m] for split in scores for m in names}
    out["val_loss"] = last_val["loss"]
    return out



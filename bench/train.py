"""The reference engine: one RunSpec in, one RunResult out, with `nn.Module` and `torch.optim`.

This is the readable definition of what a run means. The batched engine must compute the same
thing (tested step by step in float64) and the speed benchmarks measure against this loop.
Data stays on the device; mini-batches are index slices of preloaded tensors, never a per-item
Dataset/DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench import registry
from bench.errors import UsageError
from bench.losses import apply_head, encode_targets, predict_classes, regression_scores
from bench.models import Architecture, BatchNorm, Head, architecture, build_module, initial_state
from bench.models import output_head as _output_head
from bench.results import RunResult, metric_names, reached
from bench.spec import RunSpec, resolve_device
from bench.tasks import TaskData, load_task
from bench.timing import Stopwatch


@dataclass(frozen=True)
class Plan:
    """What a spec resolves to on given data: head, layers, batch size, device, dtype."""

    head: Head
    arch: Architecture
    batch_size: int
    device: str
    dtype: torch.dtype


def output_head(spec: RunSpec) -> Head:
    """The output activation and width for a spec's task, loss and model."""
    task = registry.get_task(spec.task)
    return _output_head(registry.get_model(spec.model), task.kind, task.n_classes, spec.loss)


def plan_run(spec: RunSpec, n_train: int) -> Plan:
    """Resolve a spec against its training-set size; impossible combinations are UsageErrors."""
    task = registry.get_task(spec.task)
    head = output_head(spec)
    arch = architecture(registry.get_model(spec.model), task.input_dim, head,
                        hidden=spec.hidden, activation=spec.activation,
                        batch_norm=spec.batch_norm)
    batch_size = spec.batch_size or n_train
    if batch_size > n_train:
        raise UsageError(f"batch size {batch_size} is above the training set of {spec.task} "
                         f"({n_train} examples); use --batch-size {n_train} or less")
    if any(isinstance(layer, BatchNorm) for layer in arch) and n_train % batch_size == 1:
        raise UsageError(f"batch size {batch_size} leaves a last batch of 1 example of "
                         f"{n_train}, which batch norm cannot normalise; choose another size")
    return Plan(head, arch, batch_size, resolve_device(spec.device), spec.torch_dtype)


def load_data(spec: RunSpec, device: str) -> TaskData:
    """The spec's task data on `device` in the spec's dtype."""
    return load_task(spec.task, data_seed=spec.data_seed, n_samples=spec.n_samples,
                     device=device, dtype=spec.torch_dtype)


def shuffle_generator(seed: int) -> torch.Generator:
    """CPU generator for a run's shuffle order, independent of its weight-init stream."""
    state = int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])
    return torch.Generator().manual_seed(state)


def l1_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """sum |p| over all trainable parameters (multiplied by lambda by the caller)."""
    return torch.stack([p.abs().sum() for p in params]).sum()


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, head: Head,
             loss_name: str, kind: str) -> dict[str, float]:
    """Loss and metrics of `model` on one split, in eval mode (BN uses running statistics)."""
    loss_fn = registry.get_loss(loss_name).fn
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = loss_fn(out, encode_targets(y, head, loss_name, out.dtype), head)
        scores = {"loss": loss}
        if kind == "regression":
            scores["mse"], scores["r2"] = regression_scores(out, y)
        else:
            scores["accuracy"] = (predict_classes(out, head) == y).to(out.dtype).mean()
    model.train()
    return {k: float(v) for k, v in scores.items()}


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to train: its data on the device, plan, initialised model and optimizer."""

    data: TaskData
    plan: Plan
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    targets: torch.Tensor  # training targets encoded for the loss


def prepare_run(spec: RunSpec, data: TaskData | None = None) -> PreparedRun:
    """Load data, resolve the plan, build the model from its seeded initial state, make the
    optimizer: the set-up every single-model loop shares."""
    device = resolve_device(spec.device)
    data = load_data(spec, device) if data is None else data.to(device, spec.torch_dtype)
    plan = plan_run(spec, data.n_train)
    model = build_module(plan.arch).to(device=device, dtype=plan.dtype)
    model.load_state_dict(initial_state(plan.arch, init=spec.init, init_scale=spec.init_scale,
                                        seed=spec.seed, dtype=plan.dtype))
    params = list(model.parameters())
    optimizer = registry.get_optimizer(spec.optimizer).build(params, spec)
    targets = encode_targets(data.y_train, plan.head, spec.loss, plan.dtype)
    return PreparedRun(data, plan, model, params, optimizer, targets)


def empty_curves(kind: str) -> dict[str, list[float]]:
    """Per-epoch curves a run records: train and validation loss, validation metrics."""
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    curves.update({f"val_{m}": [] for m in metric_names(kind)})
    return curves


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


def predict(model: torch.nn.Module, x: torch.Tensor, head: Head) -> torch.Tensor:
    """Head outputs (probabilities, tanh values or regression values) in eval mode."""
    model.eval()
    with torch.no_grad():
        return apply_head(model(x), head)

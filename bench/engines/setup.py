"""What every engine shares: a spec's data, its plan (head, layers, batch size), its seeded
model and optimizer, and evaluation (the per-epoch record is `bookkeeping`'s)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.catalog import registry
from bench.catalog.losses import apply_head, encode_targets, predict_classes, regression_scores
from bench.catalog.models import (
    Architecture,
    BatchNorm,
    Head,
    ModelDef,
    build_module,
    factory_module,
    initial_state,
    module_size,
    parameter_count,
)
from bench.catalog.tasks import TaskData, load_task
from bench.engines.network import network_of
from bench.errors import UsageError
from bench.results import metric_names
from bench.spec import RunSpec, resolve_device


@dataclass(frozen=True)
class Plan:
    """What a spec resolves to on given data: head, layers, batch size, device, dtype.

    `arch` is the layer list of a layer-list model, None for a model given as code
    (`ModelDef.factory`), which `build_model` builds from `model`."""

    head: Head
    arch: Architecture | None
    batch_size: int
    device: str
    dtype: torch.dtype
    model: ModelDef | None = None
    input_shape: tuple[int, ...] = ()

    @property
    def parameters(self) -> int:
        """Trainable parameters of the planned network, whichever way it is given."""
        if self.arch is not None:
            return parameter_count(self.arch)
        assert self.model is not None
        return module_size(self.model, self.input_shape, self.head.n_outputs).parameters


def plan_run(spec: RunSpec, n_train: int) -> Plan:
    """Resolve a spec against its training-set size; impossible combinations are UsageErrors."""
    task = registry.get_task(spec.task)
    head, arch, model = network_of(spec)
    batch_size = spec.batch_size or n_train
    if batch_size > n_train:
        raise UsageError(f"batch size {batch_size} is above the training set of {spec.task} "
                         f"({n_train} examples); use --batch-size {n_train} or less")
    if n_train % batch_size == 1 and (
            any(isinstance(layer, BatchNorm) for layer in arch) if arch is not None
            else has_batch_norm(factory_module(model, task.input_shape, head.n_outputs, seed=0,
                                               dtype=spec.torch_dtype))):
        raise UsageError(f"batch size {batch_size} leaves a last batch of 1 example of "
                         f"{n_train}, which batch norm cannot normalise; choose another size")
    return Plan(head, arch, batch_size, resolve_device(spec.device), spec.torch_dtype, model,
                tuple(task.input_shape))


def has_batch_norm(module: torch.nn.Module) -> bool:
    """Whether a module holds a batch-norm layer (its training batches need 2+ examples)."""
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    return any(isinstance(m, kinds) for m in module.modules())


def build_model(spec: RunSpec, plan: Plan) -> torch.nn.Module:
    """The spec's module with its seeded initial weights, on the plan's device and dtype: the
    layer list built and loaded from `initial_state`, or the factory's module built under the
    seed (`factory_module`)."""
    if plan.arch is None:
        assert plan.model is not None
        return factory_module(plan.model, plan.input_shape, plan.head.n_outputs, seed=spec.seed,
                              init_scale=spec.init_scale, dtype=plan.dtype, device=plan.device)
    model = build_module(plan.arch).to(device=plan.device, dtype=plan.dtype)
    model.load_state_dict(initial_state(plan.arch, init=spec.init, init_scale=spec.init_scale,
                                        seed=spec.seed, dtype=plan.dtype))
    return model



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
    model = build_model(spec, plan)
    params = list(model.parameters())
    optimizer = registry.get_optimizer(spec.optimizer).build(params, spec)
    targets = encode_targets(data.y_train, plan.head, spec.loss, plan.dtype)
    return PreparedRun(data, plan, model, params, optimizer, targets)



def predict(model: torch.nn.Module, x: torch.Tensor, head: Head) -> torch.Tensor:
    """Head outputs (probabilities, tanh values or regression values) in eval mode."""
    model.eval()
    with torch.no_grad():
        return apply_head(model(x), head)


def final_metric_table(evaluate: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                       data: TaskData, kind: str,
                       val: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Final train / val / test metrics of K stacked members, each key a list over members (one
    host sync). `evaluate(x, y)` scores every member on a split ([K] tensors); `val` is the
    last epoch's validation evaluation of these very parameters, reused, not recomputed."""
    keys: list[str] = []
    values: list[torch.Tensor] = []
    for split, xs, ys in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        scores = val if split == "val" else evaluate(xs, ys)
        for m in metric_names(kind):
            keys.append(f"{split}_{m}")
            values.append(scores[m])
        if split == "val":
            keys.append("val_loss")
            values.append(scores["loss"])
    return dict(zip(keys, torch.stack(values).tolist(), strict=True))

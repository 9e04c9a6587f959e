"""`RunSpec`: one training run, fully described by plain values and validated at construction.

A RunSpec is frozen and hashable, so runs can be grouped, cached and compared by value. Names
(task, model, loss, optimizer, init, activation) are checked against the registry; numbers are
checked for the values that make no sense (lr <= 0, batch size 0, hidden size 0). Checks that
need the loaded data (batch size above the training set) live in `check_against_task`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from bench.errors import UsageError

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda", "auto")
ENGINES = ("reference", "batched", "auto")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("default", "xavier_uniform", "normal")


def _check_choice(field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {field_name} {value!r}; choose one of: {', '.join(choices)}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run (together with its seed)."""

    task: str = "moons"
    model: str = "mlp"
    hidden: tuple[int, ...] = (20, 20, 20)
    activation: str = "relu"
    batch_norm: bool = False
    init: str = "default"
    init_scale: float = 1.0
    loss: str = "mse"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    l1: float = 0.0
    batch_size: int | None = None  # None: full batch (gradient descent)
    epochs: int = 10
    shuffle: bool = True
    dtype: str = "float32"
    seed: int = 0
    data_seed: int = 0
    n_samples: int | None = None  # synthetic tasks only; None: the task's default size
    device: str = "cpu"
    engine: str = "auto"
    target: float | None = None  # validation-metric target for time-to-target

    def __post_init__(self) -> None:
        from bench import registry  # late import: the registry imports models, which import spec

        registry.get_task(self.task)
        registry.get_model(self.model)
        registry.get_loss(self.loss)
        registry.get_optimizer(self.optimizer)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("init", self.init, INITS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("engine", self.engine, ENGINES)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if any(h <= 0 for h in self.hidden):
            raise UsageError(f"hidden sizes must be positive integers, got {self.hidden}; "
                             "use e.g. --hidden 20,20")
        _positive("lr", self.lr, "--lr 0.1")
        _positive("epochs", self.epochs, "--epochs 10")
        _positive("init_scale", self.init_scale, "--init-scale 1.0")
        _positive("eps", self.eps, "--eps 1e-8")
        if self.batch_size is not None and self.batch_size <= 0:
            raise UsageError(f"batch size must be positive, got {self.batch_size}; "
                             "use --batch-size N or 'full' for full-batch gradient descent")
        if self.n_samples is not None and self.n_samples < 10:
            raise UsageError(f"n_samples must be at least 10, got {self.n_samples}")
        for name in ("momentum", "weight_decay", "l1"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{name} must be >= 0, got {value}")
        if self.momentum >= 1:
            raise UsageError(f"momentum must be below 1, got {self.momentum}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UsageError(f"betas must be two numbers in [0, 1), got {self.betas}; "
                             "use e.g. --betas 0.9,0.999")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise UsageError("nesterov needs --optimizer sgd and --momentum above 0")
        if self.loss in ("bce", "ce") and registry.get_task(self.task).kind == "regression":
            raise UsageError(f"loss {self.loss!r} needs a classification task; {self.task!r} is a "
                             "regression task: use --loss mse")

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Inverse of `to_dict`; unknown keys are a usage error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"unknown RunSpec field(s): {', '.join(unknown)}; "
                             f"valid fields: {', '.join(sorted(names))}")
        values = dict(data)
        for key in ("hidden", "betas"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def torch_dtype(self):
        """The torch dtype named by `dtype`."""
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


def _positive(name: str, value: float, example: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value}; use e.g. {example}")


def resolve_device(device: str) -> str:
    """Map 'auto' to 'cuda' when available else 'cpu'; refuse 'cuda' without CUDA."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but CUDA is not available here; "
                         "use --device cpu or --device auto")
    _check_choice("device", device, DEVICES)
    return device

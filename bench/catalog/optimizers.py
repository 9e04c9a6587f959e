"""Optimizers of the reference engine: `torch.optim` built from a run's hyperparameters.

Full-batch gradient descent is "sgd" with `batch_size=None`. Weight decay is torch's own: L2
added to the gradient for SGD and Adam, decoupled for AdamW. L1 is not an optimizer setting: it
is added to the loss by the training loop (`lambda * sum |p|`), as notebook 004 does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported when an optimizer is built: reading specs needs no torch
    import torch


class Hyperparameters(Protocol):
    """What an optimizer reads of a run (a Hyperparameters has these fields)."""

    lr: float
    momentum: float
    nesterov: bool
    betas: tuple[float, float]
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class OptimizerDef:
    """A registry entry: an optimizer's name, what it is, and how to build it."""

    name: str
    description: str
    build: Callable[[Iterable[torch.nn.Parameter], Hyperparameters], torch.optim.Optimizer]
    settings: tuple[str, ...] = ("lr", "weight_decay")  # the hyperparameters it reads


def _sgd(params: Iterable[torch.nn.Parameter], spec: Hyperparameters) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           weight_decay=spec.weight_decay, foreach=False)


def _adam(params: Iterable[torch.nn.Parameter], spec: Hyperparameters) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, eps=spec.eps,
                            weight_decay=spec.weight_decay, foreach=False)


def _adamw(params: Iterable[torch.nn.Parameter], spec: Hyperparameters) -> torch.optim.Optimizer:
    import torch

    return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, eps=spec.eps,
                             weight_decay=spec.weight_decay, foreach=False)


OPTIMIZERS: dict[str, OptimizerDef] = {
    d.name: d
    for d in [
        OptimizerDef("sgd", "SGD with optional momentum, nesterov and weight decay "
                     "(full batch = gradient descent)", _sgd,
                     ("lr", "momentum", "nesterov", "weight_decay")),
        OptimizerDef("adam", "Adam (betas, eps, L2 weight decay)", _adam,
                     ("lr", "betas", "eps", "weight_decay")),
        OptimizerDef("adamw", "AdamW (decoupled weight decay)", _adamw,
                     ("lr", "betas", "eps", "weight_decay")),
    ]
}

"""The batched engine's optimizers: torch.optim's SGD / Adam / AdamW as functional updates of
a stack's flat parameter buffer, with one hyperparameter value per member. A stack is the layer
list's `Stack` or the torch.func path's `ModuleStack`: anything with the `FlatStack` members."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from bench.spec import RunSpec


class FlatStack(Protocol):
    """What the optimizers need of a stack: K members' parameters in one flat `[P]` buffer."""

    flat: torch.Tensor
    device: torch.device | str
    dtype: torch.dtype

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """One value per member ([K]) expanded to one per flat element ([P])."""
        ...

    def element_index(self, rows: torch.Tensor) -> torch.Tensor:
        """Where the flat elements of members `rows` are, in a stack of just those members."""
        ...


class StackedOptimizer:
    """torch.optim's SGD / Adam / AdamW formulas on the flat buffer, one hyperparameter per member.

    Each formula follows torch's single-tensor implementation operation by operation (weight
    decay added to the gradient for SGD and Adam, decoupled for AdamW; Adam's bias corrections
    computed on the host in double precision per step, as torch does), so a member's update is
    the update torch.optim would make for that run.
    """

    def __init__(self, stack: FlatStack, specs: list[RunSpec], total_steps: int) -> None:
        self.stack, self.kind = stack, specs[0].optimizer
        self.nesterov = specs[0].nesterov
        dev, dt = stack.device, stack.dtype

        def member(values: list[float]) -> torch.Tensor:
            return stack.per_element(torch.tensor(values, dtype=dt, device=dev))

        flat = stack.flat
        wd = [s.weight_decay for s in specs]
        self.l1 = member([s.l1 for s in specs]) if any(s.l1 for s in specs) else None
        if self.kind == "sgd":
            self.neg_lr = member([-s.lr for s in specs])
            self.wd = member(wd) if any(wd) else None
            has_momentum = any(s.momentum for s in specs)
            self.momentum = member([s.momentum for s in specs]) if has_momentum else None
            self.buf = torch.zeros_like(flat) if has_momentum else None
            return
        decoupled = self.kind == "adamw"
        self.wd = member(wd) if any(wd) and not decoupled else None
        self.decay = member([1 - s.lr * s.weight_decay for s in specs]) \
            if any(wd) and decoupled else None
        self.lerp_weight = member([1 - s.betas[0] for s in specs])
        self.beta2 = member([s.betas[1] for s in specs])
        self.one_minus_beta2 = member([1 - s.betas[1] for s in specs])
        self.eps = member([s.eps for s in specs])
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
        # Bias corrections for every step, computed in double on the host like torch does.
        t = np.arange(1, total_steps + 1, dtype=np.float64)[:, None]
        lr = np.array([s.lr for s in specs])[None, :]
        b1 = np.array([s.betas[0] for s in specs])[None, :]
        b2 = np.array([s.betas[1] for s in specs])[None, :]
        self.neg_step_size = torch.tensor(-(lr / (1 - b1 ** t)), dtype=dt, device=dev)
        self.bc2_sqrt = torch.tensor((1 - b2 ** t) ** 0.5, dtype=dt, device=dev)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, step_index: int) -> None:
        """One update of every member from the flat gradient (data loss only; L1 added here)."""
        p = self.stack.flat
        if self.l1 is not None:  # d/dp lambda * sum |p| = lambda * sgn(p), as autograd makes it
            grad = torch.addcmul(grad, self.l1, torch.sgn(p))
        if self.kind == "sgd":
            if self.wd is not None:
                grad = torch.addcmul(grad, p, self.wd)
            if self.buf is not None:
                self.buf.mul_(self.momentum).add_(grad)
                grad = torch.addcmul(grad, self.buf, self.momentum) if self.nesterov else self.buf
            p.addcmul_(grad, self.neg_lr)
            return
        if self.wd is not None:
            grad = torch.addcmul(grad, p, self.wd)
        if self.decay is not None:
            p.mul_(self.decay)
        self.exp_avg.lerp_(grad, self.lerp_weight)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad * self.one_minus_beta2, grad)
        per = self.stack.per_element
        denom = (self.exp_avg_sq.sqrt() / per(self.bc2_sqrt[step_index])).add_(self.eps)
        # torch's addcdiv computes p + (value * exp_avg) / denom, in that order.
        p.add_(torch.mul(self.exp_avg, per(self.neg_step_size[step_index])).div_(denom))

    def select(self, stack: FlatStack, rows: Sequence[int]) -> StackedOptimizer:
        """This optimizer for `stack`, which is `self.stack.select(rows)`: every member's
        hyperparameters and state (momentum buffer, Adam moments) copied bit for bit."""
        index = torch.tensor(list(rows), dtype=torch.long, device=stack.device)
        elements = self.stack.element_index(index)
        new = copy.copy(self)
        new.stack = stack
        for name in PER_ELEMENT:
            value = getattr(self, name, None)
            if value is not None:
                setattr(new, name, value.index_select(0, elements))
        for name in PER_STEP_AND_MEMBER:
            if hasattr(self, name):
                setattr(new, name, getattr(self, name).index_select(1, index))
        return new


# The optimizer's [P] tensors (one value per flat element) and its [steps, K] tables.
PER_ELEMENT = ("l1", "neg_lr", "wd", "momentum", "buf", "decay", "lerp_weight", "beta2",
               "one_minus_beta2", "eps", "exp_avg", "exp_avg_sq")
PER_STEP_AND_MEMBER = ("neg_step_size", "bc2_sqrt")

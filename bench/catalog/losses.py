"""Losses and predictions on raw network outputs, for one run or K stacked runs alike.

Every function takes outputs shaped [..., B, O] (B examples, O outputs) and reduces over the
last two dimensions only, so the reference engine (no leading dims) and the batched engine
(leading K) compute each run's loss with the very same code.

- "mse": mean squared error between head(outputs) and the encoded targets, averaged over all
  B * O elements like `nn.MSELoss` (probabilities vs 0/1 or one-hot, tanh vs +-1, or values).
- "bce": binary cross-entropy computed from logits (stable), same mean as `nn.BCELoss`.
- "ce": softmax cross-entropy over classes, averaged over examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.catalog.models import Head

if TYPE_CHECKING:  # tensor methods only, torch itself is imported by whoever makes tensors
    import torch


@dataclass(frozen=True)
class LossDef:
    """A registry entry: a loss's name and what it computes."""

    name: str
    description: str
    fn: Callable[[torch.Tensor, torch.Tensor, Head], torch.Tensor]


def apply_head(outputs: torch.Tensor, head: Head) -> torch.Tensor:
    """Turn raw outputs into probabilities (sigmoid/softmax), tanh values or identity."""
    if head.activation == "sigmoid":
        return outputs.sigmoid()
    if head.activation == "tanh":
        return outputs.tanh()
    if head.activation == "softmax":
        return outputs.softmax(dim=-1)
    return outputs


def encode_targets(y: torch.Tensor, head: Head, loss: str, dtype: torch.dtype) -> torch.Tensor:
    """Targets in the form the loss compares against (done once per run, not per step).

    Regression: float [N, 1]. Cross-entropy: class indices [N]. MSE/BCE on one output: 0/1 as
    float [N, 1] (+-1 under a tanh head); on several outputs: one-hot [N, C] (+-1 under tanh).
    """
    if head.activation == "identity":
        return y.to(dtype).reshape(-1, 1)
    if loss == "ce":
        return y.long()
    if head.n_outputs == 1:
        t = y.to(dtype).reshape(-1, 1)
    else:
        import torch.nn.functional as F

        t = F.one_hot(y.long(), head.n_outputs).to(dtype)
    return 2 * t - 1 if head.activation == "tanh" else t


def _mean_last2(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(-2, -1))


def mse_loss(outputs: torch.Tensor, target: torch.Tensor, head: Head) -> torch.Tensor:
    """Mean squared error of head(outputs) against encoded targets, per run."""
    return _mean_last2((apply_head(outputs, head) - target) ** 2)


def bce_loss(outputs: torch.Tensor, target: torch.Tensor, head: Head) -> torch.Tensor:
    """Binary cross-entropy from logits (sigmoid folded in for stability), per run."""
    import torch.nn.functional as F

    del head
    return _mean_last2(F.binary_cross_entropy_with_logits(outputs, target, reduction="none"))


def ce_loss(outputs: torch.Tensor, target: torch.Tensor, head: Head) -> torch.Tensor:
    """Softmax cross-entropy over the last dimension, averaged over examples, per run."""
    del head
    logp = outputs.log_softmax(dim=-1)
    picked = logp.gather(-1, target.expand(*outputs.shape[:-1]).unsqueeze(-1))
    return -picked.squeeze(-1).mean(dim=-1)


LOSSES: dict[str, LossDef] = {
    d.name: d
    for d in [
        LossDef("mse", "mean squared error on probabilities / +-1 / values, as the notebooks do",
                mse_loss),
        LossDef("bce", "binary cross-entropy, computed from logits for stability", bce_loss),
        LossDef("ce", "softmax cross-entropy over classes", ce_loss),
    ]
}


def predict_classes(outputs: torch.Tensor, head: Head) -> torch.Tensor:
    """Class indices: one output thresholds the logit at 0 (p = 0.5, tanh = 0); else argmax."""
    if head.n_outputs == 1:
        return (outputs.squeeze(-1) > 0).long()
    return outputs.argmax(dim=-1)


def regression_scores(outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE, R^2) of regression outputs [..., B, 1] against targets [B], per run."""
    pred = outputs.squeeze(-1)
    sse = ((pred - y) ** 2).sum(dim=-1)
    sst = ((y - y.mean()) ** 2).sum()
    return sse / y.shape[0], 1 - sse / sst

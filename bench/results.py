"""`RunResult`: what one training run produced, whichever engine ran it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.spec import RunSpec

if TYPE_CHECKING:  # only for an annotation: `import bench` must not load torch (1.7 s)
    import numpy as np
    import torch


@dataclass
class RunResult:
    """Curves, final metrics, timings and the divergence verdict of one run.

    `metrics` holds final values: `val_<m>`, `test_<m>` and `train_<m>` for the task's metrics
    (accuracy; or mse and r2 for regression) plus `val_loss`. They are NaN for a diverged run:
    its curves stop at the epoch it diverged and are never padded. `stopped` is True for a run
    the engine's `on_epoch` hook ended early (after `epochs_run` epochs; its metrics are those of
    its model then).
    """

    spec: RunSpec
    metrics: dict[str, float]
    curves: dict[str, list[float]]
    timing: dict[str, float]
    diverged: bool
    diverged_epoch: int | None
    epochs_run: int
    time_to_target: dict[str, float] | None = None
    engine: str = "reference"
    step_losses: list[float] | None = None
    params: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    stopped: bool = False

    @property
    def seed(self) -> int:
        """The run's seed (initial weights and shuffle order)."""
        return self.spec.seed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and inf become null); parameters are left out; `stopped` only
        appears for a run the hook stopped (records of full runs keep their old shape)."""
        out = {
            "spec": self.spec.to_dict(),
            "seed": self.seed,
            "engine": self.engine,
            "metrics": {k: _finite_or_none(v) for k, v in self.metrics.items()},
            "curves": {k: [_finite_or_none(v) for v in vs] for k, vs in self.curves.items()},
            "timing": {k: _finite_or_none(v) for k, v in self.timing.items()},
            "diverged": self.diverged,
            "diverged_epoch": self.diverged_epoch,
            "epochs_run": self.epochs_run,
            "time_to_target": self.time_to_target,
        }
        if self.stopped:
            out["stopped"] = True
        return out


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def metric_names(task_kind: str) -> tuple[str, ...]:
    """The metrics a task kind reports: accuracy, or mse and r2 for regression."""
    return ("mse", "r2") if task_kind == "regression" else ("accuracy",)


METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "maximize", "r2": "maximize", "mse": "minimize", "loss": "minimize",
}


def metric_direction(metric: str) -> str:
    """'maximize' or 'minimize' for a metric name, with or without a split prefix."""
    base = metric.split("_", 1)[1] if metric.split("_", 1)[0] in ("val", "test", "train") else metric
    return METRIC_DIRECTIONS.get(base, "maximize")


def reached(value: float, target: float, metric: str) -> bool:
    """True when `value` meets `target` in the metric's direction."""
    if metric_direction(metric) == "maximize":
        return value >= target
    return value <= target


MAX_STORED_PARAMS = 20_000  # final parameters kept with a run (2-D tasks' small models only)


def encode_params(params: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """A run's final state dict as plain JSON (base64 of each tensor's bytes, its dtype and
    shape), so the report can draw its decision boundary without retraining; None when the
    model has more than MAX_STORED_PARAMS numbers."""
    import base64

    if sum(int(t.numel()) for t in params.values()) > MAX_STORED_PARAMS:
        return None
    return {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                   "data": base64.b64encode(t.detach().cpu().contiguous().numpy().tobytes())
                   .decode("ascii")} for name, t in params.items()}


def decode_arrays(stored: dict[str, Any]) -> dict[str, np.ndarray]:
    """The stored state dict of `encode_params` as NumPy arrays, bit for bit (no torch)."""
    import base64

    import numpy as np

    return {name: np.frombuffer(base64.b64decode(item["data"]), dtype=np.dtype(item["dtype"]))
            .reshape(item["shape"]).copy() for name, item in stored.items()}


def decode_params(stored: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The inverse of `encode_params`: the state dict, bit for bit."""
    import torch

    return {name: torch.from_numpy(array) for name, array in decode_arrays(stored).items()}

"""RunSpec validation: every impossible value is a one-line UsageError that names the fix."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UsageError
from bench.spec import RunSpec, resolve_device


@pytest.mark.parametrize("changes,fragment", [
    ({"lr": 0}, "lr must be a positive number"),
    ({"lr": -1e-3}, "lr must be a positive number"),
    ({"batch_size": 0}, "batch size must be positive"),
    ({"hidden": (20, 0)}, "hidden sizes must be positive"),
    ({"epochs": 0}, "epochs must be a positive number"),
    ({"task": "nope"}, "valid tasks: moons"),
    ({"model": "nope"}, "valid models: mlp"),
    ({"loss": "hinge"}, "valid losses: mse, bce, ce"),
    ({"optimizer": "rmsprop"}, "valid optimizers: sgd, adam, adamw"),
    ({"device": "tpu"}, "choose one of: cpu, cuda, auto"),
    ({"dtype": "float16"}, "choose one of: float32, float64"),
    ({"momentum": 1.5}, "momentum must be below 1"),
    ({"nesterov": True}, "nesterov needs"),
    ({"betas": (0.9, 1.0)}, "betas must be"),
    ({"task": "regression", "loss": "bce"}, "use --loss mse"),
    ({"l1": -1.0}, "l1 must be >= 0"),
])
def test_bad_values_are_one_line_errors(changes: dict, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        RunSpec(**changes)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_cuda_without_cuda_is_refused_and_auto_falls_back() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="use --device cpu or --device auto"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_round_trip_through_dict() -> None:
    spec = RunSpec(task="sine", hidden=(4, 3), betas=(0.8, 0.99), batch_size=None, seed=3)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UsageError, match="unknown RunSpec field"):
        RunSpec.from_dict({"learning_rate": 0.1})


def test_specs_are_hashable_values() -> None:
    assert len({RunSpec(seed=1), RunSpec(seed=1), RunSpec(seed=2)}) == 2

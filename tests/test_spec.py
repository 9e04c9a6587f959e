"""RunSpec validation: every impossible value is a one-line UsageError that names the fix."""

from __future__ import annotations

import pytest
import torch

from bench.catalog import registry
from bench.catalog.models import Activation, BatchNorm, Linear
from bench.engines.setup import plan_run
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
    spec = RunSpec(task="sine", hidden=(4, 3), optimizer="adam", betas=(0.8, 0.99),
                   batch_size=None, seed=3)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UsageError, match="unknown RunSpec field"):
        RunSpec.from_dict({"learning_rate": 0.1})


def test_specs_are_hashable_values() -> None:
    assert len({RunSpec(seed=1), RunSpec(seed=1), RunSpec(seed=2)}) == 2


# --- what a RunSpec records is what trains ----------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for n, m in registry.models().items() if m.factory is None))
def test_recorded_architecture_is_the_one_that_trains(name: str) -> None:
    """hidden/activation/batch_norm of every model's spec describe the layers it builds."""
    task = "linear" if name == "relu_mlp_5" else (
        "mnist_synthetic" if name == "sigmoid_mlp_16x2" else "moons")
    spec = RunSpec(task=task, model=name, n_samples=100)
    arch = plan_run(spec, 100).arch
    assert tuple(layer.out_features for layer in arch if isinstance(layer, Linear))[:-1] == \
        spec.hidden
    assert {layer.name for layer in arch if isinstance(layer, Activation)} <= {spec.activation}
    assert any(isinstance(layer, BatchNorm) for layer in arch) == spec.batch_norm
    assert spec.to_dict()["hidden"] == list(spec.hidden)


def test_fixed_model_takes_its_own_layers_and_mlp_the_defaults() -> None:
    assert (RunSpec().hidden, RunSpec().activation, RunSpec().batch_norm) == ((20, 20, 20),
                                                                             "relu", False)
    five = RunSpec(task="linear", model="relu_mlp_5")
    assert (five.hidden, five.activation, five.batch_norm) == ((5,), "relu", False)
    assert RunSpec(model="bn_mlp_20x3").batch_norm is True
    assert RunSpec(model="linear", task="regression").hidden == ()
    # the model's own values, given explicitly, are fine
    assert RunSpec(task="linear", model="relu_mlp_5", hidden=(5,), activation="relu") == five


@pytest.mark.parametrize("changes,shown", [
    ({"hidden": (8,)}, "hidden 8"),
    ({"activation": "tanh"}, "activation tanh"),
    ({"batch_norm": True}, "batch_norm true"),
    ({"hidden": (5,), "activation": "sigmoid"}, "activation sigmoid"),
])
def test_contradicting_a_fixed_model_is_one_line(changes: dict, shown: str) -> None:
    with pytest.raises(UsageError) as info:
        RunSpec(task="linear", model="relu_mlp_5", **changes)
    message = str(info.value)
    assert shown in message and "fixed architecture (hidden 5, relu, no batch norm)" in message
    assert "choose model mlp" in message and "\n" not in message


def test_old_records_of_fixed_models_are_read_as_what_trained() -> None:
    """Records stored before normalisation hold the MLP defaults for every model."""
    old = {**RunSpec().to_dict(), "task": "linear", "model": "relu_mlp_5",
           "hidden": [20, 20, 20], "activation": "relu", "batch_norm": False}
    spec = RunSpec.from_dict(old)
    assert (spec.hidden, spec.activation, spec.batch_norm) == ((5,), "relu", False)
    bn = RunSpec.from_dict({**old, "task": "moons", "model": "bn_mlp_20x3"})
    assert bn.batch_norm is True
    with pytest.raises(UsageError, match="applies to --model mlp only"):
        RunSpec.from_dict(old, strict=True)
    mlp = RunSpec.from_dict({**old, "model": "mlp", "hidden": [7]})
    assert mlp.hidden == (7,)


def test_replacing_the_model_re_resolves_the_layers() -> None:
    assert RunSpec(task="linear").replace(model="relu_mlp_5").hidden == (5,)
    assert RunSpec(model="bn_mlp_20x3").replace(model="mlp").batch_norm is False
    assert RunSpec().replace(model="mlp", hidden=(3,)).hidden == (3,)


@pytest.mark.parametrize("changes,fragment", [
    ({"epochs": True}, "epochs must be an integer, got True"),
    ({"epochs": 3.0}, "epochs must be an integer, got 3.0"),
    ({"hidden": (8.5,)}, "hidden must be a list of integers"),
    ({"hidden": (True,)}, "hidden must be a list of integers"),
    ({"batch_size": 50.5}, "batch_size must be an integer"),
    ({"lr": True}, "lr must be a number"),
    ({"lr": "0.1"}, "lr must be a number"),
    ({"shuffle": 1}, "shuffle must be true or false"),
    ({"loss": 3}, "loss must be a string"),
    ({"betas": (0.9,)}, "betas must be a list of 2 numbers"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295"),
    ({"data_seed": 2**32}, "data_seed must be an integer from 0 to 4294967295"),
    ({"target": float("nan")}, "target must be a finite number"),
    ({"target": float("inf")}, "target must be a finite number"),
    ({"lr": 1e300}, "too large for float32 arithmetic"),
    ({"weight_decay": 1e40}, "too large for float32"),
])
def test_types_are_checked_exactly(changes: dict, fragment: str) -> None:
    """A bool is not an integer, a float is not an integer: nothing is truncated silently."""
    with pytest.raises(UsageError) as info:
        RunSpec(**changes)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_an_integer_is_fine_for_a_float_field_and_float64_takes_large_values() -> None:
    assert RunSpec(lr=1).lr == 1
    assert RunSpec(lr=1e300, dtype="float64").lr == 1e300


@pytest.mark.parametrize("changes, words", [
    ({"optimizer": "adam", "momentum": 0.9}, "momentum 0.9 has no effect with optimizer 'adam'"),
    ({"optimizer": "adamw", "nesterov": True, "momentum": 0.0}, "nesterov true has no effect"),
    ({"optimizer": "sgd", "betas": (0.8, 0.99)}, "betas 0.8,0.99 has no effect with optimizer"),
    ({"optimizer": "sgd", "eps": 1e-6}, r"eps 1e-06 has no effect with optimizer 'sgd'"),
])
def test_a_setting_the_optimizer_ignores_is_refused(changes, words) -> None:
    with pytest.raises(UsageError, match=words):
        RunSpec(**changes)


def test_stored_records_with_ignored_settings_read_as_they_trained() -> None:
    """Records written before the rule hold e.g. Adam with momentum 0.83: it never acted."""
    old = RunSpec(optimizer="adam").to_dict() | {"momentum": 0.83}
    assert RunSpec.from_dict(old).momentum == 0.0
    with pytest.raises(UsageError, match=r"momentum 0\.83 has no effect"):
        RunSpec.from_dict(old, strict=True)

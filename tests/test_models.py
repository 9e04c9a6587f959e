"""Models: the notebooks' parameter counts, shapes, heads and seeded initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from bench.catalog import registry
from bench.catalog.models import (
    MODELS,
    BatchNorm,
    Head,
    Linear,
    architecture,
    build_module,
    initial_state,
    output_head,
    parameter_count,
)
from bench.errors import UsageError


def arch_for(model: str, task: str = "moons", loss: str = "mse", **kw):
    t = registry.get_task(task)
    head = output_head(MODELS[model], t.kind, t.n_classes, loss)
    kw = {"hidden": (20, 20), "activation": "relu", "batch_norm": False} | kw
    return architecture(MODELS[model], t.input_dim, head, **kw), head


def test_notebook_parameter_counts() -> None:
    arch, _ = arch_for("bn_mlp_20x3")
    assert parameter_count(arch) == 1041  # notebook 000 prints 1041
    assert sum(p.numel() for p in build_module(arch).parameters()) == 1041
    arch, _ = arch_for("sigmoid_mlp_16x2", task="mnist_synthetic")
    assert parameter_count(arch) == 13002  # notebook 002 prints 13002
    arch, _ = arch_for("relu_mlp_500x2", loss="bce")
    assert parameter_count(arch) == 2 * 500 + 500 + 500 * 500 + 500 + 501


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_builds_and_runs(model: str) -> None:
    task = "mnist_synthetic" if model == "sigmoid_mlp_16x2" else "moons"
    arch, head = arch_for(model, task=task)
    net = build_module(arch)
    state = initial_state(arch, init="default", init_scale=1.0, seed=0)
    net.load_state_dict(state)
    assert set(state) == set(net.state_dict())
    x = torch.randn(7, registry.get_task(task).input_dim)
    assert net(x).shape == (7, head.n_outputs)


def test_generic_mlp_follows_the_spec() -> None:
    arch, _ = arch_for("mlp", hidden=(8, 4), activation="tanh", batch_norm=True)
    assert [type(layer).__name__ for layer in arch] == [
        "Linear", "Activation", "BatchNorm", "Linear", "Activation", "BatchNorm", "Linear"]
    assert arch[0] == Linear(2, 8) and arch[2] == BatchNorm(8)


def test_heads_follow_task_and_loss() -> None:
    moons, digits, reg = (registry.get_task(n) for n in ("moons", "digits", "regression"))
    assert output_head(MODELS["mlp"], moons.kind, 2, "mse") == Head("sigmoid", 1)
    assert output_head(MODELS["mlp"], moons.kind, 2, "bce") == Head("sigmoid", 1)
    assert output_head(MODELS["mlp"], moons.kind, 2, "ce") == Head("softmax", 2)
    assert output_head(MODELS["tanh_mlp_4"], moons.kind, 2, "mse") == Head("tanh", 1)
    assert output_head(MODELS["relu_mlp_5"], moons.kind, 2, "mse") == Head("sigmoid", 2)
    assert output_head(MODELS["mlp"], digits.kind, 10, "mse") == Head("sigmoid", 10)
    assert output_head(MODELS["mlp"], reg.kind, 0, "mse") == Head("identity", 1)
    with pytest.raises(UsageError, match="output"):
        output_head(MODELS["relu_mlp_5"], digits.kind, 10, "mse")


def test_initialisation_is_seeded_and_follows_each_scheme() -> None:
    arch = (Linear(200, 300),)
    a = initial_state(arch, init="default", init_scale=1.0, seed=1)
    b = initial_state(arch, init="default", init_scale=1.0, seed=1)
    c = initial_state(arch, init="default", init_scale=1.0, seed=2)
    assert torch.equal(a["0.weight"], b["0.weight"]) and not torch.equal(a["0.weight"], c["0.weight"])
    bound = 1 / math.sqrt(200)
    assert float(a["0.weight"].abs().max()) <= bound
    assert float(a["0.weight"].abs().max()) > 0.95 * bound
    xav = initial_state(arch, init="xavier_uniform", init_scale=1.0, seed=1)
    xbound = math.sqrt(6 / 500)
    assert float(xav["0.weight"].abs().max()) <= xbound
    assert float(xav["0.weight"].abs().max()) > 0.95 * xbound
    assert torch.count_nonzero(xav["0.bias"]) == 0
    normal = initial_state(arch, init="normal", init_scale=1.0, seed=1)
    assert abs(float(normal["0.weight"].std()) - 0.1) < 0.005
    half = initial_state(arch, init="normal", init_scale=0.5, seed=1)
    assert torch.allclose(half["0.weight"], normal["0.weight"] * 0.5)


def test_float32_state_is_the_float64_draw_rounded() -> None:
    arch = (Linear(3, 4),)
    s64 = initial_state(arch, init="default", init_scale=1.0, seed=5, dtype=torch.float64)
    s32 = initial_state(arch, init="default", init_scale=1.0, seed=5, dtype=torch.float32)
    assert torch.equal(s64["0.weight"].float(), s32["0.weight"])

"""Models: the notebooks' parameter counts, shapes, heads and seeded initialisation; networks
given as code (factories) and the built-in LeNet-5."""

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
    ModelDef,
    architecture,
    build_module,
    factory_module,
    initial_state,
    module_size,
    output_head,
    parameter_count,
)
from bench.errors import UsageError
from bench.spec import RunSpec


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


@pytest.mark.parametrize("model", [name for name, m in MODELS.items() if m.factory is None])
def test_every_layer_list_model_builds_and_runs(model: str) -> None:
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


# --- networks given as code -----------------------------------------------------------------------

def tanh_net(input_shape: tuple[int, ...], n_outputs: int) -> torch.nn.Module:
    """A plugin-style factory: a small tanh network."""
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, n_outputs))


TANH = ModelDef("tanh_net", "test network", None, None, None, factory=tanh_net,
                origin="tests/test_models.py")


def test_a_factory_model_is_seeded_the_same_in_every_dtype_and_leaves_the_global_stream() -> None:
    before = torch.random.get_rng_state()
    a64 = factory_module(TANH, (2,), 1, seed=4, dtype=torch.float64)
    assert torch.equal(torch.random.get_rng_state(), before)
    a32 = factory_module(TANH, (2,), 1, seed=4, dtype=torch.float32)
    again = factory_module(TANH, (2,), 1, seed=4, dtype=torch.float64)
    other = factory_module(TANH, (2,), 1, seed=5, dtype=torch.float64)
    for p64, p32, p_again, p_other in zip(a64.parameters(), a32.parameters(), again.parameters(),
                                          other.parameters(), strict=True):
        assert p64.dtype == torch.float64 and p32.dtype == torch.float32
        assert torch.equal(p64.float(), p32) and torch.equal(p64, p_again)
        assert not torch.equal(p64, p_other)
    scaled = factory_module(TANH, (2,), 1, seed=4, init_scale=0.5, dtype=torch.float64)
    for p, half in zip(a64.parameters(), scaled.parameters(), strict=True):
        assert torch.equal(half, p * 0.5)


def test_a_factory_that_fails_or_returns_no_module_is_one_usage_error() -> None:
    def broken(shape, outputs):
        raise ValueError("bad width")

    for factory, words in ((broken, "ValueError: bad width"), (lambda s, o: 3, "not a torch.nn")):
        model = ModelDef("plug", "", None, None, None, factory=factory, origin="plug.py")
        with pytest.raises(UsageError) as err:
            factory_module(model, (2,), 1, seed=0)
        assert words in str(err.value) and "plug.py" in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape, params", [((784,), 61706), ((64,), 19754), ((1, 28, 28), 61706),
                                           ((8, 8), 19754)])
def test_lenet5_takes_28x28_and_8x8_images_flat_or_not(shape, params) -> None:
    net = factory_module(MODELS["lenet5"], shape, 10, seed=0)
    assert sum(p.numel() for p in net.parameters()) == params  # 61706: LeCun's count for 28x28
    assert net(torch.randn(3, *shape)).shape == (3, 10)
    size = module_size(MODELS["lenet5"], shape, 10)
    assert size.parameters == params and size.multiply_adds > size.parameters


@pytest.mark.parametrize("shape", [(2,), (100,), (3, 8, 8), (28, 27)])
def test_lenet5_refuses_other_inputs_in_one_line(shape) -> None:
    with pytest.raises(UsageError, match="lenet5 takes 28x28 or 8x8") as err:
        factory_module(MODELS["lenet5"], shape, 10, seed=0)
    assert "\n" not in str(err.value)


def test_a_spec_of_a_factory_model_refuses_layer_settings_and_other_inits() -> None:
    spec = RunSpec(task="digits", model="lenet5")
    assert (spec.hidden, spec.activation, spec.batch_norm) == (None, None, None)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    for changes, words in (({"hidden": (3,)}, "drop hidden"),
                           ({"activation": "tanh"}, "drop activation"),
                           ({"batch_norm": True}, "drop batch_norm"),
                           ({"init": "normal"}, "use init default")):
        with pytest.raises(UsageError, match=words):
            RunSpec(task="digits", model="lenet5", **changes)


def test_plan_counts_parameters_of_layer_lists_and_of_modules_given_as_code():
    """`bench time` sizes its grid by `Plan.parameters`, which must work for both kinds."""
    from bench.catalog.models import parameter_count
    from bench.engines.setup import build_model, plan_run
    from bench.spec import RunSpec

    for spec in (RunSpec(task="moons", model="bn_mlp_20x3"),
                 RunSpec(task="digits", model="lenet5", loss="ce")):
        plan = plan_run(spec, 100)
        built = sum(p.numel() for p in build_model(spec, plan).parameters())
        assert plan.parameters == built
        if plan.arch is not None:
            assert plan.parameters == parameter_count(plan.arch)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("activation, batch_norm, head", [
    ("relu", True, Head("sigmoid", 1)), ("tanh", False, Head("tanh", 1)),
    ("sigmoid", True, Head("softmax", 3)), ("relu", False, Head("identity", 1)),
    ("tanh", True, Head("sigmoid", 2))])
def test_forward_numpy_is_the_modules_eval_forward(activation, batch_norm, head, dtype,
                                                   tol) -> None:
    """The report's torch-free forward (decision boundaries from stored parameters) computes
    what the module does in eval mode, BatchNorm on trained running statistics included."""
    import numpy as np

    from bench.catalog.models import forward_numpy
    from bench.engines.setup import predict

    arch = architecture(registry.get_model("mlp"), 2, head, hidden=(7, 5),
                        activation=activation, batch_norm=batch_norm)
    module = build_module(arch).to(dtype)
    module.load_state_dict(initial_state(arch, init="default", init_scale=2.0, seed=3,
                                         dtype=dtype))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # running statistics away from (0, 1), as after training
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.2, 3, generator=gen)
    x = torch.randn(300, 2, generator=gen, dtype=torch.float64).mul(3).to(dtype)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    got = forward_numpy(arch, state, x.numpy(), head)
    assert got.dtype == np.dtype(str(dtype).removeprefix("torch."))
    np.testing.assert_allclose(got, predict(module, x, head).numpy(), rtol=tol, atol=tol)

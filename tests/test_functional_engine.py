"""The batched engine's torch.func path: networks given as code (plugins, lenet5) trained as one
stacked computation, each member equal to the reference engine's run of its spec."""

from __future__ import annotations

import math

import pytest
import torch

from bench.catalog.models import MODELS, ModelDef
from bench.engines import batched, functional
from bench.engines.batched import train_many
from bench.engines.reference import train
from bench.spec import RunSpec
from tests.test_batched import OPTIMIZERS, assert_same_run, one_thread  # noqa: F401 (fixture)


class Residual(torch.nn.Module):
    """A plugin-style MLP with a skip connection (and optionally BatchNorm)."""

    def __init__(self, inputs: int, outputs: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.inp, self.mid = torch.nn.Linear(inputs, 8), torch.nn.Linear(8, 8)
        self.norm = torch.nn.BatchNorm1d(8) if batch_norm else torch.nn.Identity()
        self.out = torch.nn.Linear(8, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(self.norm(h + torch.tanh(self.mid(h))))


class Branchy(torch.nn.Module):
    """Data-dependent Python control flow: torch.func cannot vmap it."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        return out if out.sum() > 0 else -out


class Counting(torch.nn.Module):
    """Updates a plain tensor attribute (not a buffer) in place: vmap cannot batch into it."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(inputs, outputs)
        self.seen = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        self.seen.add_(out.detach().mean())
        return out


def conv_bn(input_shape: tuple[int, ...], n_outputs: int) -> torch.nn.Module:
    """A small CNN with BatchNorm2d for 8x8 images (per-member running statistics per channel)."""
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 4, 3, padding=1),
                               torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(256, n_outputs))


@pytest.fixture(autouse=True)
def plugin_models(monkeypatch):
    """Plugin-style registry entries, as `@bench.register_model` makes them."""
    for name, factory in (("residual", lambda s, n: Residual(s[0], n)),
                          ("residual_bn", lambda s, n: Residual(s[0], n, batch_norm=True)),
                          ("branchy", lambda s, n: Branchy(s[0], n)),
                          ("conv_bn", conv_bn),
                          ("counting", lambda s, n: Counting(s[0], n))):
        monkeypatch.setitem(MODELS, name, ModelDef(name, "test network", None, None, None,
                                                   factory=factory, origin=__file__))


def check(specs: list[RunSpec], **options: object) -> list:
    """Train specs batched; each member equals its reference run (steps, parameters, metrics)."""
    got = train_many(specs, record_steps=True, keep_params=True, **options)
    for spec, result in zip(specs, got, strict=True):
        ref = train(spec, record_steps=True, keep_params=True)
        assert result.spec == spec
        assert_same_run(ref, result)
        for name, values in ref.curves.items():
            assert result.curves[name] == pytest.approx(values, rel=1e-9, nan_ok=True), name
        for key, value in ref.metrics.items():
            assert result.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12,
                                                        nan_ok=True), key
    return got


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", ["residual", "residual_bn"])
def test_plugin_mlp_members_equal_reference_float64(model: str, optimizer: str) -> None:
    shared, members = OPTIMIZERS[optimizer]
    common = {"task": "moons", "model": model, "dtype": "float64", "n_samples": 100,
              "epochs": 2, "batch_size": 32, "shuffle": True, **shared}
    check([RunSpec(**common, **m) for m in members])


@pytest.mark.parametrize("loss, task", [("bce", "moons"), ("ce", "circles"), ("mse", "regression")])
def test_shared_batches_and_every_loss_equal_reference(loss: str, task: str) -> None:
    base = RunSpec(task=task, model="residual", loss=loss, dtype="float64", n_samples=100,
                   epochs=2, batch_size=None, shuffle=False, optimizer="sgd", momentum=0.9)
    check([base.replace(seed=s, lr=0.05 * (s + 1)) for s in range(3)])


@pytest.mark.parametrize("task, optimizer", [("digits", {"optimizer": "adam", "lr": 0.003}),
                                             ("mnist_synthetic", {"optimizer": "sgd",
                                                                  "momentum": 0.9, "lr": 0.05})])
def test_lenet5_members_equal_reference_float64(task: str, optimizer: dict) -> None:
    small = {"n_samples": 60} if task == "mnist_synthetic" else {}
    base = RunSpec(task=task, model="lenet5", loss="ce", dtype="float64", epochs=2,
                   batch_size=256 if task == "digits" else 20, shuffle=True, **small, **optimizer)
    got = check([base.replace(seed=s, weight_decay=1e-3 * s) for s in range(2)])
    assert [r.engine for r in got] == ["batched", "batched"]


def test_a_cnn_with_batch_norm_2d_equals_reference() -> None:
    base = RunSpec(task="digits", model="conv_bn", loss="ce", dtype="float64", epochs=2,
                   batch_size=256, optimizer="sgd", momentum=0.9, lr=0.05)
    got = check([base.replace(seed=s) for s in range(2)])
    assert "0.running_mean" not in got[0].params and "2.running_mean" in got[0].params


def test_stopped_and_diverged_members_leave_and_the_others_equal_reference() -> None:
    base = RunSpec(task="regression", model="residual", loss="mse", dtype="float64",
                   n_samples=100, epochs=4, batch_size=25, optimizer="sgd", momentum=0.5)
    specs = [base.replace(seed=s, lr=0.01) for s in range(4)]
    specs[2] = specs[2].replace(lr=1e4)  # blows up
    sizes: list[int] = []
    real = functional._compact

    def compact(stack, opt, staying):
        sizes.append(len(staying))
        return real(stack, opt, staying)

    def hook(report):
        return [1] if report.epoch == 1 and report.run == 1 else []

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(functional, "_compact", compact)
        got = train_many(specs, on_epoch=hook, record_steps=True, keep_params=True)
    blown = got[2]
    assert blown.diverged and blown.epochs_run == blown.diverged_epoch < 4
    assert all(math.isnan(v) for v in blown.metrics.values())
    assert got[1].stopped and got[1].epochs_run == 1 and not got[1].diverged
    assert [r.epochs_run for r in (got[0], got[3])] == [4, 4]
    assert sizes and sizes[-1] == 2  # the group shrank to the two members left
    for i in (0, 3):
        assert_same_run(train(specs[i], record_steps=True, keep_params=True), got[i])
    assert_same_run(train(specs[2], record_steps=True, keep_params=True), blown)
    one_epoch = train(specs[1].replace(epochs=1), record_steps=True, keep_params=True)
    assert got[1].step_losses == pytest.approx(one_epoch.step_losses, rel=1e-9)
    assert got[1].metrics == pytest.approx(one_epoch.metrics, rel=1e-9)


def test_chunks_give_the_same_results() -> None:
    base = RunSpec(task="moons", model="residual_bn", dtype="float64", n_samples=100, epochs=2,
                   batch_size=32, optimizer="adam", lr=0.01)
    specs = [base.replace(seed=s) for s in range(5)]
    whole = train_many(specs, record_steps=True, keep_params=True)
    chunked = train_many(specs, record_steps=True, keep_params=True, max_members=2)
    for one, other in zip(whole, chunked, strict=True):
        assert_same_run(one, other)


@pytest.mark.parametrize("model", ["branchy", "counting"])
def test_a_module_torch_func_cannot_vmap_trains_on_the_reference_engine_and_says_why(
        model: str, capsys) -> None:
    specs = [RunSpec(task="moons", model=model, dtype="float64", n_samples=100, epochs=2,
                     batch_size=50, seed=s) for s in range(3)]
    got = train_many(specs, record_steps=True, keep_params=True, max_members=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1  # said once, though the group had two chunks
    assert f"model {model!r} cannot be stacked with torch.func" in lines[0]
    assert "reference engine" in lines[0]
    assert [r.engine for r in got] == ["reference"] * 3
    for spec, result in zip(specs, got, strict=True):
        ref = train(spec, record_steps=True, keep_params=True)
        assert result.step_losses == ref.step_losses


def test_the_chosen_step_of_a_factory_model_is_torch_func() -> None:
    spec = RunSpec(task="moons", model="residual", n_samples=100)
    from bench.engines.setup import load_data

    assert batched.chosen_step(spec, load_data(spec, "cpu")) == "torch.func"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model, task", [("residual_bn", "moons"), ("lenet5", "digits")])
def test_members_equal_reference_float64_cuda(model: str, task: str) -> None:
    small = {"n_samples": 100} if task == "moons" else {}
    base = RunSpec(task=task, model=model, loss="ce", dtype="float64", epochs=2, batch_size=64,
                   optimizer="adam", lr=0.01, device="cuda", **small)
    got = check([base.replace(seed=s, weight_decay=1e-3 * s) for s in range(3)])
    assert [r.engine for r in got] == ["batched"] * 3


def test_the_budget_sizes_a_network_given_as_code() -> None:
    from bench.engines.budget import estimate

    mnist = estimate(RunSpec(task="mnist", model="lenet5", batch_size=64))
    digits = estimate(RunSpec(task="digits", model="lenet5", batch_size=64))
    assert (mnist.parameters, digits.parameters) == (61706, 19754)
    assert mnist.multiply_adds > 10 * digits.multiply_adds  # 28x28 convolutions vs 8x8
    many = estimate(RunSpec(task="mnist", model="lenet5", batch_size=64), runs=256, together=256)
    assert mnist.parts["members"] == 0 < many.parts["members"]  # stacked members add memory

"""The engine contract: one registry of engines by name, one `on_epoch` hook that sees every epoch
of every run (and may stop runs), one per-epoch bookkeeping for every engine."""

from __future__ import annotations

import math

import pytest
import torch

import bench.engines.notebook
from bench.engines import registry
from bench.engines.bookkeeping import Ledger
from bench.engines.reference import train
from bench.errors import UsageError
from bench.spec import ENGINES as SPEC_ENGINES
from bench.spec import RunSpec

# BatchNorm (running statistics a stopped batched member must keep), shuffled, float64.
SPEC = RunSpec(task="moons", n_samples=200, model="bn_mlp_20x3", loss="mse", optimizer="sgd",
               lr=0.1, momentum=0.9, batch_size=50, epochs=4, dtype="float64")
SPECS = [SPEC.replace(seed=s) for s in range(3)]
ENGINE_CASES = [("reference", {}), ("notebook", {}), ("batched", {"step": "torch"}),
                ("batched", {"step": "auto"})]


# --- the registry -----------------------------------------------------------------------------

def test_registry_names_are_the_specs_vocabulary() -> None:
    assert set(registry.engine_names()) == set(SPEC_ENGINES)
    assert registry.engine_names(include_auto=False) == ("reference", "batched", "notebook")
    assert RunSpec(engine="notebook").engine == "notebook"


@pytest.mark.parametrize("call", [
    lambda: registry.get_engine("turbo"),
    lambda: registry.check_engine_name("turbo"),
    lambda: registry.train_specs([SPEC], "turbo"),
    lambda: registry.choose_engine([SPEC], "turbo"),
])
def test_an_unknown_engine_is_one_usage_error_naming_the_valid_ones(call) -> None:
    with pytest.raises(UsageError) as err:
        call()
    message = str(err.value)
    assert "unknown engine 'turbo'" in message and "\n" not in message
    for name in ("reference", "batched", "notebook"):
        assert name in message


def test_former_names_map_and_auto_chooses_by_run_count() -> None:
    assert registry.get_engine("dataloader").name == "notebook"
    assert registry.check_engine_name("dataloader") == "notebook"
    assert registry.check_engine_name("auto") == "auto"
    with pytest.raises(UsageError, match="unknown engine 'auto'"):
        registry.check_engine_name("auto", allow_auto=False)
    assert registry.choose_engine([SPEC]) == "reference"
    assert registry.choose_engine(SPECS) == "batched"
    assert registry.choose_engine(SPECS, "notebook") == "notebook"


# --- the hook ---------------------------------------------------------------------------------

@pytest.mark.parametrize("engine, options", ENGINE_CASES)
def test_the_hook_sees_each_epoch_of_each_run_with_the_recorded_numbers(engine, options) -> None:
    reports: list[registry.EpochReport] = []
    results = registry.train_specs(SPECS, engine, on_epoch=reports.append, **options)
    assert sorted((r.run, r.epoch) for r in reports) == [
        (i, e) for i in range(len(SPECS)) for e in range(1, SPEC.epochs + 1)]
    for report in reports:
        curves = results[report.run].curves
        assert report.train_loss == curves["train_loss"][report.epoch - 1]
        assert report.val["loss"] == curves["val_loss"][report.epoch - 1]
        assert report.val["accuracy"] == curves["val_accuracy"][report.epoch - 1]
        assert report.diverged is False
    assert [r.engine for r in results] == [engine] * len(SPECS)
    assert not any(r.stopped for r in results)


@pytest.mark.parametrize("engine, options", ENGINE_CASES)
def test_a_run_the_hook_stops_ends_after_that_epoch(engine, options) -> None:
    def stop_run_1_after_epoch_2(report: registry.EpochReport) -> list[int]:
        return [1] if (report.run, report.epoch) == (1, 2) else []

    if engine != "notebook":  # the notebooks' loop keeps no parameters
        options = {**options, "keep_params": True}
    results = registry.train_specs(SPECS, engine, on_epoch=stop_run_1_after_epoch_2, **options)
    stopped = results[1]
    assert stopped.stopped and not stopped.diverged and stopped.epochs_run == 2
    assert len(stopped.curves["train_loss"]) == 2
    assert stopped.to_dict()["stopped"] is True
    assert "stopped" not in results[0].to_dict()
    for i in (0, 2):
        assert results[i].epochs_run == SPEC.epochs and not results[i].stopped
    # The stopped run is the run trained for 2 epochs: same final metrics (and parameters); the
    # batched engine is held to the reference, the notebooks' loop (its own shuffle) to itself.
    if engine == "notebook":
        short = bench.engines.notebook.train_with_dataloader(SPECS[1].replace(epochs=2))
    else:
        short = train(SPECS[1].replace(epochs=2), keep_params=True)
    for key, value in stopped.metrics.items():
        assert value == pytest.approx(short.metrics[key], abs=1e-9), key
    if stopped.params is not None:
        for name, tensor in short.params.items():
            torch.testing.assert_close(stopped.params[name], tensor, rtol=0, atol=1e-9)


def test_a_stop_request_for_a_run_not_started_yet_ends_it_after_its_first_epoch() -> None:
    results = registry.train_specs(SPECS, "reference",
                                   on_epoch=lambda r: [2] if r.run == 0 else None)
    assert [r.epochs_run for r in results] == [SPEC.epochs, SPEC.epochs, 1]
    assert results[2].stopped


def test_relay_passes_each_stop_request_once_to_the_sub_list_that_holds_the_run() -> None:
    from bench.engines.registry import EpochReport

    asked: list[int] = []

    def hook(report: EpochReport) -> list[int]:
        asked.append(report.run)
        return [4, 1] if report.run == 0 else []  # 4 is in the second sub-list

    pending: list[int] = []
    first = registry.relay(hook, [0, 1, 2], pending)
    second = registry.relay(hook, [3, 4], pending)

    def report(run: int) -> EpochReport:
        return EpochReport(run, 1, 0.5, {"loss": 0.5}, False)

    assert first(report(0)) == [1]  # local index of run 1; run 4 is not first's
    assert first(report(1)) == [] and first(report(0)) == [1]  # a new request, passed on
    assert second(report(0)) == [1, 1]  # run 4 (local 1), asked twice, reaches second
    assert second(report(1)) == []  # ... and only once per request
    assert asked == [0, 1, 0, 3, 4]  # the caller's indices


# --- the shared bookkeeping -------------------------------------------------------------------

def test_the_ledger_diverges_on_a_non_finite_validation_loss_alone() -> None:
    ledger = Ledger([SPEC], "classification", "accuracy")
    ledger.record(0, 1, 0.5, {"loss": 0.4, "accuracy": 0.8}, 1.0)
    assert ledger.newly_ended() == []
    ledger.record(0, 2, 0.3, {"loss": math.inf, "accuracy": 0.5}, 2.0)
    assert ledger.newly_ended() == [0] and ledger.diverged(0) and not ledger.stopped[0]
    result = ledger.result(0, metrics={"val_accuracy": 0.5, "val_loss": math.inf},
                           train_seconds=2.0, eval_seconds=0.1, n_train=100, engine="x")
    assert result.diverged and result.diverged_epoch == 2 and result.epochs_run == 2
    assert all(math.isnan(v) for v in result.metrics.values())


def test_the_notebook_loop_diverges_on_the_validation_loss_too(monkeypatch) -> None:
    real = bench.engines.notebook.evaluate
    calls: list[int] = []

    def val_loss_blows_up_in_epoch_2(*args, **kwargs):
        scores = real(*args, **kwargs)
        calls.append(1)
        return {**scores, "loss": math.nan} if len(calls) == 2 else scores

    monkeypatch.setattr(bench.engines.notebook, "evaluate", val_loss_blows_up_in_epoch_2)
    result = bench.engines.notebook.train_with_dataloader(SPEC)
    assert math.isfinite(result.curves["train_loss"][1])
    assert result.diverged and result.diverged_epoch == 2 and result.epochs_run == 2
    assert all(math.isnan(v) for v in result.metrics.values())


# --- networks given as code -------------------------------------------------------------------

class Residual(torch.nn.Module):
    """A plugin-style network with a skip connection: x -> h + tanh(W h), h = relu(A x)."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.inp, self.mid, self.out = (torch.nn.Linear(inputs, 8), torch.nn.Linear(8, 8),
                                        torch.nn.Linear(8, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(h + torch.tanh(self.mid(h)))


def test_the_reference_engine_trains_a_network_given_as_code(monkeypatch) -> None:
    from bench.catalog.models import MODELS, ModelDef, factory_module

    monkeypatch.setitem(MODELS, "residual", ModelDef(
        "residual", "test", None, None, None, factory=lambda shape, n: Residual(shape[0], n),
        origin="tests/test_engines.py"))
    spec = RunSpec(task="moons", n_samples=200, model="residual", optimizer="adam", lr=0.01,
                   batch_size=50, epochs=8, dtype="float64", seed=3)
    first = train(spec, keep_params=True)
    again = registry.train_specs([spec], "reference", keep_params=True)[0]
    assert first.curves == again.curves and first.metrics == again.metrics
    start = factory_module(MODELS["residual"], (2,), 1, seed=3, dtype=torch.float64)
    assert list(first.params) == list(start.state_dict())
    assert first.curves["train_loss"][-1] < 0.6 * first.curves["train_loss"][0]
    assert first.metrics["test_accuracy"] > 0.8



def test_auto_picks_per_group_by_the_measured_rule(monkeypatch) -> None:
    # Layer lists: batched from 2 runs. Code: from 3 runs when light (relu_mlp_20x3_code, ~900
    # multiply-adds per example), from 6 when heavy (lenet5 on digits, ~36,000): the break-even
    # group sizes `bench perf` measured (docs/PERFORMANCE.md).
    def group(model: str, task: str, k: int) -> list[RunSpec]:
        return [RunSpec(task=task, model=model, seed=s) for s in range(k)]

    assert [registry.choose_engine(group("mlp", "moons", k)) for k in (1, 2)] == [
        "reference", "batched"]
    assert [registry.choose_engine(group("relu_mlp_20x3_code", "moons", k))
            for k in (1, 2, 3, 256)] == ["reference", "reference", "batched", "batched"]
    assert [registry.choose_engine(group("lenet5", "digits", k)) for k in (4, 5, 6, 64)] == [
        "reference", "reference", "batched", "batched"]
    assert registry.choose_engine(group("lenet5", "digits", 64), "reference") == "reference"

    # train_specs decides per group: three lenet5 runs go to the reference engine, the four
    # code-MLP runs around them to the batched one; results and hook indices stay in order.
    small = {"n_samples": 100, "epochs": 2, "batch_size": 50, "dtype": "float64"}
    mixed = [RunSpec(task="moons", model="relu_mlp_20x3_code", seed=s, **small)
             for s in range(4)]
    mixed[1:1] = [RunSpec(task="digits", model="lenet5", seed=s, loss="ce", epochs=1,
                          batch_size=512) for s in range(3)]
    seen: list[tuple[int, int]] = []
    results = registry.train_specs(mixed, on_epoch=lambda r: seen.append((r.run, r.epoch)))
    assert [r.spec for r in results] == mixed
    assert [r.engine for r in results] == ["batched", "reference", "reference", "reference",
                                           "batched", "batched", "batched"]
    assert sorted(seen) == sorted([(i, 1) for i in range(7)] + [(i, 2) for i in (0, 4, 5, 6)])

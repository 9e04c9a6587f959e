"""The reference engine: determinism, divergence, time-to-target, timing and bad sizes."""

from __future__ import annotations

import math

import pytest
import torch

from bench.catalog.optimizers import OPTIMIZERS
from bench.engines.reference import train
from bench.errors import UsageError
from bench.spec import RunSpec

QUICK = RunSpec(task="moons", n_samples=200, model="mlp", hidden=(8,), loss="bce",
                optimizer="adam", lr=0.05, batch_size=50, epochs=5)


def test_same_spec_and_seed_give_identical_results() -> None:
    a, b = train(QUICK, keep_params=True), train(QUICK, keep_params=True)
    assert a.curves == b.curves and a.metrics == b.metrics
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    c = train(QUICK.replace(seed=1))
    assert c.curves["train_loss"] != a.curves["train_loss"]


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", ["mse", "bce", "ce"])
def test_every_optimizer_and_loss_learns_moons(optimizer: str, loss: str) -> None:
    lr = 0.5 if optimizer == "sgd" else 0.05
    result = train(QUICK.replace(optimizer=optimizer, loss=loss, lr=lr, epochs=10,
                                 momentum=0.9 if optimizer == "sgd" else 0.0))
    assert result.curves["train_loss"][-1] < result.curves["train_loss"][0]
    assert result.metrics["val_accuracy"] > 0.8
    assert not result.diverged


def test_result_shape_and_timing() -> None:
    r = train(QUICK, record_steps=True)
    assert len(r.curves["train_loss"]) == len(r.curves["val_accuracy"]) == 5 == r.epochs_run
    assert len(r.step_losses) == 5 * 4  # 200 examples in batches of 50
    assert set(r.metrics) == {"train_accuracy", "val_accuracy", "test_accuracy", "val_loss"}
    assert r.timing["train_seconds"] > 0 and r.timing["eval_seconds"] > 0
    assert r.timing["samples_per_second"] == pytest.approx(5 * 200 / r.timing["train_seconds"])
    d = r.to_dict()
    assert d["seed"] == 0 and d["spec"]["task"] == "moons" and d["diverged"] is False


def test_divergence_is_flagged_at_its_epoch_and_not_padded() -> None:
    spec = RunSpec(task="regression", model="linear", loss="mse", optimizer="sgd", lr=1.0,
                   batch_size=None, epochs=50)
    r = train(spec)
    assert r.diverged and r.diverged_epoch is not None and r.diverged_epoch < 50
    assert len(r.curves["train_loss"]) == r.diverged_epoch == r.epochs_run
    assert math.isnan(r.metrics["val_mse"])
    assert r.to_dict()["metrics"]["val_mse"] is None


def test_time_to_target() -> None:
    r = train(QUICK.replace(target=0.8, epochs=10))
    assert r.time_to_target is not None
    epoch = r.time_to_target["epoch"]
    assert r.curves["val_accuracy"][epoch - 1] >= 0.8
    assert all(v < 0.8 for v in r.curves["val_accuracy"][: epoch - 1])
    assert train(QUICK.replace(target=1.01)).time_to_target is None


def test_regression_reports_mse_and_r2() -> None:
    spec = RunSpec(task="regression", model="linear", loss="mse", optimizer="sgd", lr=0.01,
                   batch_size=None, epochs=200)
    r = train(spec)
    assert r.metrics["val_r2"] > 0.9 and 0.5 < r.metrics["val_mse"] < 2.0  # noise variance 1


def test_batch_size_above_training_set_and_bn_singletons_are_refused() -> None:
    with pytest.raises(UsageError, match="above the training set"):
        train(QUICK.replace(batch_size=201))
    with pytest.raises(UsageError, match="batch norm"):
        train(QUICK.replace(batch_norm=True, batch_size=199))


def test_full_batch_is_one_step_per_epoch() -> None:
    r = train(QUICK.replace(batch_size=None), record_steps=True)
    assert len(r.step_losses) == 5

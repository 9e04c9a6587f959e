"""The batched engine computes what the reference engine computes, member by member."""

from __future__ import annotations

import math

import pytest
import torch

from bench.catalog import registry
from bench.engines import batched
from bench.engines.batched import train_many
from bench.engines.reference import train
from bench.engines.registry import group_key, train_specs
from bench.spec import RunSpec

# Members differ in seed, learning rate, momentum, betas, eps, weight decay, L1 and init scale.
SGD_MEMBERS = [
    {"seed": 1, "lr": 0.05},
    {"seed": 2, "lr": 0.1, "weight_decay": 0.01},
    {"seed": 3, "lr": 0.02, "l1": 1e-3},
    {"seed": 4, "lr": 0.2, "init_scale": 0.5, "weight_decay": 1e-3, "l1": 1e-4},
]
ADAM_MEMBERS = [
    {"seed": 1, "lr": 0.01},
    {"seed": 2, "lr": 0.005, "betas": (0.8, 0.99), "weight_decay": 0.01},
    {"seed": 3, "lr": 0.02, "l1": 1e-3, "eps": 1e-6},
    {"seed": 4, "lr": 0.001, "init_scale": 0.5, "weight_decay": 0.1, "l1": 1e-4},
]


def with_momentum(*momenta: float) -> list[dict]:
    """The SGD members, each with its own momentum."""
    return [dict(m, momentum=mom) for m, mom in zip(SGD_MEMBERS, momenta, strict=True)]


OPTIMIZERS = {
    "sgd": ({"optimizer": "sgd"}, SGD_MEMBERS),
    "momentum": ({"optimizer": "sgd"}, with_momentum(0.0, 0.5, 0.9, 0.8)),
    "nesterov": ({"optimizer": "sgd", "nesterov": True}, with_momentum(0.9, 0.5, 0.9, 0.8)),
    "adam": ({"optimizer": "adam"}, ADAM_MEMBERS),
    "adamw": ({"optimizer": "adamw"}, ADAM_MEMBERS),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run faster on one thread on the shared 2-core machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_spec(model: str, device: str = "cpu", **changes: object) -> RunSpec:
    """A fast float64 spec for `model`: 784-input models on 200 synthetic MNIST examples."""
    wide = registry.get_model(model).name == "sigmoid_mlp_16x2"
    own = {"hidden": (8, 8), "batch_norm": True} if model == "mlp" else {}  # fixed models refuse
    base = RunSpec(task="mnist_synthetic" if wide else "moons", model=model, dtype="float64",
                   n_samples=200 if wide else 100, epochs=2, batch_size=32, shuffle=True,
                   device=device, **own)
    return base.replace(**changes)


def assert_same_run(reference, batched, rtol: float = 1e-9) -> None:
    """Per-step losses and final parameters equal to `rtol`, relative to each tensor's scale."""
    assert batched.engine == "batched"
    assert batched.epochs_run == reference.epochs_run
    assert batched.diverged == reference.diverged
    assert batched.diverged_epoch == reference.diverged_epoch
    ref_steps = torch.tensor(reference.step_losses, dtype=torch.float64)
    got_steps = torch.tensor(batched.step_losses, dtype=torch.float64)
    assert got_steps.shape == ref_steps.shape
    torch.testing.assert_close(got_steps, ref_steps, rtol=rtol, atol=0.0, equal_nan=True)
    assert list(batched.params) == list(reference.params)
    for key, ref in reference.params.items():
        got = batched.params[key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        if ref.dtype.is_floating_point:
            scale = float(ref.abs().max()) if ref.numel() else 1.0
            torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * scale, equal_nan=True,
                                       msg=lambda m, k=key: f"{k}: {m}")
        else:
            assert torch.equal(got, ref), key
    assert set(batched.metrics) == set(reference.metrics)
    assert set(batched.curves) == set(reference.curves)
    assert set(batched.timing) == set(reference.timing)


# The batched engine's two step implementations on the CPU: the fused C++ kernel and torch.
STEPS = ["native", "torch"]


def check_equivalence(model: str, optimizer: str, device: str, step: str = "auto") -> None:
    shared, members = OPTIMIZERS[optimizer]
    specs = [small_spec(model, device, **shared, **m) for m in members]
    batched = train_many(specs, record_steps=True, keep_params=True, step=step)
    for spec, got in zip(specs, batched, strict=True):
        assert got.spec == spec
        assert_same_run(train(spec, record_steps=True, keep_params=True), got)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", [n for n, m in registry.models().items() if m.factory is None])
def test_members_equal_reference_float64(model: str, optimizer: str, step: str) -> None:
    check_equivalence(model, optimizer, "cpu", step)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", ["mlp", "bn_mlp_20x3", "sigmoid_mlp_16x2", "tanh_mlp_4"])
def test_members_equal_reference_float64_cuda(model: str, optimizer: str) -> None:
    check_equivalence(model, optimizer, "cuda")


@pytest.mark.parametrize("step", STEPS)
def test_unshuffled_full_batch_and_losses_match_reference(step: str) -> None:
    # Shared batches take the one-GEMM first layer; full batch and every loss (ce also under
    # MSE's softmax head, and a wide input: digits' 64 pixels).
    cases = (("bce", "moons", {}), ("ce", "circles", {}), ("mse", "regression", {}),
             ("ce", "digits", {"n_samples": None}), ("mse", "digits", {"n_samples": None}))
    for loss, task, extra in cases:
        specs = [small_spec("mlp", loss=loss, task=task, shuffle=False, batch_size=None,
                            momentum=0.9, **extra, **m) for m in SGD_MEMBERS]
        got_runs = train_many(specs, record_steps=True, keep_params=True, step=step)
        for spec, got in zip(specs, got_runs, strict=True):
            ref = train(spec, record_steps=True, keep_params=True)
            assert_same_run(ref, got)
            for key, value in ref.metrics.items():
                assert got.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("step", STEPS)
def test_float32_validation_accuracy_within_one_example(step: str) -> None:
    base = RunSpec(task="moons", model="bn_mlp_20x3", loss="mse", optimizer="sgd", momentum=0.9,
                   batch_size=50, epochs=3, n_samples=200)
    specs = [base.replace(seed=s, lr=lr) for s in range(10) for lr in (0.03, 0.1)]
    n_val = 200
    batched = train_many(specs, step=step)
    close = sum(abs(b.metrics["val_accuracy"] - train(s).metrics["val_accuracy"]) * n_val <= 1.0001
                for s, b in zip(specs, batched, strict=True))
    assert close >= 0.95 * len(specs)


@pytest.mark.parametrize("step", STEPS)
def test_diverging_member_is_masked_and_neighbours_unaffected(step: str) -> None:
    base = RunSpec(task="regression", model="linear", loss="mse", optimizer="sgd", momentum=0.5,
                   dtype="float64", batch_size=20, epochs=12, seed=0)
    calm = [base.replace(seed=s, lr=lr) for s, lr in ((1, 0.001), (2, 0.003), (3, 0.002))]
    wild = base.replace(seed=9, lr=500.0)
    alone = train_many(calm, record_steps=True, keep_params=True, step=step)
    mixed = train_many([calm[0], wild, calm[1], calm[2]], record_steps=True, keep_params=True,
                       step=step)
    blown = mixed[1]
    assert blown.diverged and 1 < blown.diverged_epoch < 12
    assert blown.epochs_run == blown.diverged_epoch
    assert len(blown.curves["train_loss"]) == blown.diverged_epoch
    assert all(math.isnan(v) for v in blown.metrics.values())
    assert_same_run(train(wild, record_steps=True, keep_params=True), blown)
    for solo, together in zip(alone, [mixed[0], mixed[2], mixed[3]], strict=True):
        assert not together.diverged and together.epochs_run == 12
        assert_same_run(solo, together)
        assert together.metrics == pytest.approx(solo.metrics, rel=1e-9)


@pytest.mark.parametrize("step", STEPS)
def test_lr_500_classifier_member_diverges_or_sticks_alone(step: str) -> None:
    base = RunSpec(task="moons", model="mlp", hidden=(16, 16), loss="bce", optimizer="sgd",
                   batch_size=50, epochs=3, n_samples=200)
    calm = [base.replace(seed=s, lr=0.1) for s in range(3)]
    mixed = train_many([*calm[:2], base.replace(seed=7, lr=500.0), calm[2]], step=step)
    alone = train_many(calm, step=step)
    wild = mixed[2]
    assert wild.diverged or wild.metrics["val_accuracy"] <= max(r.metrics["val_accuracy"]
                                                                for r in alone)
    for solo, together in zip(alone, mixed[:2] + mixed[3:], strict=True):
        assert together.curves["train_loss"] == pytest.approx(solo.curves["train_loss"], rel=1e-4)
        assert together.metrics["val_accuracy"] == pytest.approx(solo.metrics["val_accuracy"],
                                                                 abs=1 / 200 + 1e-9)


def test_mixed_specs_are_grouped_and_returned_in_order() -> None:
    a = small_spec("tanh_mlp_4", optimizer="sgd")
    b = small_spec("relu_mlp_5", optimizer="adam", lr=0.01)
    c = small_spec("mlp", batch_size=16, target=0.6)
    specs = [a.replace(seed=1), b.replace(seed=1), c.replace(seed=1), a.replace(seed=2, lr=0.3),
             c.replace(seed=2, lr=0.05), b.replace(seed=2, betas=(0.5, 0.9))]
    assert len({group_key(s) for s in specs}) == 3
    finished: list[int] = []
    got = train_many(specs, progress=finished.append, record_steps=True, keep_params=True,
                     max_members=1)
    assert sum(finished) == len(specs) and len(finished) == len(specs)
    for spec, result in zip(specs, got, strict=True):
        assert result.spec == spec
        ref = train(spec, record_steps=True, keep_params=True)
        assert_same_run(ref, result)
        for name, values in ref.curves.items():
            assert result.curves[name] == pytest.approx(values, rel=1e-9), name
        assert (result.time_to_target is None) == (ref.time_to_target is None)
        if ref.time_to_target is not None:
            assert result.time_to_target["epoch"] == ref.time_to_target["epoch"]


def test_chunking_gives_the_same_results() -> None:
    specs = [small_spec("mlp", optimizer="adam", seed=s, lr=0.01 * (s + 1)) for s in range(5)]
    whole = train_many(specs, record_steps=True, keep_params=True)
    chunked = train_many(specs, record_steps=True, keep_params=True, max_members=2)
    for one, other in zip(whole, chunked, strict=True):
        assert_same_run(one, other)


def test_runner_dispatches_to_batched_engine() -> None:
    specs = [small_spec("logistic", seed=s) for s in range(3)]
    seen: list[int] = []
    results = train_specs(specs, "batched", progress=seen.append)
    assert [r.engine for r in results] == ["batched"] * 3 and sum(seen) == 3
    assert [r.spec for r in results] == specs
    timing = results[0].timing
    assert timing["train_seconds"] > 0 and timing["samples_per_second"] > 0


# --- compaction: members that stop leave the stacked computation ---------------------------------

def stop_1_and_3_after_epoch_1_and_4_after_epoch_2(report) -> list[int]:
    """A hook: runs 1 and 3 stop after epoch 1, run 4 after epoch 2."""
    if report.epoch == 1 and report.run in (1, 3):
        return [report.run]
    return [4] if report.epoch == 2 and report.run == 4 else []


COMPACTION_CASES = [  # model, loss, task, optimizer settings, shuffle
    ("bn_mlp_20x3", "mse", "moons", {"optimizer": "sgd", "momentum": 0.9}, True),
    ("mlp", "bce", "moons", {"optimizer": "adam"}, False),
    ("tanh_mlp_4", "ce", "circles", {"optimizer": "adamw", "weight_decay": 0.01}, True),
]


@pytest.mark.parametrize("step", STEPS)
def test_members_that_share_a_seed_each_equal_their_own_reference_run(step: str) -> None:
    # A sweep's trials share seeds: the group draws each distinct start once.
    members = [{"seed": 0, "lr": 0.1}, {"seed": 0, "lr": 0.02, "init_scale": 0.5},
               {"seed": 1, "lr": 0.1}, {"seed": 0, "lr": 0.05, "init": "xavier_uniform"}]
    specs = [small_spec("bn_mlp_20x3", optimizer="sgd", momentum=0.9, **m) for m in members]
    for spec, got in zip(specs, train_many(specs, record_steps=True, keep_params=True,
                                           step=step), strict=True):
        assert_same_run(train(spec, record_steps=True, keep_params=True), got)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", COMPACTION_CASES, ids=[c[0] for c in COMPACTION_CASES])
def test_members_that_stay_are_bit_identical_when_others_leave(case, dtype: str,
                                                                step: str) -> None:
    model, loss, task, optimizer, shuffle = case
    own = {"hidden": (8, 8), "batch_norm": True} if model == "mlp" else {}
    base = RunSpec(task=task, model=model, loss=loss, dtype=dtype, n_samples=300, epochs=4,
                   batch_size=32, shuffle=shuffle, **optimizer, **own)
    specs = [base.replace(seed=s, lr=0.01 * (s + 1)) for s in range(7)]
    left: list[int] = []
    real_compact = batched._compact

    def compact(stack, opt, staying):
        left.append(len(set(staying)))  # distinct rows: members that stay (fillers copy one)
        return real_compact(stack, opt, staying)

    full = train_many(specs, record_steps=True, keep_params=True, step=step)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched, "_compact", compact)
        cut = train_many(specs, record_steps=True, keep_params=True, step=step,
                         on_epoch=stop_1_and_3_after_epoch_1_and_4_after_epoch_2)
    assert left == [5, 4]  # the stopped members left after epochs 1 and 2
    for i in (0, 2, 5, 6):  # never stopped: the very same bits as without any stopping
        assert not cut[i].stopped and cut[i].epochs_run == 4
        assert list(cut[i].params) == list(full[i].params)
        for key, tensor in full[i].params.items():
            assert torch.equal(cut[i].params[key], tensor), key
        assert torch.equal(torch.tensor(cut[i].step_losses), torch.tensor(full[i].step_losses))
        assert cut[i].curves == full[i].curves and cut[i].metrics == full[i].metrics
    for i, epochs in ((1, 1), (3, 1), (4, 2)):  # stopped: the first epochs of the same run
        assert cut[i].stopped and cut[i].epochs_run == epochs
        assert cut[i].step_losses == full[i].step_losses[:len(cut[i].step_losses)]
        assert cut[i].curves == {name: values[:epochs] for name, values in full[i].curves.items()}
        # final metrics of the model at its stop (members that stopped at different epochs are
        # evaluated together at the end): those of the reference run trained for that many
        # epochs, in float64 (in float32 the engines may round apart: Adam's first steps are
        # lr * sign(g), so a gradient near 0 can take either sign)
        if dtype == "float64":
            short = train(specs[i].replace(epochs=epochs))
            assert set(cut[i].metrics) == set(short.metrics)
            for key, value in short.metrics.items():
                assert cut[i].metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_packed_rows_keep_their_alignment_and_a_whole_number_of_vectors() -> None:
    staying = [0, 2, 5, 6, 9, 13, 30]
    layout = batched.pack_rows(staying, 4, 16)
    assert len(layout) == 16  # rows 0 .. 10 (13 -> 9, 30 -> 10), rounded up
    assert sorted(r for r in layout if r is not None) == staying
    assert all(r % 4 == p % 4 for p, r in enumerate(layout) if r is not None)
    assert batched.pack_rows([3, 5], 1, 1) == [3, 5]
    assert batched.row_rules("cpu", torch.float32, native=True) == (1, 1)
    assert batched.row_rules("cpu", torch.float64, native=False) == (2, 16)


STOP_PLANS = {  # (run, epoch after which the hook stops it)
    # run 0 first, then every run left at once (nothing stays to train on)
    "all_left_at_once": {(0, 1), (1, 2), (2, 2), (3, 2), (4, 2)},
    # stops at the first and at the last epoch, the others train to the end
    "first_and_last_epoch": {(2, 1), (0, 3), (4, 3)},
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("plan", list(STOP_PLANS))
def test_stopped_members_final_metrics_are_those_at_their_stop(plan: str, step: str) -> None:
    """Members stopped at different epochs are evaluated together at the end of the group
    (`Stack.member_copies`, `Stack.assemble`): each one's final metrics are its reference run's
    for the epochs it trained, whatever else stopped with it or after it."""
    base = RunSpec(task="moons", model="bn_mlp_20x3", loss="mse", dtype="float64",
                   n_samples=300, epochs=3, batch_size=32, optimizer="sgd", momentum=0.9,
                   shuffle=True)
    specs = [base.replace(seed=s % 2, lr=0.02 * (s + 1)) for s in range(5)]
    stops = STOP_PLANS[plan]

    def hook(report) -> list[int]:
        return [report.run] if (report.run, report.epoch) in stops else []

    got = train_many(specs, step=step, on_epoch=hook)
    for i, spec in enumerate(specs):
        epochs = next((e for r, e in stops if r == i), spec.epochs)
        assert got[i].epochs_run == epochs
        short = train(spec.replace(epochs=epochs))
        assert set(got[i].metrics) == set(short.metrics)
        for key, value in short.metrics.items():
            assert got[i].metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (i, key)

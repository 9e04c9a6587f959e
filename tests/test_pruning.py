"""A sweep asks Optuna's pruner only at the epochs where it can decide (`decision_epochs`).

Optuna's pruners return False, and record nothing, at any other epoch; these tests hold the
shortcut to that: for every pruner and several settings, a study whose trials ask after
every epoch and one whose trials ask only at the decision epochs prune the same trials at the
same epochs and leave the same rung records behind.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.sweeps.optuna_study import decision_epochs, make_pruner
from bench.sweeps.study import load_study_file
from tests.test_sweep import study_file

STUDY = """
task = "moons"
trials = 4
pruner = {pruner}

[fixed]
epochs = {epochs}

[space]
lr = {{ low = 1e-3, high = 0.5, log = true }}
"""

PRUNERS = {
    "median": ('{ name = "median", startup_trials = 3 }', 12),
    "median_warmup": ('{ name = "median", startup_trials = 2, warmup_epochs = 4 }', 12),
    "percentile": ('{ name = "percentile", percentile = 40, startup_trials = 2 }', 10),
    "successive_halving": ('{ name = "successive_halving" }', 27),
    "successive_halving_2": ('{ name = "successive_halving", min_resource = 2, '
                             'reduction_factor = 2 }', 20),
    "hyperband": ('{ name = "hyperband", min_resource = 1, reduction_factor = 3 }', 27),
    "hyperband_warmup": ('{ name = "hyperband", warmup_epochs = 2, reduction_factor = 2 }', 20),
}


def _spec(tmp_path: Path, key: str):
    pruner, epochs = PRUNERS[key]
    path = tmp_path / f"{key}.toml"
    path.write_text(textwrap.dedent(STUDY.format(pruner=pruner, epochs=epochs)))
    return load_study_file(path)


def _simulate(spec, ask_at, curves: np.ndarray, group: int,
              lengths: list[int]) -> list[tuple[str, int | None, dict]]:
    """Trials in groups trained epoch by epoch, as a sweep does: each trial reports every
    epoch up to its length (`epochs` may be searched) and asks `should_prune` at the epochs in
    `ask_at`; (state, pruned epoch, the rung records the pruner left) per trial."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=spec.name, direction="maximize",
                                pruner=make_pruner(spec),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    out: list[tuple[str, int | None, dict]] = []
    for first in range(0, len(curves), group):
        trials = [study.ask() for _ in range(min(group, len(curves) - first))]
        stopped: dict[int, int] = {}
        for epoch in range(1, curves.shape[1] + 1):
            for i, trial in enumerate(trials):
                if i in stopped or epoch > lengths[first + i]:
                    continue
                trial.report(float(curves[first + i, epoch - 1]), epoch)
                if epoch in ask_at and trial.should_prune():
                    stopped[i] = epoch
        for i, trial in enumerate(trials):
            if i in stopped:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, float(curves[first + i, lengths[first + i] - 1]))
    for t in study.get_trials(deepcopy=False):
        rungs = {k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung")}
        out.append((t.state.name, t.last_step if t.state.name == "PRUNED" else None, rungs))
    return out


@pytest.mark.parametrize("key", list(PRUNERS))
def test_asking_only_at_decision_epochs_prunes_the_same_trials(tmp_path, key: str) -> None:
    spec = _spec(tmp_path, key)
    rng = np.random.default_rng(7)
    # noisy learning curves that rise at different rates towards different plateaus
    n, epochs = 60, spec.max_epochs
    rate = rng.uniform(0.05, 0.6, size=(n, 1))
    top = rng.uniform(0.5, 1.0, size=(n, 1))
    curves = top * (1 - np.exp(-rate * np.arange(1, epochs + 1))) + \
        rng.normal(0, 0.02, size=(n, epochs))
    # a third of the trials train fewer epochs, as when `epochs` is searched
    lengths = [epochs if i % 3 else int(rng.integers(1, epochs + 1)) for i in range(n)]
    every = _simulate(spec, set(range(1, epochs + 1)), curves, 8, lengths)
    only = _simulate(spec, decision_epochs(spec), curves, 8, lengths)
    assert only == every
    pruned = [e for state, e, _ in every if state == "PRUNED"]
    assert 5 <= len(pruned) < n  # the comparison is about real decisions
    assert set(pruned) <= decision_epochs(spec)


def test_decision_epochs_per_pruner(tmp_path) -> None:
    assert decision_epochs(_spec(tmp_path, "hyperband")) == {1, 3, 9, 27}
    assert decision_epochs(_spec(tmp_path, "successive_halving_2")) == {2, 4, 8, 16}
    assert decision_epochs(_spec(tmp_path, "hyperband_warmup")) == {2, 4, 8, 16}
    assert decision_epochs(_spec(tmp_path, "median_warmup")) == set(range(4, 13))
    assert decision_epochs(_spec(tmp_path, "median")) == set(range(1, 13))
    none = dataclasses.replace(_spec(tmp_path, "median"), pruner="none")
    assert decision_epochs(none) == frozenset()


def test_a_hyperband_sweep_decides_as_if_it_asked_every_epoch(tmp_path, monkeypatch) -> None:
    """Through the sweep's own hook (`_EpochPruning`) and engine: the same study swept with
    `should_prune` asked at the decision epochs and at every epoch stores the same trials."""
    import optuna

    from bench.sweeps import sweep as sweep_module
    from bench.sweeps.storage import open_storage

    path = study_file(tmp_path, "hb", trials=18, group=6, epochs=8, fixed="n_samples = 200")
    path.write_text(path.read_text().replace(
        'sampler = { name = "random", seed = 0 }',
        'sampler = { name = "random", seed = 0 }\nobjective = "val_loss"\n'
        'pruner = { name = "hyperband", min_resource = 1, reduction_factor = 2 }'))
    spec = load_study_file(path)
    assert decision_epochs(spec) == {1, 2, 4, 8}
    stored = []
    for asked in ("decision", "every"):
        if asked == "every":
            monkeypatch.setattr(sweep_module, "decision_epochs",
                                lambda s: frozenset(range(1, s.max_epochs + 1)))
        journal = str(tmp_path / f"{asked}.journal")
        sweep_module.sweep(spec, journal, quiet=True, engine="batched")
        study = optuna.load_study(study_name=spec.name, storage=open_storage(journal))
        stored.append([(t.state.name, t.params, t.value, t.intermediate_values,
                        {k: v for k, v in t.system_attrs.items() if k.startswith("completed")},
                        t.user_attrs.get("end")) for t in study.get_trials()])
    assert stored[0] == stored[1]
    ends = [end["kind"] for *_, end in stored[0]]
    assert "pruned" in ends and "complete" in ends

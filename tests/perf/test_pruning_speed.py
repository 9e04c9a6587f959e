"""Pruning pays: the same TPE moons study (notebook 000's network, 27 epochs) with `hyperband`
and with `none`, same sampler seed: member-epochs trained, sweep wall time, best value.

    .venv/bin/pytest tests/perf/test_pruning_speed.py -p no:xdist -s

Member-epochs are counted from what the study stored (each run's `epochs_run`), so they are the
epochs actually trained. Both sweeps run in one warmed-up process on one torch thread, one after
the other. NNBENCH_PRUNE_TRIALS shrinks the study for a quick look; under `--benchmark-disable`
(make test) it is a small smoke run of the same code path.
"""

from __future__ import annotations

import os
import textwrap
import time

import pytest

pytestmark = pytest.mark.perf

TRIALS = int(os.environ.get("NNBENCH_PRUNE_TRIALS", "192"))

STUDY = """
description = "pruning benchmark: notebook 000's moons network, lr x momentum, 27 epochs"
task = "moons"
model = "bn_mlp_20x3"
trials = {trials}
seeds = 3
group = {group}
sampler = {{ name = "tpe", seed = 0 }}
pruner = {pruner}

[fixed]
loss = "mse"
optimizer = "sgd"
batch_size = 100
epochs = 27

[space]
lr = {{ low = 1e-4, high = 1.0, log = true }}
momentum = {{ low = 0.0, high = 0.95 }}
"""


def _member_epochs(study) -> int:
    return sum(run["epochs_run"] for t in study.get_trials(deepcopy=False)
               for run in t.user_attrs.get("runs", []))


def test_hyperband_trains_fewer_member_epochs_than_no_pruning(benchmark, tmp_path):
    import optuna
    import torch

    from bench.sweeps.storage import open_storage
    from bench.sweeps.study import load_study_file
    from bench.sweeps.sweep import sweep

    trials = TRIALS if not benchmark.disabled else 12
    group = 64 if not benchmark.disabled else 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    figures: dict[str, object] = {"trials": trials, "seeds": 3, "group": group, "epochs": 27}
    try:
        warm = tmp_path / "warm.toml"
        warm.write_text(textwrap.dedent(STUDY.format(trials=2, group=2, pruner='"none"')))
        sweep(load_study_file(warm), str(tmp_path / "warm.journal"), quiet=True)
        for pruner in ("none", "hyperband"):
            path = tmp_path / f"{pruner}.toml"
            setting = '"none"' if pruner == "none" else \
                '{ name = "hyperband", min_resource = 1, reduction_factor = 3 }'
            path.write_text(textwrap.dedent(STUDY.format(trials=trials, group=group,
                                                         pruner=setting)))
            spec = load_study_file(path)
            storage = str(tmp_path / f"{pruner}.journal")
            began = time.perf_counter()
            if pruner == "hyperband":
                summary = benchmark.pedantic(sweep, args=(spec, storage),
                                             kwargs={"quiet": True}, rounds=1, iterations=1)
            else:
                summary = sweep(spec, storage, quiet=True)
            seconds = time.perf_counter() - began
            assert summary.finished == trials
            study = optuna.load_study(study_name=spec.name, storage=open_storage(storage))
            figures[pruner] = {
                "seconds": round(seconds, 2), "member_epochs": _member_epochs(study),
                "best": round(study.best_value, 4),
                "pruned": sum(t.state.name == "PRUNED" for t in study.get_trials()),
                "engine_seconds": round(summary.stats.train_seconds, 2)}
    finally:
        torch.set_num_threads(threads)
    none, band = figures["none"], figures["hyperband"]
    figures["member_epochs_ratio"] = round(none["member_epochs"] / band["member_epochs"], 2)
    figures["time_ratio"] = round(none["seconds"] / band["seconds"], 2)
    figures["best_gap"] = round(none["best"] - band["best"], 4)
    benchmark.extra_info.update(figures)
    print("\npruning:", figures)
    assert none["member_epochs"] == trials * 3 * 27  # nothing stops without a pruner
    assert band["pruned"] > 0 and band["member_epochs"] < none["member_epochs"]

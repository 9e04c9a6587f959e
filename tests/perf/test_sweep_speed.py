"""Sweep speed: a 512-trial x 5-seed moons study end to end vs the notebooks' loop.

    .venv/bin/pytest tests/perf/test_sweep_speed.py -p no:xdist -s

End to end = `bench.sweeps.sweep.sweep` on a fresh journal file: TPE sampler, storage writes (every
trial keeps its five runs' curves, metrics and timings), and training through
`bench.engines.registry.train_specs` (the batched engine when present). The notebook side trains the same
trials' specs one by one with `bench.engines.notebook.train_with_dataloader` (per-item Dataset +
DataLoader); it is measured on a sample of the study's trials and extrapolated to all of them
(the sample size is printed). The sampler-plus-storage share is the sweep's wall time outside
the engine. Both sides run in a warmed-up process (imports and data loaded), one torch
thread. Env vars NNBENCH_SWEEP_TRIALS / NNBENCH_SWEEP_SAMPLE shrink it for a quick look.
"""

from __future__ import annotations

import os
import textwrap
import time

import numpy as np
import pytest

pytestmark = pytest.mark.perf

TRIALS = int(os.environ.get("NNBENCH_SWEEP_TRIALS", "512"))
SEEDS = 5
SAMPLE = int(os.environ.get("NNBENCH_SWEEP_SAMPLE", "8"))

# Notebook 000's recipe: 2-20-20-20-1 ReLU MLP with BatchNorm, MSE, SGD + momentum, batch 100.
STUDY_TEMPLATE = """
description = "speed benchmark: notebook 000's moons recipe, lr x momentum"
task = "moons"
model = "bn_mlp_20x3"
trials = {trials}
seeds = {seeds}
group = 64
sampler = {{ name = "tpe", seed = 0 }}

[fixed]
loss = "mse"
optimizer = "sgd"
batch_size = 100
epochs = 10

[space]
lr = {{ low = 1e-3, high = 1.0, log = true }}
momentum = {{ low = 0.0, high = 0.95 }}
"""


def test_sweep_512x5_moons_vs_notebook_loop(benchmark, tmp_path):
    import torch

    from bench.engines.notebook import train_with_dataloader
    from bench.engines.registry import choose_engine
    from bench.sweeps.storage import open_storage
    from bench.sweeps.study import load_study_file
    from bench.sweeps.sweep import sweep

    path = tmp_path / "moons_speed.toml"
    # Under `--benchmark-disable` (make test) this is a smoke test of the same code path.
    n_trials = TRIALS if not benchmark.disabled else 16
    path.write_text(textwrap.dedent(STUDY_TEMPLATE.format(trials=n_trials, seeds=SEEDS)))
    spec = load_study_file(path)
    storage = str(tmp_path / "optuna.journal")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Warm-up (not timed): first imports (sklearn, torch's optimizer machinery), data.
        sweep(spec.with_overrides(trials=2), str(tmp_path / "warmup.journal"), quiet=True)
        began = time.perf_counter()
        summary = benchmark.pedantic(sweep, args=(spec, storage), kwargs={"quiet": True},
                                     rounds=1, iterations=1)
        sweep_seconds = time.perf_counter() - began
        assert summary.finished == n_trials

        import optuna

        study = optuna.load_study(study_name=spec.name, storage=open_storage(storage))
        trials = study.get_trials(deepcopy=False)
        picks = np.random.default_rng(0).choice(len(trials), size=min(SAMPLE, len(trials)),
                                                replace=False)
        began = time.perf_counter()
        for i in picks:
            for seed in range(SEEDS):
                train_with_dataloader(spec.run_spec(trials[int(i)].params, seed))
        notebook_per_trial = (time.perf_counter() - began) / len(picks)
    finally:
        torch.set_num_threads(threads)

    notebook_seconds = notebook_per_trial * n_trials
    overhead = sweep_seconds - summary.stats.train_seconds
    figures = {
        "engine": choose_engine([spec.run_spec({"lr": 0.1, "momentum": 0.0}, 0)] * 2),
        "trials": n_trials, "seeds": SEEDS, "sweep_seconds": round(sweep_seconds, 2),
        "engine_seconds": round(summary.stats.train_seconds, 2),
        "sampler_storage_seconds": round(overhead, 2),
        "sampler_storage_share": round(overhead / sweep_seconds, 3),
        "split_engine_sampler_storage_other": [
            round(v, 2) for v in (summary.stats.train_seconds, summary.stats.sampler_seconds,
                                  summary.stats.storage_seconds, summary.stats.other_seconds)],
        "overhead_ms_per_trial_first_256": round(
            1e3 * summary.stats.overhead_per_trial(first=True), 2),
        "overhead_ms_per_trial_last_256": round(
            1e3 * summary.stats.overhead_per_trial(first=False), 2),
        "notebook_sample_trials": len(picks),
        "notebook_seconds_per_trial": round(notebook_per_trial, 3),
        "notebook_seconds_extrapolated": round(notebook_seconds, 1),
        "speedup": round(notebook_seconds / sweep_seconds, 1),
    }
    benchmark.extra_info.update(figures)
    print("\nsweep speed:", ", ".join(f"{k}={v}" for k, v in figures.items()))

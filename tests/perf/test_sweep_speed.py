"""Sweep speed: a 2048-trial x 5-seed moons study end to end vs the notebooks' loop.

    .venv/bin/pytest tests/perf/test_sweep_speed.py -p no:xdist -s

End to end = `bench.sweeps.sweep.sweep` on a fresh journal file: TPE sampler, storage writes (every
trial keeps its five runs' curves, metrics and timings), and training through
`bench.engines.registry.train_specs` (the batched engine when present). The notebook side trains
runs of the same recipe (lr and momentum drawn from the study's space) one by one with
`bench.engines.notebook.train_with_dataloader` (per-item Dataset + DataLoader), on a sample
extrapolated to the study's size (the sample size is printed). The share outside the
engine is the sweep's wall time outside `train_specs`. Both sides run in a warmed-up process
(imports and data loaded), one torch thread. Env vars NNBENCH_SWEEP_TRIALS /
NNBENCH_SWEEP_SAMPLE shrink it for a quick look.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.perf

TRIALS = int(os.environ.get("NNBENCH_SWEEP_TRIALS", "2048"))
SEEDS = 5
SAMPLE = int(os.environ.get("NNBENCH_SWEEP_SAMPLE", "8"))


def test_sweep_2048x5_moons_split_and_flat_overhead(benchmark, tmp_path):
    """Issue 14's workload (bench.sweeps.speed.measure_sweep, also `bench perf --sweep`): the
    split of the end-to-end time and the overhead per trial at the start and the end; the
    notebooks' loop on a sample of the same recipe's runs, extrapolated, for the speed-up."""
    import torch

    from bench.engines.notebook import train_with_dataloader
    from bench.spec import RunSpec
    from bench.sweeps.speed import measure_sweep

    # Under `--benchmark-disable` (make test) this is a smoke test of the same code path.
    n_trials = TRIALS if not benchmark.disabled else 16
    figures = measure_sweep(n_trials, SEEDS, folder=tmp_path,
                            run=lambda call: benchmark.pedantic(call, rounds=1, iterations=1))
    assert figures["finished"] == n_trials
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        began = time.perf_counter()
        for _ in range(SAMPLE):
            lr, momentum = float(10 ** rng.uniform(-3, 0)), float(rng.uniform(0, 0.95))
            for seed in range(SEEDS):
                train_with_dataloader(RunSpec(task="moons", model="bn_mlp_20x3", loss="mse",
                                              optimizer="sgd", batch_size=100, epochs=10,
                                              lr=lr, momentum=momentum, seed=seed))
        notebook_per_trial = (time.perf_counter() - began) / SAMPLE
    finally:
        torch.set_num_threads(threads)
    figures["notebook_seconds_per_trial"] = round(notebook_per_trial, 3)
    figures["speedup_vs_notebook_loop"] = round(
        notebook_per_trial * n_trials / figures["sweep_seconds"], 1)
    benchmark.extra_info.update(figures)
    print("\nsweep speed:", ", ".join(f"{k}={v}" for k, v in figures.items()))

"""Pruning pays: the same TPE moons study (notebook 000's network, 27 epochs) with `hyperband`
and with `none`, same sampler seed: member-epochs trained, sweep wall time, best value.

    .venv/bin/pytest tests/perf/test_pruning_speed.py -p no:xdist -s

Member-epochs are counted from what the study stored (each run's `epochs_run`), so they are the
epochs actually trained. Both sweeps run in one warmed-up process on one torch thread, one after
the other, once; `bench perf --pruning 192` repeats the pair, interleaved, and reports medians
(a single pair's wall-time ratio swings by 0.3 on this shared machine). NNBENCH_PRUNE_TRIALS
shrinks the study for a quick look; under `--benchmark-disable` (make test) it is a small smoke
run of the same code path.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.perf

TRIALS = int(os.environ.get("NNBENCH_PRUNE_TRIALS", "192"))


def test_hyperband_trains_fewer_member_epochs_than_no_pruning(benchmark, tmp_path):
    """Issue 13's workload (bench.sweeps.speed.measure_pruning, also `bench perf --pruning`)."""
    from bench.sweeps.speed import measure_pruning

    trials = TRIALS if not benchmark.disabled else 12
    group = 64 if not benchmark.disabled else 4
    figures = measure_pruning(trials, group, folder=tmp_path,
                              run=lambda call: benchmark.pedantic(call, rounds=1, iterations=1))
    benchmark.extra_info.update(figures)
    print("\npruning:", figures)
    none, band = figures["none"], figures["hyperband"]
    assert none["finished"] == band["finished"] == trials
    assert none["member_epochs"] == trials * 3 * 27  # nothing stops without a pruner
    assert band["pruned"] > 0 and band["member_epochs"] < none["member_epochs"]

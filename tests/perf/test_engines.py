"""Engine speed per trial (pytest-benchmark): notebooks' loop, reference engine, batched engine.

    .venv/bin/pytest tests/perf/test_engines.py -p no:xdist

Small sizes so the file runs in about a minute: notebook 000's moons recipe with 3 epochs, the
784-16-16-10 network on 3,000 MNIST-sized examples, the moons recipe's shape written as code
(3 epochs) and lenet5 on digits (1 epoch). Each benchmark's time is
one call; batched calls train K=64 runs, so their per-trial time is the figure divided by 64
(`extra_info["trials"]`). `bench perf` takes the full-size figures.
"""

from __future__ import annotations

import pytest
import torch

from bench.engines.clock import num_threads
from bench.engines.setup import load_data
from bench.measure.perf import WORKLOADS, measure_stopping, trial_runner

pytestmark = pytest.mark.perf

SMALL = {
    "moons": WORKLOADS["moons"].spec.replace(epochs=3),
    "mnist": WORKLOADS["mnist"].spec.replace(n_samples=3000),
    # networks given as code (the torch.func path)
    "plugin_mlp": WORKLOADS["plugin_mlp"].spec.replace(epochs=3),
    "lenet5_digits": WORKLOADS["lenet5_digits"].spec.replace(epochs=1),
}
CASES = [("notebook", 1), ("reference", 1), ("batched", 64)]


@pytest.mark.parametrize(("engine", "k"), CASES, ids=[f"{e}-K{k}" for e, k in CASES])
@pytest.mark.parametrize("workload", list(SMALL))
def test_engine_trial_time(benchmark, workload: str, engine: str, k: int) -> None:
    spec = SMALL[workload]
    data = load_data(spec, "cpu")
    with num_threads(1):
        run = trial_runner(engine, spec, data, k)
        trials = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert trials == k
    benchmark.extra_info.update({"trials": k, "workload": workload, "engine": engine,
                                 "threads": 1, "torch": torch.__version__})


def test_stopped_members_leave_the_group() -> None:
    # `bench perf --stopping` at a small size: 3/4 of the group stopped after epoch 2 of 10
    # costs clearly less than no stopping, and more than stopping everyone then.
    with num_threads(1):
        result = measure_stopping(device="cpu", k=64, repeats=1, log=lambda line: None)
    ms = result["ms_per_group_median"]
    assert ms["stop_all"] < ms["stop_3_of_4"] < 0.8 * ms["none"]

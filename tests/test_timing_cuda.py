"""CUDA timings: event (device) time next to synchronised wall time; CPU and CUDA in one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.engines.clock import Stopwatch, record_stopwatches
from bench.measure.timing import TimingCase, measure_case, time_call

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_stopwatch_records_cuda_events_only_under_the_recorder() -> None:
    x = torch.randn(512, 512, device="cuda")
    plain = Stopwatch("cuda")
    with record_stopwatches():
        evented = Stopwatch("cuda")
    for watch in (plain, evented):
        with watch.measure():
            for _ in range(10):
                x = x @ x / 512
    assert plain.cuda_laps == []
    assert len(evented.cuda_laps) == 1
    # device time of the region cannot exceed the synchronised wall time around it (+ slack)
    assert 0 < evented.cuda_laps[0] <= evented.laps[0] * 1.05 + 1e-4


def test_time_call_on_cuda_gives_event_seconds() -> None:
    x = torch.randn(256, 256, device="cuda")
    lap = time_call(lambda: x @ x, device="cuda")
    assert lap.cuda_seconds is not None and lap.cuda_seconds > 0


def test_measure_case_on_cuda_reports_event_time() -> None:
    case = TimingCase("moons", "mlp", 16, 64, "reference", 1, "cuda", n_samples=200)
    entry = measure_case(case, epochs=2, warmup=1, min_time=0.0, min_repeats=2).to_dict()
    assert entry["device"] == "cuda"
    assert entry["cuda_event_seconds_median"] is not None
    assert len(entry["cuda_event_seconds"]) == entry["repeats"]


def test_bench_time_measures_cpu_and_cuda_in_one_file(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    code = main(["time", "--task", "moons", "--widths", "16", "--batch-sizes", "full",
                 "--engines", "reference", "--device", "auto", "--epochs", "2", "--warmup", "1",
                 "--min-time", "0", "--min-repeats", "2", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads(next(tmp_path.glob("*_timing.json")).read_text())
    assert sorted(m["device"] for m in doc["measurements"]) == ["cpu", "cuda"]
    assert doc["machine"]["gpu_name"]
    assert "CPU vs CUDA" in capsys.readouterr().out

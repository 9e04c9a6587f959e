"""The clock, the statistics, the repeat loop and `bench time` on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.engines.clock import Stopwatch, num_threads, record_stopwatches
from bench.errors import UsageError
from bench.measure import timing
from bench.measure.timing import (
    Lap,
    TimingCase,
    cuda_crossover,
    measure,
    measure_case,
    summarize,
    time_call,
)

REPO = Path(__file__).resolve().parents[1]
MEASUREMENT_KEYS = {
    "task", "model", "width", "batch_size", "engine", "k", "device", "dtype", "threads",
    "warmup", "repeats", "epoch_seconds", "epoch_seconds_median", "epoch_seconds_iqr",
    "iqr_over_median", "noisy", "samples_per_second_median", "per_trial_epoch_seconds_median",
    "cuda_event_seconds_median",
}
MACHINE_KEYS = {"host", "cpu_model", "cpu_cores", "threads", "gpu_name", "gpu_driver",
                "torch_version", "cuda_version", "platform"}


class FakeClock:
    """A clock that only moves when a timed body advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_run(clock: FakeClock, durations: list[float]):
    """A `measure` callable whose n-th call lasts durations[n] fake seconds."""
    calls = iter(durations)

    def body() -> None:
        clock.now += next(calls)

    return lambda: [time_call(body, clock=clock)]


# --- statistics ---------------------------------------------------------------------------------

def test_summarize_median_iqr_and_noise_flag() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.iqr) == (3.0, 2.0)
    assert s.iqr_over_median == pytest.approx(2 / 3)
    assert s.noisy
    quiet = summarize([1.00, 1.02, 0.98, 1.01])
    assert quiet.median == pytest.approx(1.005)
    assert quiet.iqr == pytest.approx(0.0175)
    assert not quiet.noisy


def test_summarize_threshold_is_strict_and_empty_is_an_error() -> None:
    # quartiles 3.75 and 4.25 around a median of 4: IQR/median is exactly 0.125
    samples = [3.5, 3.75, 4.0, 4.25, 4.5]
    assert summarize(samples).noisy
    assert not summarize(samples, noisy_above=0.125).noisy
    assert summarize(samples, noisy_above=0.12).noisy
    with pytest.raises(ValueError):
        summarize([])


# --- the repeat loop with a fake clock ------------------------------------------------------------

def test_measure_drops_warmup_and_stops_at_min_time() -> None:
    clock = FakeClock()
    run = fake_run(clock, [9.0, 8.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    samples = measure(run, warmup=2, min_time=2.5, min_repeats=2, max_repeats=10)
    assert samples.seconds == [1.0, 1.0, 1.0]  # the 9 s and 8 s warm-up laps are not kept
    assert samples.warmup == 2 and samples.calls == 5


def test_measure_keeps_min_repeats_even_past_min_time() -> None:
    clock = FakeClock()
    samples = measure(fake_run(clock, [0.0, 5.0, 6.0, 7.0, 8.0]), warmup=1, min_time=1.0,
                      min_repeats=3)
    assert samples.seconds == [5.0, 6.0, 7.0]


def test_measure_caps_at_max_repeats() -> None:
    clock = FakeClock()
    samples = measure(fake_run(clock, [0.001] * 20), warmup=0, min_time=100.0, min_repeats=1,
                      max_repeats=4)
    assert len(samples.laps) == 4 and samples.calls == 4


def test_measure_warmup_spans_calls_with_several_laps() -> None:
    batches = iter([[Lap(9.0), Lap(9.0)], [Lap(9.0), Lap(2.0)], [Lap(3.0), Lap(4.0)]])
    samples = measure(lambda: next(batches), warmup=3, min_time=0.0, min_repeats=3)
    assert samples.seconds == [2.0, 3.0, 4.0]
    assert samples.cuda_seconds is None


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"min_repeats": 0},
                                    {"min_repeats": 5, "max_repeats": 2}, {"min_time": -1.0},
                                    {"min_time": float("nan")}, {"min_time": float("inf")}])
def test_measure_rejects_impossible_settings(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        measure(lambda: [Lap(1.0)], **kwargs)


# --- clock, recorder, threads ----------------------------------------------------------------------

def test_stopwatch_keeps_laps_and_recorder_is_scoped() -> None:
    clock = FakeClock()
    outside = Stopwatch("cpu", clock)
    with record_stopwatches() as watches:
        inside = Stopwatch("cpu", clock)
        for step in (0.5, 0.25):
            with inside.measure():
                clock.now += step
    after = Stopwatch("cpu", clock)
    assert watches == [inside]
    assert outside not in watches and after not in watches
    assert inside.laps == [0.5, 0.25] and inside.seconds == 0.75
    assert inside.cuda_laps == []  # no CUDA events on the CPU


def test_num_threads_sets_and_restores_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError), num_threads(target) as inside:
        assert inside == target == torch.get_num_threads()
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with num_threads(None) as unchanged:
        assert unchanged == before
    with pytest.raises(UsageError), num_threads(0):
        pass


def test_cuda_crossover_pairs_cpu_and_cuda_cells() -> None:
    base = {"task": "moons", "model": "mlp", "width": 16, "batch_size": 64,
            "engine": "reference", "k": 1, "dtype": "float32"}
    rows = cuda_crossover([{**base, "device": "cpu", "epoch_seconds_median": 0.3},
                           {**base, "device": "cuda", "epoch_seconds_median": 0.1},
                           {**base, "width": 32, "device": "cuda", "epoch_seconds_median": 1.0}])
    assert len(rows) == 1
    assert rows[0]["cuda_speedup"] == pytest.approx(3.0)


# --- real timings on the CPU ----------------------------------------------------------------------

def test_measure_case_excludes_warmup_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.engines.reference

    calls: list[int] = []
    real_train = bench.engines.reference.train

    def counting_train(spec, data=None, **kw):
        result = real_train(spec, data, **kw)
        calls.append(result.epochs_run)
        return result

    monkeypatch.setattr(bench.engines.reference, "train", counting_train)
    case = TimingCase("moons", "mlp", 8, None, "reference", 1, "cpu", n_samples=100)
    with num_threads(1):
        result = measure_case(case, epochs=2, warmup=3, min_time=0.0, min_repeats=2)
    # 3 warm-up epochs: the whole first call and the first epoch of the second are dropped.
    assert calls[:2] == [2, 2]
    assert result.samples.warmup == 3
    assert len(result.samples.laps) == 2 * len(calls) - 3 >= 2
    assert result.clock == "engine train clock"
    assert result.batch_size == 100 and result.n_train == 100
    entry = result.to_dict()
    assert set(entry) >= MEASUREMENT_KEYS
    assert entry["cuda_event_seconds_median"] is None
    assert entry["samples_per_second_median"] == pytest.approx(100 / entry["epoch_seconds_median"])


def test_measure_case_warns_when_noisy(monkeypatch: pytest.MonkeyPatch) -> None:
    laps = iter([[Lap(1.0)], [Lap(1.0)], [Lap(2.0)], [Lap(4.0)]])
    monkeypatch.setattr(timing, "engine_laps", lambda *a: (next(laps), "engine train clock"))
    case = TimingCase("moons", "mlp", 8, 10, "reference", 1, "cpu", n_samples=100)
    with pytest.warns(timing.NoisyTimingWarning, match="noisy timing"):
        result = measure_case(case, epochs=1, warmup=1, min_time=0.0, min_repeats=3)
    assert result.samples.seconds == [1.0, 2.0, 4.0]


def _time_args(out: Path, *extra: str) -> list[str]:
    return ["time", "--task", "moons", "--widths", "8", "--batch-sizes", "full",
            "--engines", "dataloader,reference", "--device", "cpu", "--threads", "1",
            "--epochs", "2", "--warmup", "1", "--min-time", "0", "--min-repeats", "2",
            "--max-train", "200", "--out", str(out), *extra]


def test_bench_time_writes_numbered_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    threads_before = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", timing.NoisyTimingWarning)
        assert main(_time_args(tmp_path)) == 0
        assert main(_time_args(tmp_path, "--engines", "reference")) == 0
    assert torch.get_num_threads() == threads_before
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["0001_timing.json", "0002_timing.json"]  # never overwritten
    doc = json.loads((tmp_path / files[0]).read_text())
    assert doc["schema"] == "nnbench.timing/1" and doc["complete"]
    assert {"created", "command", "git_commit", "machine", "measurements"} <= set(doc)
    assert set(doc["machine"]) >= MACHINE_KEYS
    assert doc["machine"]["cpu_cores"] >= 1
    engines = [m["engine"] for m in doc["measurements"]]
    assert engines == ["notebook", "reference"]  # "dataloader" is the notebook engine's former name
    for m in doc["measurements"]:
        assert set(m) >= MEASUREMENT_KEYS
        assert (m["batch_size"], m["threads"], m["device"], m["k"]) == (200, 1, "cpu", 1)
        assert m["repeats"] == len(m["epoch_seconds"]) >= 2
    table = capsys.readouterr().out
    assert "notebook" in table and "samples/s" in table and "0001_timing.json" in table


@pytest.mark.parametrize("extra, message", [
    (["--engines", "turbo"], "unknown engine 'turbo'"),
    (["--task", "nope"], "unknown task 'nope'"),
    (["--batch-sizes", "0"], "--batch-sizes values must be positive"),
    (["--batch-sizes", "big"], "--batch-sizes takes positive integers"),
    (["--k", "0"], "--k must be at least 1"),
    (["--threads", "0"], "--threads values must be positive"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--batch-sizes", "5000"], "nothing to measure: every cell of the grid was skipped (moons "
                                "mlp w8 bs5000 notebook cpu: batch size above the 200 training "
                                "examples; 1 more skipped)"),
    (["--min-time", "nan"], "--min-time must be a finite number >= 0"),
    (["--min-time", "inf"], "--min-time must be a finite number >= 0"),
    (["--min-time=-0.5"], "--min-time must be a finite number >= 0"),
    (["--max-gflop", "nan"], "--max-gflop must be a finite number > 0"),
    (["--max-gflop-cuda", "0"], "--max-gflop-cuda must be a finite number > 0"),
    (["--max-repeats", "1"], "--max-repeats (1) must be at least --min-repeats (2)"),
])
def test_bench_time_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 extra: list[str], message: str) -> None:
    assert main(_time_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench: error: ") and message in err[-1]
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_bench_time_cuda_without_cuda_is_exit_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(_time_args(tmp_path, "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_device_auto_skips_cuda_with_notice(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.commands.time import _devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _devices("auto") == ("cpu",)
    argv = _time_args(tmp_path, "--device", "auto", "--engines", "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", timing.NoisyTimingWarning)
        assert main(argv) == 0
    assert "notice: CUDA is not available here; measuring cpu only" in capsys.readouterr().err


def test_bench_time_runs_without_optuna_pandas_seaborn(tmp_path: Path) -> None:
    # A finder whose modules fail to load: `import optuna` raises ModuleNotFoundError as on a
    # machine without it, while importlib.util.find_spec (which torch calls) still works.
    code = (
        "import sys, importlib.abc, importlib.machinery\n"
        "class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('optuna', 'pandas', 'seaborn'):\n"
        "            return importlib.machinery.ModuleSpec(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'No module named {spec.name!r}', name=spec.name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "try:\n"
        "    import optuna\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit(99)  # the block did not work\n"
        "from bench.cli import main\n"
        f"sys.exit(main({_time_args(tmp_path, '--engines', 'reference')!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(next(tmp_path.glob("*_timing.json")).read_text())
    assert doc["complete"] and doc["measurements"][0]["engine"] == "reference"


def test_batched_engine_timed_per_trial() -> None:
    pytest.importorskip("bench.engines.batched", reason="bench/batched.py is not built yet")
    case = TimingCase("moons", "mlp", 8, None, "batched", 4, "cpu", n_samples=100)
    with num_threads(1):
        result = measure_case(case, epochs=2, warmup=1, min_time=0.0, min_repeats=2)
    entry = result.to_dict()
    assert entry["k"] == 4
    assert entry["per_trial_epoch_seconds_median"] == pytest.approx(
        entry["epoch_seconds_median"] / 4)
    assert entry["samples_per_second_median"] == pytest.approx(
        400 / entry["epoch_seconds_median"])


@pytest.mark.parametrize("argv", [
    ["time", "--quick", "--device", "cpu"],
    ["time", "--device", "cpu", "--model", "bn_mlp_20x3", "--widths", "none", "--threads", "1,2",
     "--max-train", "none", "--batch-sizes", "full,8"],
])
def test_resolved_command_round_trips(argv: list[str]) -> None:
    import shlex

    from bench.cli import build_parser
    from bench.commands.time import parse_grid, resolved_command

    parser = build_parser()
    grid = parse_grid(parser.parse_args(argv))
    again = parse_grid(parser.parse_args(shlex.split(resolved_command(grid, "out"))[1:]))
    assert again == grid


def test_quick_overrides_only_unset_options() -> None:
    from bench.cli import build_parser
    from bench.commands.time import QUICK, parse_grid

    parser = build_parser()
    grid = parse_grid(parser.parse_args(["time", "--quick", "--device", "cpu", "--k", "3"]))
    assert grid.tasks == (QUICK["task"],) and grid.min_time == QUICK["min_time"]
    assert grid.k == 3


def test_bench_time_out_under_a_file_fails_before_measuring(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert main(_time_args(blocker / "timing")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{blocker} is a file, not a folder" in err[0]
    assert blocker.read_text() == "mine"


def test_bench_time_full_disk_is_one_line_and_keeps_what_was_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import errno
    import os

    from bench.commands import time as time_command

    real, calls = time_command.write_json_atomic, []

    def fills_up(path, data):
        calls.append(path)
        if len(calls) > 1:  # the first write (no measurement yet) succeeds, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(time_command, "write_json_atomic", fills_up)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", timing.NoisyTimingWarning)
        assert main(_time_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and "keeps what was written" in err[-1]
    doc = json.loads((tmp_path / "0001_timing.json").read_text())
    assert doc["complete"] is False and doc["measurements"] == []

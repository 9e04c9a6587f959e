"""`bench perf`'s bookkeeping: target verdicts, the table, and the fresh-process memory probe."""

from __future__ import annotations

import pytest

from bench.measure import perf
from bench.measure.perf import WORKLOADS, format_table, peak_memory, target_verdicts


def rows(notebook_ms: float, reference_ms: float, batched: dict[int, float]) -> list[dict]:
    """Measured rows as `measure_workload` makes them (speed-ups from the medians)."""
    out = [{"engine": "notebook", "k": 1, "ms_per_trial_median": notebook_ms},
           {"engine": "reference", "k": 1, "ms_per_trial_median": reference_ms}]
    for k, ms in batched.items():
        out.append({"engine": "batched", "k": k, "ms_per_trial_median": ms,
                    "speedup_vs_notebook": notebook_ms / ms,
                    "speedup_vs_reference": reference_ms / ms})
    return out


def test_moons_targets_are_judged_at_k256_only() -> None:
    # K=64 would meet both targets; only K=256 counts for moons, and it misses the notebook one.
    verdicts = {v["baseline"]: v for v in target_verdicts("moons", rows(100.0, 50.0,
                                                                         {64: 1.0, 256: 2.5}))}
    assert verdicts["notebook"]["k"] == 256 and verdicts["notebook"]["met"] is False
    assert verdicts["notebook"]["speedup"] == pytest.approx(40.0)
    assert verdicts["reference"]["met"] is True and verdicts["reference"]["speedup"] == 20.0


def test_mnist_target_takes_the_best_k_and_reports_missing_engines() -> None:
    (verdict,) = target_verdicts("mnist", rows(1000.0, 600.0, {16: 200.0, 64: 100.0}))
    assert verdict == {"baseline": "reference", "target": 5.0, "k": 64, "speedup": 6.0,
                       "met": True}
    only_batched = [r for r in rows(1.0, 1.0, {64: 1.0}) if r["engine"] == "batched"]
    for r in only_batched:
        del r["speedup_vs_reference"]
    (missing,) = target_verdicts("mnist_fixed", only_batched)
    assert missing["met"] is None and missing["speedup"] is None


def test_table_lists_rows_and_target_lines() -> None:
    results = [{"workload": "moons", "rows": rows(100.0, 50.0, {256: 1.5}),
                "targets": target_verdicts("moons", rows(100.0, 50.0, {256: 1.5}))}]
    results[0]["rows"][2]["peak_rss_growth_mib"] = 12.5
    text = format_table(results)
    assert "moons       batched         256      1.500      12.5       66.7        33.3" in text
    assert "target moons: batched >= 50x notebook per trial -> 66.7x at K=256: met" in text
    assert "target moons: batched >= 10x reference per trial -> 33.3x at K=256: met" in text


def test_peak_memory_of_a_fresh_process_counts_the_engine_allocations(monkeypatch) -> None:
    # 256 moons members need tens of MiB of stacked [K, F, B] buffers in the torch step (the
    # native step needs only per-thread scratch); the subprocess inherits NNBENCH_NATIVE=0.
    monkeypatch.setenv("NNBENCH_NATIVE", "0")
    got = peak_memory("batched", WORKLOADS["moons"].spec.replace(epochs=1), 256, "cpu")
    assert 5.0 < got["peak_rss_growth_mib"] < got["peak_rss_mib"]


def test_torch_step_rows_give_the_native_steps_gain_in_the_same_run(monkeypatch) -> None:
    monkeypatch.setattr(perf, "peak_memory", lambda *args: {})
    spec = WORKLOADS["moons"].spec.replace(epochs=1, n_samples=200)
    workload = perf.Workload("moons", "tiny moons", spec, None)
    res = perf.measure_workload(workload, device="cpu", ks=[4], repeats=1, quick=False,
                                engines=("batched", perf.TORCH_STEP), log=lambda line: None)
    rows = {r["engine"]: r for r in res["rows"]}
    assert rows[perf.TORCH_STEP]["step"] == "torch" and rows["batched"]["step"] == "native"
    assert rows["batched"]["speedup_vs_torch_step"] == pytest.approx(
        rows[perf.TORCH_STEP]["ms_per_trial_median"] / rows["batched"]["ms_per_trial_median"])
    assert "x torch step" in perf.format_table([res])


@pytest.mark.parametrize("argv, message", [
    (["--out-dir", "/dev/null/perf"], "/dev/null is a file, not a folder"),
    (["--threads", "0"], "--threads must be between 1 and"),
    (["--repeats", "0"], "--repeats must be between 1 and"),
    (["--ks", "0"], "--ks values must be positive"),
])
def test_bad_perf_options_fail_before_measuring(argv: list[str], message: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    def never(*args, **kwargs):
        raise AssertionError("measured despite a bad option")

    monkeypatch.setattr(perf, "measure_workload", never)
    assert main(["perf", "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("argv, expected", [
    (["perf", "--sweep", "0"], "between 1 and 100,000"),
    (["perf", "--sweep", "4", "--pruning", "4"], "give one of them"),
])
def test_sweep_benchmark_bad_input_is_one_line_exit_2(argv, expected, tmp_path, capsys):
    from bench.cli import main

    assert main([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_sweep_benchmark_reports_the_split_and_overhead_figures(tmp_path):
    from bench.sweeps.speed import measure_sweep

    figures = measure_sweep(trials=6, seeds=2, group=4, folder=tmp_path)
    assert figures["finished"] == 6
    parts = [figures[k] for k in ("engine_seconds", "sampler_seconds", "storage_seconds",
                                  "other_seconds")]
    assert all(p >= 0 for p in parts) and figures["engine_seconds"] > 0
    assert sum(parts) <= figures["sweep_seconds"] * 1.05
    assert 0 < figures["outside_engine_share"] < 1
    assert figures["overhead_ms_per_trial_first_256"] > 0


def test_pruning_benchmark_repeats_the_same_work_and_takes_medians(tmp_path):
    import statistics

    from bench.sweeps.speed import measure_pruning

    figures = measure_pruning(trials=6, group=3, folder=tmp_path, repeats=3)
    none, band = figures["none"], figures["hyperband"]
    assert none["finished"] == band["finished"] == 6 and figures["repeats"] == 3
    assert none["each_member_epochs"] == [6 * 3 * 27] * 3
    assert len(set(band["each_member_epochs"])) == 1  # every repeat trains the same epochs
    assert band["each_member_epochs"][0] == band["member_epochs"] < none["member_epochs"]
    for study in (none, band):
        assert len(study["each_seconds"]) == 3
        assert study["seconds"] == round(statistics.median(study["each_seconds"]), 2) or \
            abs(study["seconds"] - statistics.median(study["each_seconds"])) < 0.011
    ratios = figures["each_time_ratio"]
    assert len(ratios) == 3 and abs(figures["time_ratio"] - statistics.median(ratios)) < 0.011
    assert none["cpu_seconds"] > 0 and band["cpu_seconds"] > 0 and figures["cpu_time_ratio"] > 0
    verdicts = {t["figure"]: t for t in figures["targets"]}
    assert set(verdicts) == {"member_epochs_ratio", "time_ratio", "best_gap"}
    for key, t in verdicts.items():
        assert abs(t["measured"] - figures[key]) < 0.011
        assert t["met"] is None  # the targets are stated for 192 trials, not 6


def test_pruning_verdicts_say_met_and_not_met() -> None:
    from bench.sweeps.speed import pruning_verdicts

    met = pruning_verdicts({"member_epochs_ratio": 2.8, "time_ratio": 2.0, "best_gap": 0.0}, 192)
    assert all(t["met"] is True for t in met)
    missed = pruning_verdicts({"member_epochs_ratio": 2.4, "time_ratio": 1.996,
                               "best_gap": 0.0101}, 192)  # judged before rounding
    assert all(t["met"] is False for t in missed)
    assert all(t["met"] is None for t in pruning_verdicts(
        {"member_epochs_ratio": 2.8, "time_ratio": 2.0, "best_gap": 0.0}, 12))

"""Sweeps: storage schema, objective = mean over seeds, resume, divergence, CUDA handling,
a killed worker, several workers, and plain-Optuna readability in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.sweeps.optuna_study import open_study
from bench.sweeps.storage import open_storage
from bench.sweeps.study import load_study_file
from bench.sweeps.sweep import sweep
from bench.sweeps.trials import decode_runs, is_finished

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
task = "linear"
trials = {trials}
seeds = 2
group = {group}
sampler = {{ name = "random", seed = 0 }}

[fixed]
hidden = [4]
batch_size = 20
epochs = {epochs}
{fixed}

[space]
optimizer = ["sgd", "adam"]
lr = {{ low = 1e-3, high = 0.5, log = true }}
{space}
"""


def study_file(tmp_path: Path, name: str = "small", *, trials: int = 3, group: int = 4,
               epochs: int = 2, fixed: str = "", space: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(SMALL.format(trials=trials, group=group, epochs=epochs,
                                                 fixed=fixed, space=space)))
    return path


def load(storage: Path, name: str = "small"):
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(str(storage)))


def test_storage_schema_and_objective_is_mean_over_seeds(tmp_path):
    storage = tmp_path / "optuna.journal"
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(storage),
                 "--quiet"]) == 0
    study = load(storage)
    attrs = study.user_attrs
    assert attrs["task"] == "linear" and attrs["model"] == "mlp"
    assert attrs["objective"] == "val_accuracy" and attrs["directions"] == ["maximize"]
    assert attrs["study_file"].endswith("small.toml")
    assert attrs["nnbench_study"]["seeds"] == 2
    json.dumps(attrs["nnbench_study"])
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        assert set(t.params) == {"optimizer", "lr"}
        runs = decode_runs(t.user_attrs["runs"])
        assert [r["seed"] for r in runs] == [0, 1]
        assert t.user_attrs["end"]["objective"] == "val_accuracy"
        for r in runs:
            assert r["host"] and r["device"] == "cpu"
            assert r["spec"]["lr"] == t.params["lr"] and r["spec"]["optimizer"] == \
                t.params["optimizer"]
            assert len(r["curves"]["val_accuracy"]) == 2 and "train_seconds" in r["timing"]
        assert t.value == pytest.approx(np.mean([r["metrics"]["val_accuracy"] for r in runs]))


def test_rerun_resumes_keeps_trials_and_stops_at_target(tmp_path):
    path, storage = study_file(tmp_path, group=2), tmp_path / "optuna.journal"
    assert main(["sweep", str(path), "--storage", str(storage), "--trials", "2",
                 "--quiet"]) == 0
    first = {t.number: (t.params, t.value) for t in load(storage).trials}
    assert main(["sweep", str(path), "--storage", str(storage), "--trials", "5",
                 "--quiet"]) == 0
    assert main(["sweep", str(path), "--storage", str(storage), "--trials", "5",
                 "--quiet"]) == 0  # nothing left to do
    trials = load(storage).trials
    assert len(trials) == 5 and sum(is_finished(t) for t in trials) == 5
    assert {n: (t.params, t.value) for t in trials if (n := t.number) in first} == first


def test_changed_study_settings_are_refused(tmp_path, capsys):
    storage = tmp_path / "optuna.journal"
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(storage), "--trials", "1",
                 "--quiet"]) == 0
    code = main(["sweep", str(study_file(tmp_path, epochs=3)), "--storage", str(storage),
                 "--quiet"])
    assert code == 2
    assert "made from different settings (fixed changed)" in capsys.readouterr().err


def test_diverged_trial_is_failed_with_reason_and_counted(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(textwrap.dedent("""
        task = "regression"
        model = "linear"
        trials = 2
        seeds = 2
        objective = "val_mse"
        sampler = "grid"
        [fixed]
        optimizer = "sgd"
        epochs = 5
        [space]
        lr = [100.0, 1000.0]
    """))
    summary = sweep(load_study_file(path), str(tmp_path / "s.journal"), quiet=True)
    assert summary.finished == 2 and summary.states == {"DIVERGED": 2}
    for t in load(tmp_path / "s.journal").trials:
        assert t.state.name == "FAIL"
        assert t.user_attrs["failure_reason"].startswith("diverged at epoch ")
        assert "(seeds 0, 1)" in t.user_attrs["failure_reason"]
        assert all(r["diverged"] for r in decode_runs(t.user_attrs["runs"]))


def test_cuda_trials_without_cuda_are_pruned_with_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: cuda trials run instead of being pruned")
    path = study_file(tmp_path, trials=4, space='device = ["cpu", "cuda"]')
    text = path.read_text().replace('name = "random"', 'name = "grid"').replace(
        "lr = { low = 1e-3, high = 0.5, log = true }", "lr = [0.1]")
    path.write_text(text)
    summary = sweep(load_study_file(path), str(tmp_path / "s.journal"), quiet=True)
    assert summary.finished == 4 and summary.states == {"COMPLETE": 2, "PRUNED": 2}
    for t in load(tmp_path / "s.journal").trials:
        if t.params["device"] == "cuda":
            assert "device 'cuda' is not available" in t.user_attrs["failure_reason"]
        else:
            assert t.state.name == "COMPLETE"


def test_pruner_verdict_is_recorded_after_training(tmp_path):
    # Median pruner after one start-up trial; two learning trials (lr 0.3) are enqueued first,
    # so the two that cannot learn (lr 1e-6) fall below their median curve and are pruned.
    path = study_file(tmp_path, trials=4, group=1, epochs=6)
    text = path.read_text().replace(
        "lr = { low = 1e-3, high = 0.5, log = true }", "lr = [0.3, 1e-6]").replace(
        "group = 1", 'group = 1\npruner = { name = "median", startup_trials = 1 }')
    path.write_text(text)
    spec, storage = load_study_file(path), tmp_path / "s.journal"
    study = open_study(spec, open_storage(str(storage)))
    for lr in (0.3, 0.3, 1e-6, 1e-6):
        study.enqueue_trial({"optimizer": "adam", "lr": lr})
    summary = sweep(spec, str(storage), quiet=True)
    assert summary.finished == 4
    trials = load(tmp_path / "s.journal").trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert [t.params["lr"] for t in pruned] == [1e-6, 1e-6], [(t.params, t.state) for t in trials]
    for t in pruned:
        assert t.user_attrs["failure_reason"].startswith("pruned at epoch ")
        assert t.intermediate_values and decode_runs(t.user_attrs["runs"])


def test_study_loads_in_a_separate_process_with_plain_optuna(tmp_path):
    storage = tmp_path / "optuna.journal"
    assert main(["sweep", str(study_file(tmp_path, trials=2)), "--storage", str(storage),
                 "--quiet"]) == 0
    code = textwrap.dedent(f"""
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        storage = JournalStorage(JournalFileBackend({str(storage)!r}))
        study = optuna.load_study(study_name="small", storage=storage)
        df = study.trials_dataframe()
        print(len(df), sorted(c for c in df.columns if c.startswith("params_")),
              study.user_attrs["objective"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "2 ['params_lr', 'params_optimizer'] val_accuracy"


TPE_SAMPLER = 'sampler = { name = "tpe", seed = 0, startup_trials = 2 }'


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_killed_worker_then_rerun_with_two_workers_loses_and_duplicates_nothing(tmp_path,
                                                                                sampler):
    """kill -9 mid-study, then two workers finish it: nothing lost or counted twice. With TPE
    past its start-up trials the worker creates each trial in one record from the group's
    drawn values (`Worker._create_running`), so both ways of creating trials are covered."""
    path = study_file(tmp_path, trials=8, group=1, epochs=40)
    if sampler == "tpe":
        path.write_text(path.read_text().replace('sampler = { name = "random", seed = 0 }',
                                                 TPE_SAMPLER))
    storage = tmp_path / "optuna.journal"
    cmd = [sys.executable, "-m", "bench", "sweep", str(path), "--storage", str(storage),
           "--quiet", "--engine", "reference"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done: dict[int, tuple] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:  # the journal file exists a moment before the study is written into it
                trials = load(storage).trials if storage.exists() else []
            except KeyError:
                trials = []
            done = {t.number: (t.params, t.value) for t in trials if t.state.name == "COMPLETE"}
            if len(done) >= 2:
                break
        assert proc.poll() is None, f"worker ended before it could be killed: {proc.stderr}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = {t.number: (t.params, t.value) for t in load(storage).trials
              if t.state.name == "COMPLETE"}
    assert len(before) >= 2 and len(before) < 8

    assert main(["sweep", str(path), "--storage", str(storage), "--workers", "2",
                 "--quiet"]) == 0
    trials = load(storage).trials
    complete = {t.number: (t.params, t.value) for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) == 8 and sum(is_finished(t) for t in trials) == 8
    assert {n: v for n, v in complete.items() if n in before} == before
    for t in trials:
        reason = t.user_attrs.get("failure_reason", "")
        if t.state.name == "FAIL" and reason.startswith("skipped"):
            # the two new workers raced for the last trials: the one beyond the target is told
            # FAIL before any training (as on PostgreSQL, tests/test_sweep_postgres.py)
            assert "runs" not in t.user_attrs
        elif t.state.name == "FAIL":  # the killed worker's trial in flight, failed on rerun
            assert "stopped before finishing" in reason
        else:
            assert len(decode_runs(t.user_attrs["runs"])) == 2
    hosts_pids = {tuple(t.user_attrs["worker"].values()) for t in trials}
    assert len(hosts_pids) >= 2  # the killed worker and at least one of the new ones


def test_sweep_ends_with_its_time_split(tmp_path, capsys):
    """`bench sweep` prints where its time went; the four parts add up to the whole."""
    path = study_file(tmp_path, trials=4, group=2)
    assert main(["sweep", str(path), "--storage", str(tmp_path / "j.journal")]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.strip().startswith("time ")]
    assert len(line) == 1
    import re

    total, *parts = (float(v) for v in re.findall(r"([\d.]+) s", line[0]))
    assert [w for w in re.findall(r"(\w+) [\d.]+ s \(", line[0])] == [
        "engine", "sampler", "storage", "other"]
    assert all(p >= 0 for p in parts) and abs(sum(parts) - total) <= 0.2 + 0.01 * total
    spec = load_study_file(path)
    stats = sweep(spec.with_overrides(trials=6), str(tmp_path / "j.journal"), quiet=True).stats
    assert stats.train_seconds > 0 and stats.sampler_seconds > 0 and stats.storage_seconds > 0
    assert sum(n for n, _ in stats.groups) == 2 and all(sec > 0 for _, sec in stats.groups)
    assert stats.overhead_per_trial(first=True) == stats.groups[0][1] / 2


def test_conditional_space_stores_only_the_parameters_that_applied(tmp_path):
    """`momentum` only for sgd, `betas` only for adam: each trial stores exactly the
    parameters whose condition held, its runs train with the defaults for the others, and the
    sampler is TPE's multivariate, grouped model."""
    path = study_file(tmp_path, trials=12, group=4, space=(
        'momentum = { low = 0.0, high = 0.9, when = { optimizer = "sgd" } }\n'
        'betas = { choices = [[0.9, 0.999], [0.8, 0.99]], when = { optimizer = ["adam"] } }'))
    spec = load_study_file(path)
    assert spec.conditional
    sweep(spec, str(tmp_path / "c.journal"), quiet=True)
    trials = load(tmp_path / "c.journal").get_trials()
    kinds = set()
    for t in trials:
        assert t.state.name == "COMPLETE"
        expected = {"optimizer", "lr", "momentum" if t.params["optimizer"] == "sgd" else "betas"}
        assert set(t.params) == expected
        kinds.add(t.params["optimizer"])
        run = decode_runs(t.user_attrs["runs"])[0]["spec"]
        if t.params["optimizer"] == "adam":
            assert run["momentum"] == 0.0
        else:
            assert run["betas"] == [0.9, 0.999] and run["momentum"] == t.params["momentum"]
    assert kinds == {"sgd", "adam"}

    import dataclasses

    import optuna

    from bench.sweeps.optuna_study import make_sampler

    given = {}
    real = optuna.samplers.TPESampler

    def record(**kwargs):
        given.update(kwargs)
        return real(**kwargs)

    optuna.samplers.TPESampler = record
    try:
        make_sampler(dataclasses.replace(spec, sampler="tpe"), 0)
    finally:
        optuna.samplers.TPESampler = real
    assert given["multivariate"] and given["group"] and given["constant_liar"]


@pytest.mark.parametrize("engine", ["batched", "reference"])
def test_pruning_stops_trials_mid_training_and_records_why(tmp_path, engine):
    """Every epoch each trial reports the mean over its seeds; a pruned trial's seeds stop at
    that epoch, keep their partial curves, and the trial records the epoch and the pruner."""
    path = study_file(tmp_path, trials=16, group=8, epochs=8, fixed="n_samples = 200",
                      space="")
    text = path.read_text().replace('sampler = { name = "random", seed = 0 }',
                                    'sampler = { name = "random", seed = 0 }\n'
                                    'pruner = { name = "percentile", percentile = 60, '
                                    'startup_trials = 0, warmup_epochs = 1 }')
    text = text.replace("lr = { low = 1e-3, high = 0.5, log = true }",
                        "lr = { low = 1e-5, high = 0.5, log = true }")
    path.write_text(text)
    spec = load_study_file(path)
    summary = sweep(spec, str(tmp_path / "p.journal"), quiet=True, engine=engine)
    assert summary.finished == 16
    trials = load(tmp_path / "p.journal").get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete
    for t in pruned:
        end = t.user_attrs["end"]
        assert end["kind"] == "pruned" and end["pruner"] == "percentile"
        assert 2 <= end["epoch"] < 8  # warm-up: never at epoch 1; before the last epoch
        assert sorted(t.intermediate_values) == list(range(1, end["epoch"] + 1))
        runs = decode_runs(t.user_attrs["runs"])
        # the batched engine trains the seeds together: all stop at once; the reference engine
        # trains them one after another, so the mean is known (and the stop comes) at the last
        stopped = runs if engine == "batched" else runs[-1:]
        for run in runs:
            assert len(run["curves"]["val_accuracy"]) == run["epochs_run"] >= end["epoch"]
        for epoch, value in t.intermediate_values.items():  # the mean over seeds
            seeds = [run["curves"]["val_accuracy"][epoch - 1] for run in runs]
            assert value == pytest.approx(sum(seeds) / len(seeds), rel=1e-12)
        assert all(run["epochs_run"] == end["epoch"] for run in stopped)
    for t in complete:
        assert t.user_attrs["end"] == {"objective": "val_accuracy", "kind": "complete"}
        assert sorted(t.intermediate_values) == list(range(1, 9))
        assert all(run["epochs_run"] == 8 for run in decode_runs(t.user_attrs["runs"]))


@pytest.mark.slow
def test_two_workers_with_pruning_reach_the_target_exactly_once(tmp_path):
    """Trials pruned mid-group by two workers at once are each told once, and the study stops
    at its target."""
    path = study_file(tmp_path, trials=12, group=3, epochs=6, fixed="n_samples = 200")
    path.write_text(path.read_text().replace(
        'sampler = { name = "random", seed = 0 }',
        'sampler = { name = "random", seed = 0 }\n'
        'pruner = { name = "median", startup_trials = 0, warmup_epochs = 1 }'))
    summary = sweep(load_study_file(path), str(tmp_path / "w.journal"), workers=2, quiet=True)
    assert summary.ok and summary.worker_exit_codes == [0, 0]
    trials = load(tmp_path / "w.journal").get_trials()
    finished = [t for t in trials if is_finished(t)]
    assert len(finished) == 12
    assert all(t.user_attrs["end"]["kind"] in ("complete", "pruned") for t in finished)
    assert all(t.state.name != "RUNNING" for t in trials)


def test_two_d_sweeps_keep_final_parameters_that_equal_a_retrained_run(tmp_path):
    """On a 2-D classification task each run keeps its final state dict (small models), bit
    for bit what training produced, so the report draws boundaries without retraining."""
    import torch

    from bench.engines.reference import train
    from bench.report.boundaries import stored_for_boundary
    from bench.results import decode_params, encode_params
    from bench.spec import RunSpec

    path = tmp_path / "moons2d.toml"
    path.write_text(textwrap.dedent("""
        task = "moons"
        trials = 2
        seeds = 2
        sampler = { name = "random", seed = 0 }
        [fixed]
        n_samples = 200
        hidden = [8]
        batch_norm = true
        epochs = 3
        batch_size = 50
        [space]
        lr = { low = 0.01, high = 0.5, log = true }
    """))
    sweep(load_study_file(path), str(tmp_path / "k.journal"), quiet=True, engine="reference")
    run = decode_runs(load(tmp_path / "k.journal", "moons2d").get_trials()[0].user_attrs["runs"])[1]
    kept = decode_params(run["final_params"])
    again = train(RunSpec.from_dict(run["spec"]), keep_params=True).params
    assert kept.keys() == again.keys()
    assert all(torch.equal(kept[k], again[k]) for k in kept)  # dtypes and int buffers too
    # the report evaluates the kept parameters in NumPy: the module's function, without torch
    from bench.engines.setup import build_model, plan_run, predict

    spec = RunSpec.from_dict(run["spec"])
    plan = plan_run(spec, 200)
    module = build_model(spec, plan)
    module.load_state_dict(again)
    numpy_predict, head, _, (x_val, _) = stored_for_boundary(run)
    assert head == plan.head and x_val.dtype == np.float32
    torch_out = predict(module, torch.from_numpy(x_val), plan.head).numpy()
    np.testing.assert_allclose(numpy_predict(x_val), torch_out, rtol=1e-5, atol=1e-6)
    assert encode_params({"w": torch.zeros(30_000)}) is None  # large models keep nothing
    first, second = load(tmp_path / "k.journal", "moons2d").get_trials()
    runs = decode_runs(second.user_attrs["runs"])  # kept only if it is as good as the first
    assert all(("final_params" in r) == (second.value >= first.value) for r in runs)
    # a regression (not 2-D classification) sweep keeps none
    path2 = study_file(tmp_path, "reg", trials=1)
    path2.write_text(path2.read_text().replace('task = "linear"', 'task = "regression"'))
    sweep(load_study_file(path2), str(tmp_path / "k.journal"), quiet=True)
    assert all("final_params" not in r
               for r in decode_runs(load(tmp_path / "k.journal", "reg").get_trials()[0].user_attrs["runs"]))


def test_with_seed_equals_the_validated_replace():
    from bench.spec import RunSpec
    from bench.sweeps.sweep import with_seed

    spec = RunSpec(task="moons", model="mlp", hidden=(8, 4), lr=0.3, epochs=2, seed=0)
    for seed in (1, 7, 2**32 - 1):
        fast = with_seed(spec, seed)
        assert fast == spec.replace(seed=seed)
        assert fast.to_dict() == spec.replace(seed=seed).to_dict()
    assert spec.seed == 0  # the original is untouched


@pytest.mark.parametrize("engine", ["batched", "reference"])
def test_pruning_reports_of_an_epoch_share_one_lock_that_is_free_while_training(engine, tmp_path):
    """The pruning hook holds the journal lock across one epoch's burst of reports and
    releases it when the engine has recorded the epoch (`epoch_done`), never while training."""
    from bench.engines.registry import train_specs as real_train
    from bench.sweeps import sweep as sweep_module
    from bench.sweeps.study import load_study_file

    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent("""
        task = "moons"
        model = "mlp"
        trials = 6
        seeds = 2
        group = 3
        pruner = { name = "median", startup_trials = 1, warmup_epochs = 1 }
        sampler = { name = "random", seed = 0 }
        [fixed]
        hidden = [8]
        epochs = 4
        [space]
        lr = { low = 0.001, high = 1.0, log = true }
    """))
    lock = tmp_path / "o.journal.lock"
    during: list[bool] = []  # lock held when a report arrives (inside a burst)
    after: list[bool] = []  # lock held once the engine said the epoch is recorded

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, report):
            during.append(lock.exists())
            return self.inner(report)

        def epoch_done(self):
            self.inner.epoch_done()
            after.append(lock.exists())

    def spy(specs, engine_name, on_epoch=None, **kw):
        return real_train(specs, engine, on_epoch=Spy(on_epoch), **kw)

    original = sweep_module.train_specs
    sweep_module.train_specs = spy
    try:
        summary = sweep_module.sweep(load_study_file(path), str(tmp_path / "o.journal"),
                                     quiet=True)
    finally:
        sweep_module.train_specs = original
    assert summary.finished == 6
    assert after and not any(after)  # free after every burst: never held while training
    if engine == "batched":  # a burst holds several trials' reports: the lock is shared
        assert any(during)



def test_tpe_groups_create_their_trials_from_the_drawn_values(tmp_path, monkeypatch):
    """Past TPE's start-up trials, a group's trials are created directly with the values the
    group sampler drew (one record each), and read back like asked ones."""
    from bench.sweeps.sweep import Worker

    created = []
    real = Worker._create_running

    def counting(self, params, worker):
        trial = real(self, params, worker)
        created.append((trial.number, params))
        return trial

    monkeypatch.setattr(Worker, "_create_running", counting)
    path = study_file(tmp_path, trials=10, group=4, epochs=2)
    path.write_text(path.read_text().replace('sampler = { name = "random", seed = 0 }',
                                             TPE_SAMPLER))
    summary = sweep(load_study_file(path), str(tmp_path / "t.journal"), quiet=True)
    assert summary.finished == 10
    trials = {t.number: t for t in load(tmp_path / "t.journal").get_trials()}
    assert len(created) == 6  # group 1 (4) is the random start-up, asked; 4 + 2 drawn
    for number, params in created:
        t = trials[number]
        assert t.params == params and t.state.name == "COMPLETE"
        assert t.user_attrs["worker"]["pid"] == os.getpid()
        assert set(t.distributions) == {"optimizer", "lr"}
        assert len(decode_runs(t.user_attrs["runs"])) == 2



def test_final_parameters_are_kept_for_the_best_of_each_optimizer_so_far(tmp_path):
    """A complete trial keeps its runs' final parameters when it scores at least as well as
    every earlier complete trial with its optimizer: the best trial of each optimizer (what
    the report's decision-boundary chart draws) always has them, worse ones do not."""
    path = tmp_path / "opt2d.toml"
    path.write_text(textwrap.dedent("""
        task = "moons"
        trials = 10
        seeds = 2
        group = 3
        sampler = { name = "random", seed = 1 }
        [fixed]
        n_samples = 200
        hidden = [8]
        epochs = 3
        batch_size = 50
        [space]
        optimizer = ["sgd", "adam"]
        lr = { low = 0.001, high = 0.5, log = true }
    """))
    sweep(load_study_file(path), str(tmp_path / "o.journal"), quiet=True)
    trials = sorted(load(tmp_path / "o.journal", "opt2d").get_trials(), key=lambda t: t.number)
    best_so_far: dict[str, float] = {}
    dropped = 0
    for t in trials:
        runs = decode_runs(t.user_attrs["runs"])
        kept = {("final_params" in r) for r in runs}
        assert len(kept) == 1  # all seeds of a trial or none
        if t.state.name != "COMPLETE":
            assert kept == {False}
            continue
        opt = t.params["optimizer"]
        expected = opt not in best_so_far or t.value >= best_so_far[opt]
        assert kept == {expected}, (t.number, opt, t.value, best_so_far)
        dropped += not expected
        best_so_far[opt] = max(best_so_far.get(opt, t.value), t.value)
    assert dropped > 0  # the study is large enough to show both cases
    for opt, value in best_so_far.items():
        best = max((t for t in trials if t.state.name == "COMPLETE"
                    and t.params["optimizer"] == opt), key=lambda t: t.value)
        assert best.value == value
        assert all("final_params" in r for r in decode_runs(best.user_attrs["runs"]))


@pytest.mark.parametrize("flag, value, words", [
    ("--workers", "100000", "--workers must be between 1 and"),
    ("--workers", "0", "--workers must be between 1 and"),
    ("--threads", "100000", "--threads must be between 1 and"),
])
def test_worker_and_thread_counts_beyond_the_machine_are_refused(tmp_path, capsys, flag, value,
                                                                 words):
    storage = tmp_path / "s.journal"
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(storage), flag, value,
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not storage.exists()


@pytest.mark.parametrize("fixed, space, refused", [
    ("", 'batch_size = [1000, 2000]', "space.batch_size: 1000 is above the training set"),
    ("", 'batch_size = [8, 2000]', None),  # one choice fits: the others are "cannot run"
    ("", 'batch_size = [2000, "full"]', None),  # full batch fits any training set
    ("", "batch_size = { low = 900, high = 1000 }", "space.batch_size: 900 is above"),
    ("n_samples = 20", "", None),  # a batch of 20 fits a training set of 20
    ("n_samples = 15", "", "fixed.batch_size: 20 is above the training set of linear"),
    # the data seed varies: each trial's training set is checked with its own seed
    ("", "batch_size = [1000]\ndata_seed = [0, 1]", None),
])
def test_a_batch_size_no_trial_can_take_is_refused_before_the_storage_exists(
        tmp_path, capsys, fixed, space, refused):
    path = study_file(tmp_path, trials=1, epochs=1, fixed=fixed, space=space)
    if space:  # the batch size is varied: drop the fixed one
        path.write_text(path.read_text().replace("batch_size = 20\n", ""))
    storage = tmp_path / "s.journal"
    code = main(["sweep", str(path), "--storage", str(storage), "--quiet"])
    err = capsys.readouterr().err
    if refused is None:
        assert code == 0 and storage.exists()
    else:
        assert code == 2 and refused in err and err.count("\n") == 1 and not storage.exists()


@pytest.mark.parametrize("shared", [False, True])
def test_data_that_cannot_load_here_is_refused_unless_another_host_may_have_it(
        tmp_path, monkeypatch, shared):
    """On a journal or SQLite file every trial would be 'cannot run here' and count towards the
    target; on a shared database another worker's host may have the data."""
    from bench.errors import DataUnavailableError
    from bench.sweeps import sweep as sweep_module

    def unavailable(*args, **kwargs):
        raise DataUnavailableError("mnist not found; install it")

    monkeypatch.setattr(sweep_module, "load_data", unavailable)
    spec = load_study_file(study_file(tmp_path))
    if shared:
        assert sweep_module.check_data(spec, shared=True) is None  # the trials say why
    else:
        with pytest.raises(DataUnavailableError, match="mnist not found; install it"):
            sweep_module.check_data(spec)


def test_a_sweep_on_a_data_set_missing_here_stores_nothing(tmp_path, capsys, monkeypatch):
    from bench.errors import DataUnavailableError
    from bench.sweeps import sweep as sweep_module

    def unavailable(*args, **kwargs):
        raise DataUnavailableError("the data set is not installed here; install it")

    monkeypatch.setattr(sweep_module, "load_data", unavailable)
    storage = tmp_path / "s.journal"
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(storage), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not installed here; install it" in err and err.count("\n") == 1
    assert not storage.exists()

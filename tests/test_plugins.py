"""Plugins: files and modules that register tasks and models, loaded only from what the user
names (--plugin, a study's `plugins`, installed entry points), recorded with their hash."""

from __future__ import annotations

import hashlib
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.catalog import plugins, registry
from bench.cli import main
from bench.errors import UsageError
from bench.spec import RunSpec
from bench.sweeps.study import load_study_file

PLUGIN = '''
import numpy as np
import torch
from torch import nn

import bench


@bench.register_task("ring", kind="binary")
def ring(data_seed):
    """points inside or outside the unit circle"""
    rng = np.random.default_rng(data_seed)
    x = rng.uniform(-1.5, 1.5, size=(200, 2))
    return torch.as_tensor(x), torch.as_tensor((np.hypot(x[:, 0], x[:, 1]) < 1).astype(int))


@bench.register_task("split3")
def split3(data_seed):
    rng = np.random.default_rng(data_seed)
    pair = lambda n: (rng.normal(size=(n, 1, 2, 2)), np.arange(n) % 3)
    return {"train": pair(60), "val": pair(21), "test": pair(30)}


@bench.register_model("tiny")
def tiny(input_shape, n_outputs):
    """one hidden tanh layer of 6"""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 6), nn.Tanh(),
                         nn.Linear(6, n_outputs))
'''


@pytest.fixture(autouse=True)
def fresh_registry():
    plugins.reset_for_tests()
    yield
    plugins.reset_for_tests()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_plugin_file_registers_tasks_and_models_with_their_origin(tmp_path: Path) -> None:
    path = write(tmp_path / "plug.py", PLUGIN)
    record = plugins.load_plugin(str(path))
    assert record == {"source": str(path.resolve()), "sha256": sha(path)}
    assert plugins.plugin_records() == [record]
    assert plugins.load_plugin(str(path)) == record  # loading again does nothing
    assert plugins.plugin_records() == [record]
    ring = registry.get_task("ring")
    assert (ring.kind, ring.input_shape, ring.n_classes) == ("binary", (2,), 2)
    assert ring.origin == f"plugin {path.resolve()}"
    assert ring.description == "points inside or outside the unit circle"
    split3 = registry.get_task("split3")
    assert (split3.kind, split3.input_shape, split3.n_classes) == ("multiclass", (1, 2, 2), 3)
    tiny = registry.get_model("tiny")
    assert tiny.factory is not None and tiny.origin == f"plugin {path.resolve()}"
    assert "ring" in registry.tasks() and "tiny" in registry.models()


def test_plugin_tasks_split_like_data_files_and_explicit_splits_stay(tmp_path: Path) -> None:
    from bench.catalog.tasks import load_task

    plugins.load_plugin(str(write(tmp_path / "plug.py", PLUGIN)))
    data = load_task("ring", data_seed=2)
    assert (data.n_train, len(data.y_val), len(data.y_test)) == (120, 40, 40)
    assert not np.allclose(data.x_train.numpy(), load_task("ring", data_seed=3).x_train.numpy())
    explicit = load_task("split3")
    assert (explicit.n_train, len(explicit.y_val), len(explicit.y_test)) == (60, 21, 30)
    assert tuple(explicit.x_train.shape) == (60, 1, 2, 2)


def test_plugin_task_and_model_train_and_bench_list_names_the_plugin(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "plug.py", PLUGIN)
    assert main(["list", "--plugin", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"ring             [binary, 2 inputs, metric accuracy] points inside or outside the " \
           f"unit circle (from plugin {path.resolve()})" in out
    assert f"one hidden tanh layer of 6 (from plugin {path.resolve()})" in out
    assert "  moons " in out and "(from built-in)" not in out
    assert main(["run", "--plugin", str(path), "--task", "ring", "--model", "tiny", "--loss",
                 "bce", "--epochs", "3", "--engine", "reference"]) == 0
    assert capsys.readouterr().out.startswith("ring / tiny / bce")


def test_a_failing_plugin_is_one_line_naming_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.py", '''
        import bench

        @bench.register_task("half_done")
        def half_done(data_seed):
            return [[0.0]] * 10, [0, 1] * 5

        1 / 0
        ''')
    with pytest.raises(UsageError) as caught:
        plugins.load_plugin(str(path))
    assert str(caught.value) == (f"plugin {path.resolve()} failed to import: ZeroDivisionError: "
                                 "division by zero")
    assert "half_done" not in registry.tasks() and plugins.plugin_records() == []
    exits = write(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(UsageError, match=r"exits\.py failed to import: SystemExit: 3"):
        plugins.load_plugin(str(exits))
    with pytest.raises(UsageError, match=r"plugin .*absent\.py not found"):
        plugins.load_plugin(str(tmp_path / "absent.py"))


def test_names_that_clash_are_one_line_errors(tmp_path: Path) -> None:
    builtin = write(tmp_path / "builtin.py", '''
        import bench

        @bench.register_task("moons")
        def moons(data_seed):
            return [[0.0]] * 10, [0, 1] * 5
        ''')
    with pytest.raises(UsageError) as caught:
        plugins.load_plugin(str(builtin))
    assert str(caught.value) == (f"plugin {builtin.resolve()} registers task 'moons', which is "
                                 "a built-in task; rename it in the plugin")
    first = write(tmp_path / "a.py", PLUGIN)
    second = write(tmp_path / "b.py", PLUGIN)
    plugins.load_plugin(str(first))
    with pytest.raises(UsageError) as caught:
        plugins.load_plugin(str(second))
    assert str(caught.value) == (f"plugin {second.resolve()} registers task 'ring', already "
                                 f"registered by plugin {first.resolve()}; rename one of them")
    with pytest.raises(UsageError, match="must be a non-empty identifier"):
        plugins.register_task("two words")
    with pytest.raises(UsageError, match=r"register_task\('odd'\): unknown kind 'ordinal'"):
        plugins.register_task("odd", kind="ordinal")


def test_bad_plugin_data_is_one_usage_error_when_the_task_is_used(tmp_path: Path) -> None:
    write(tmp_path / "bad.py", '''
        import numpy as np
        import bench

        @bench.register_task("nan_task")
        def nan_task(data_seed):
            x = np.ones((30, 2)); x[4, 1] = np.nan
            return x, np.arange(30) % 2

        @bench.register_task("fails")
        def fails(data_seed):
            raise RuntimeError("no data today")

        @bench.register_task("odd")
        def odd(data_seed):
            return "not arrays"
        ''')
    plugins.load_plugin(str(tmp_path / "bad.py"))
    with pytest.raises(UsageError, match=r"task 'nan_task' .*: x holds NaN or inf \(first at "
                                         r"example 4\)"):
        RunSpec(task="nan_task")
    with pytest.raises(UsageError, match="its function failed for data seed 0: RuntimeError: "
                                         "no data today"):
        registry.get_task("fails")
    with pytest.raises(UsageError, match=r"must return \(x, y\)"):
        registry.get_task("odd")


def test_a_module_plugin_and_a_missing_module(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "site" / "my_nnbench_plugin.py", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    record = plugins.load_plugin("my_nnbench_plugin")
    assert record == {"source": "my_nnbench_plugin",
                      "sha256": sha(tmp_path / "site" / "my_nnbench_plugin.py")}
    assert registry.get_model("tiny").origin == "plugin my_nnbench_plugin"
    with pytest.raises(UsageError, match="plugin module 'no_such_plugin' not found"):
        plugins.load_plugin("no_such_plugin")
    monkeypatch.delitem(sys.modules, "my_nnbench_plugin")


def test_installed_entry_points_are_loaded_on_first_lookup(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    write(site / "fake_ep_plugin.py", PLUGIN)
    write(site / "fake_ep-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: fake_ep\nVersion: 1.0\n")
    write(site / "fake_ep-1.0.dist-info" / "entry_points.txt",
          "[nnbench.plugins]\nfake = fake_ep_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    assert registry.get_task("ring").origin == "plugin fake_ep_plugin"
    assert plugins.plugin_records() == [{"source": "fake_ep_plugin",
                                         "sha256": sha(site / "fake_ep_plugin.py")}]
    monkeypatch.delitem(sys.modules, "fake_ep_plugin")


def test_a_study_loads_its_plugins_relative_to_itself_and_records_them(tmp_path: Path) -> None:
    plugin = write(tmp_path / "plug" / "p.py", PLUGIN)
    study = write(tmp_path / "studies" / "ring.toml", '''
        plugins = ["../plug/p.py"]
        task = "ring"
        trials = 2
        seeds = 1
        [fixed]
        loss = "bce"
        epochs = 2
        ''')
    spec = load_study_file(study)
    assert spec.plugins == ({"source": str(plugin.resolve()), "sha256": sha(plugin)},)
    # a spawned --workers process receives the spec pickled: it loads the plugins first
    blob = pickle.dumps(spec)
    plugins.reset_for_tests()
    assert pickle.loads(blob).plugins == spec.plugins
    assert registry.get_task("ring").origin == f"plugin {plugin.resolve()}"


def test_a_study_task_file_is_relative_to_the_study(tmp_path: Path) -> None:
    rows = "\n".join(f"{i % 7},{(i * 3) % 5},{i % 2},{i * 0.5}" for i in range(60))
    write(tmp_path / "data" / "d.csv", f"a,b,label,price\n{rows}\n")
    study = write(tmp_path / "studies" / "d.toml", '''
        task = "../data/d.csv"
        label_column = "price"
        trials = 1
        seeds = 1
        [fixed]
        epochs = 1
        ''')
    spec = load_study_file(study)
    assert spec.task == f"{(tmp_path / 'data' / 'd.csv').resolve()}?label=price"
    assert spec.objectives == ("val_mse",)
    write(study, 'task = "moons"\nlabel_column = "y"\n')
    with pytest.raises(UsageError, match="label_column: applies to a data file task"):
        load_study_file(study)
    write(study, 'task = "moons"\nplugins = "p.py"\n')
    with pytest.raises(UsageError, match=r"plugins: must be a list of \.py paths or module names"):
        load_study_file(study)


def test_bench_sweep_stores_the_plugins_it_used(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from bench.sweeps.storage import open_storage

    monkeypatch.chdir(tmp_path)
    plugin = write(tmp_path / "p.py", PLUGIN)
    write(tmp_path / "ring.toml", '''
        plugins = ["p.py"]
        task = "ring"
        trials = 2
        seeds = 1
        [fixed]
        loss = "bce"
        epochs = 2
        ''')
    assert main(["sweep", "ring.toml", "--storage", "j.journal", "--quiet"]) == 0
    study = optuna.load_study(study_name="ring", storage=open_storage("j.journal"))
    assert study.user_attrs["plugins"] == [{"source": str(plugin.resolve()),
                                            "sha256": sha(plugin)}]


def test_the_plugins_are_stored_before_training_so_an_interrupted_sweep_has_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    import bench.sweeps.sweep
    from bench.sweeps.storage import open_storage

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench.sweeps.sweep, "sweep", interrupted)
    plugin = write(tmp_path / "p.py", PLUGIN)
    write(tmp_path / "ring.toml", 'plugins = ["p.py"]\ntask = "ring"\n[fixed]\nloss = "bce"\n')
    assert main(["sweep", "ring.toml", "--storage", "j.journal", "--quiet"]) == 130
    study = optuna.load_study(study_name="ring", storage=open_storage("j.journal"))
    assert study.user_attrs["plugins"] == [{"source": str(plugin.resolve()),
                                            "sha256": sha(plugin)}]
    assert study.trials == []


@pytest.mark.parametrize("given", ["plug.txt", "./plug.txt", "plug"])
def test_a_plugin_file_that_is_not_python_source_names_the_fix(tmp_path: Path,
                                                              given: str) -> None:
    """Python imports .py files only: a plugin saved as .txt (or with no suffix) was reported
    as a module not found, or failed inside importlib."""
    name = given.removeprefix("./")
    write(tmp_path / name, PLUGIN)
    with pytest.raises(UsageError, match=rf"plugin {tmp_path / name} is not a \.py file; "
                                         rf"save it as {Path(name).stem}\.py and give that path"):
        plugins.load_plugin(given, base=tmp_path)


def test_a_file_named_like_a_module_does_not_hide_the_module(tmp_path: Path) -> None:
    """A bare name is a module name first: a file `json` in the folder does not block it."""
    write(tmp_path / "json", "not python\n")
    assert plugins.load_plugin("json", base=tmp_path)["source"] == "json"


@pytest.mark.parametrize("given", ["bad\x00name.py", "~no_such_user_here_xyz/p.py",
                                   "a" * 300 + ".py"])
def test_a_plugin_path_that_cannot_be_resolved_is_a_usage_error(tmp_path: Path,
                                                               given: str) -> None:
    with pytest.raises(UsageError, match=r"cannot be resolved; give a path to a \.py file"):
        plugins.load_plugin(given, base=tmp_path)

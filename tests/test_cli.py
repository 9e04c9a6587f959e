"""The `bench` command: list, run (table and --json) and one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from bench.catalog import registry
from bench.cli import main
from bench.notebooks.recipes import recipes

QUICK = ["--task", "moons", "--n-samples", "100", "--hidden", "4", "--epochs", "2"]


def test_list_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for table in (registry.tasks(), registry.models(), registry.losses(), registry.optimizers(),
                  recipes()):
        for name in table:
            assert name in out


def test_run_json_prints_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *QUICK, "--seeds", "0-1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in data["runs"]] == [0, 1]
    run = data["runs"][0]
    assert set(run) >= {"spec", "seed", "metrics", "curves", "timing", "diverged",
                        "diverged_epoch"}
    assert set(run["metrics"]) >= {"val_accuracy", "test_accuracy", "val_loss"}
    assert set(run["curves"]) == {"train_loss", "val_loss", "val_accuracy"}
    assert set(run["timing"]) == {"train_seconds", "eval_seconds", "samples_per_second"}
    assert len(run["curves"]["train_loss"]) == 2


def test_run_regression_json_reports_mse_and_r2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", "regression", "--model", "linear", "--loss", "mse",
                 "--epochs", "3", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert {"val_mse", "val_r2"} <= set(run["metrics"]) and "val_accuracy" not in run["metrics"]


def test_run_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *QUICK, "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "val_accuracy" in out and "mean" in out and "95% CI" in out


def test_run_recipe_with_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "moons_bn_mlp", "--epochs", "1", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["spec"]["model"] == "bn_mlp_20x3" and run["spec"]["epochs"] == 1


BAD = [
    (["run", "--task", "moons", "--lr", "0"], "lr must be a positive number"),
    (["run", "--task", "moons", "--batch-size", "0"], "batch size must be positive"),
    (["run", "--task", "moons", "--batch-size", "5000"], "above the training set"),
    (["run", "--task", "moons", "--device", "tpu"], "choose one of: cpu, cuda, auto"),
    (["run", "--task", "moons", "--hidden", "20,0"], "hidden sizes must be positive"),
    (["run", "--task", "nope"], "valid tasks:"),
    (["run", "nope"], "valid recipes:"),
    (["run", "--task", "moons", "--model", "bn_mlp_20x3", "--hidden", "4"], "applies to --model mlp only"),
    (["run", "--task", "moons", "--seeds", "4-1"], "bad --seeds"),
    (["run", "--task", "moons", "--seeds", "0,1,0"], "names seed 0 more than once"),
    (["run", "--task", "moons", "--seeds", "0-3,2"], "names seed 2 more than once"),
    (["perf", "--pruning", "-1"], "e.g. --pruning 192"),
    (["run", "--task", "moons", "--batch-size", "big"], "use an integer or 'full'"),
    (["reproduce", "--seeds", "0"], "--seeds must be at least 1"),
    (["frobnicate"], "invalid choice"),
    (["run"], "name a recipe (see `bench list`) or --task"),
    (["run", "--task", "moons", "--threads", "0"], "--threads must be between 1 and"),
    (["reproduce", "--threads", "0"], "--threads must be between 1 and"),
]


@pytest.mark.parametrize("argv,fragment", BAD)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], fragment: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and err.startswith("bench: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *QUICK, "--device", "cuda"]) == 2
    assert "use --device cpu or --device auto" in capsys.readouterr().err


def test_python_dash_m_bench_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "list"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and "recipes:" in proc.stdout


def test_run_records_the_layers_of_a_fixed_model(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON record of a fixed-architecture model says what trained, not the MLP defaults."""
    assert main(["run", "--task", "linear", "--model", "relu_mlp_5", "--epochs", "1",
                 "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["runs"][0]["spec"]
    assert (spec["hidden"], spec["activation"], spec["batch_norm"]) == ([5], "relu", False)
    assert main(["run", "moons_bn_mlp", "--model", "mlp", "--epochs", "1", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["runs"][0]["spec"]
    assert (spec["hidden"], spec["batch_norm"]) == ([20, 20, 20], False)  # mlp's defaults


def test_run_no_limits_allows_long_work(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-limits lifts the work bounds (here lowered so that a tiny run exceeds them)."""
    from bench.engines import budget

    monkeypatch.setattr(budget, "MAX_SAMPLE_EPOCHS", 10)
    assert main(["run", *QUICK]) == 2
    assert "--no-limits if it is meant" in capsys.readouterr().err
    assert main(["run", *QUICK, "--no-limits"]) == 0


def _commands() -> dict[str, argparse.ArgumentParser]:
    from bench.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_its_default_and_its_values() -> None:
    """Help text everywhere; a store-option's default (when it has one) and its choices (when
    argparse does not print them in the metavar) are in its help; flags need only the text."""
    commands = _commands()
    assert {"list", "run", "reproduce", "sweep", "time", "perf", "report", "check",
            "data"} <= set(commands)
    lacking = []
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"bench {name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                lacking.append(f"{where}: no help")
                continue
            text = formatter._expand_help(action)
            flag = action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction)
            if (action.option_strings and not flag and action.default is not None
                    and action.default is not argparse.SUPPRESS
                    and str(action.default) not in text):
                lacking.append(f"{where}: default {action.default!r} not in {text!r}")
            if action.choices and action.metavar is not None and not all(
                    str(c) in text for c in action.choices):
                lacking.append(f"{where}: choices not listed in {text!r}")
    assert not lacking, "\n".join(lacking)


def test_run_help_names_valid_values_and_threads() -> None:
    from bench.engines.registry import engine_names
    from bench.spec import ACTIVATIONS, DTYPES, INITS

    text = " ".join(_commands()["run"].format_help().split())
    for name in (*engine_names(), *ACTIVATIONS, *DTYPES, *INITS):
        assert name in text
    assert "`bench list`" in text and "--threads N" in text
    assert "tiny models are bound by per-operation overhead" in text
    assert "--threads N" in " ".join(_commands()["reproduce"].format_help().split())


def test_bare_run_is_a_usage_error_naming_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name a recipe (see `bench list`) or --task" in err
    assert main(["run", "--lr", "0.5"]) == 2  # flags alone do not pick a task either
    assert "or --task" in capsys.readouterr().err


def test_an_unknown_option_points_at_the_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, where in ((["run", "--frob"], "bench run --help"),
                        (["reproduce", "--frob", "1"], "bench reproduce --help"),
                        (["run", "moons_bn_mlp", "extra"], "bench run --help"),
                        (["--frob", "list"], "bench --help")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unrecognized arguments" in err
        assert f"(see `{where}`)" in err, (argv, err)


def test_run_trains_on_the_threads_asked_for_and_restores_them(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.commands.run as run_command

    seen = []
    real = run_command.train_specs

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(run_command, "train_specs", spy)
    before = torch.get_num_threads()
    assert main(["run", *QUICK, "--threads", "2", "--json"]) == 0
    assert main(["run", *QUICK, "--json"]) == 0
    assert seen == [2, 1] and torch.get_num_threads() == before

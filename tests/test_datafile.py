"""Data files as tasks: .csv and .npz read, validated, kind inferred, split by the data seed as
the built-in real data sets are, standardised with the training split's statistics, and the
file's sha256 recorded with every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.catalog import registry, tasks
from bench.catalog.datafile import display_name
from bench.cli import main
from bench.errors import UsageError
from bench.spec import RunSpec


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n",
                    encoding="utf-8")
    return path


def blobs(n: int = 90, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 100.0] + y[:, None]
    return x, y


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    x, y = blobs()
    return write_csv(tmp_path / "blobs.csv", ["a", "label", "b", "c"],
                     [[x[i, 0], y[i], x[i, 1], x[i, 2]] for i in range(len(y))])


def test_csv_label_column_is_found_by_name_and_the_others_are_features(csv_file: Path) -> None:
    task = registry.get_task(str(csv_file))
    assert (task.kind, task.input_dim, task.n_classes) == ("binary", 3, 2)
    assert task.name == str(csv_file.resolve())
    assert task.display_name == "blobs"
    assert task.sha256 is not None and len(task.sha256) == 64
    assert task.origin == f"data file {csv_file.resolve()}"


def test_without_a_named_label_column_the_last_column_is_the_label(tmp_path: Path) -> None:
    x, y = blobs(classes=3)
    path = write_csv(tmp_path / "three.csv", ["f1", "f2", "f3", "kind"],
                     [[*x[i], y[i]] for i in range(len(y))])
    task = registry.get_task(str(path))
    assert (task.kind, task.input_dim, task.n_classes) == ("multiclass", 3, 3)


def test_label_column_override_and_kind_inference(csv_file: Path) -> None:
    ref = f"{csv_file}?label=c"
    task = registry.get_task(ref)  # column c holds floats: a regression on a, label, b
    assert (task.kind, task.input_dim, task.n_classes) == ("regression", 3, 0)
    assert display_name(task.name) == "blobs[c]"
    forced = registry.get_task(f"{csv_file}?kind=multiclass")
    assert (forced.kind, forced.n_classes) == ("multiclass", 2)


def test_text_labels_are_classes_in_sorted_order(tmp_path: Path) -> None:
    x, y = blobs(classes=3)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    path = write_csv(tmp_path / "iris.csv", ["a", "b", "c", "species"],
                     [[*x[i], names[i]] for i in range(len(y))])
    data = tasks.load_task(str(path))
    assert data.task.kind == "multiclass"
    assert sorted(set(data.y_train.tolist())) == [0, 1, 2]


def test_splits_are_the_builtin_stratified_split_then_standardised(csv_file: Path) -> None:
    import torch

    x, y = blobs()
    for seed in (0, 7):
        data = tasks.load_task(str(csv_file), data_seed=seed, dtype=torch.float64)
        expected = tasks.standardise(tasks._stratified_split(
            x[:, [0, 1, 2]], y, (0.2, 0.2), seed))
        got = [data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test]
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=1e-12)
    train = tasks.load_task(str(csv_file), data_seed=3, dtype=torch.float64).x_train
    np.testing.assert_allclose(train.mean(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(0, unbiased=False).numpy(), 1, atol=1e-12)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (54, 18, 18)
    other = tasks.load_task(str(csv_file), data_seed=1, dtype=torch.float64)
    assert not torch.equal(other.x_train, train)


def test_npz_keeps_the_example_shape_and_regression_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((60, 1, 4, 4))
    np.savez(tmp_path / "img.npz", x=x, y=x.sum(axis=(1, 2, 3)))
    task = registry.get_task(str(tmp_path / "img.npz"))
    assert (task.kind, task.input_shape, task.input_dim) == ("regression", (1, 4, 4), 16)
    assert tasks.load_task(task.name).x_train.shape == (36, 1, 4, 4)
    with pytest.raises(UsageError, match=r"model 'mlp' takes flat inputs, but task 'img' has "
                                         r"examples shaped 1x4x4; use a model given as code"):
        RunSpec(task=task.name)


def test_the_file_hash_is_recorded_in_the_spec_and_a_changed_file_is_a_new_task(
        csv_file: Path, tmp_path: Path) -> None:
    spec = RunSpec(task=str(csv_file), loss="bce", epochs=1)
    first = registry.get_task(spec.task)
    assert spec.task_sha256 == first.sha256
    assert registry.get_task(spec.task) is first  # cached while the file is unchanged
    stored = spec.to_dict()
    assert stored["task_sha256"] == first.sha256
    assert RunSpec.from_dict(stored) == spec
    x, y = blobs(seed=5)
    write_csv(csv_file, ["a", "label", "b", "c"], [[x[i, 0], y[i], x[i, 1], x[i, 2]]
                                                   for i in range(len(y))])
    changed = RunSpec(task=str(csv_file), loss="bce", epochs=1)
    assert changed.task_sha256 != spec.task_sha256
    assert RunSpec.from_dict(stored).task_sha256 == spec.task_sha256  # a record stays as it was
    with pytest.raises(UsageError, match="has changed: its sha256 is now"):
        RunSpec.from_dict(stored, strict=True)


def test_old_records_without_the_hash_still_read() -> None:
    old = RunSpec(task="moons").to_dict()
    del old["task_sha256"]
    assert RunSpec.from_dict(old).task_sha256 is None
    with pytest.raises(UsageError, match="task_sha256 applies to data file tasks only"):
        RunSpec(task="moons", task_sha256="ab" * 32)


def test_a_relative_path_becomes_absolute_in_the_spec(csv_file: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(csv_file.parent)
    assert RunSpec(task="blobs.csv", loss="bce").task == str(csv_file.resolve())
    assert RunSpec(task="moons").replace(task="blobs.csv", loss="bce").task_sha256 is not None


@pytest.mark.parametrize(("rows", "message"), [
    ([["1", "2", "0"], ["nan", "1", "1"]], r"x holds NaN or inf \(first at example 1\)"),
    ([["1", "2", "0"], ["inf", "1", "1"]], r"x holds NaN or inf"),
    ([["1", "2", "0"], ["3", "1"]], r"line 3 has 2 fields but the header has 3"),
    ([["1", "2", "0"], ["x", "1", "1"]], r"line 3, column 'a': 'x' is not a number"),
    ([["1", "2", "1"], ["3", "1", "1"]], r"every label is 1: one class only"),
    ([["1", "2", "0.5"], ["3", "1", "nan"]], r"y holds NaN or inf"),
])
def test_bad_csv_is_one_usage_error(tmp_path: Path, rows: list[list[str]], message: str) -> None:
    body = [*rows, *[["1", "2", str(i % 2)] for i in range(20)]] if "one class" not in message \
        else [*rows, *[["1", "2", "1"]] * 20]
    path = write_csv(tmp_path / "bad.csv", ["a", "b", "label"], body)
    with pytest.raises(UsageError, match=message):
        registry.get_task(str(path))


def test_other_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"data file .*missing\.csv not found"):
        registry.get_task(str(tmp_path / "missing.csv"))
    with pytest.raises(UsageError, match=r"unknown data file extension '\.txt'"):
        registry.get_task(str(tmp_path / "data.txt"))
    with pytest.raises(UsageError, match="no column 'price'; its columns are a, label"):
        registry.get_task(f"{write_csv(tmp_path / 'two.csv', ['a', 'label'], [[1, 0]] * 12)}"
                          "?label=price")
    np.savez(tmp_path / "noy.npz", x=np.zeros((20, 2)))
    with pytest.raises(UsageError, match=r"no array y; an \.npz task holds arrays x"):
        registry.get_task(str(tmp_path / "noy.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match=r"junk.npz: cannot read it as \.npz"):
        registry.get_task(str(tmp_path / "junk.npz"))
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="needs a header row and at least one data row"):
        registry.get_task(str(tmp_path / "empty.csv"))
    np.savez(tmp_path / "floats.npz", x=np.zeros((20, 2)), y=np.linspace(0, 1, 20))
    with pytest.raises(UsageError, match=r"not whole numbers.*--task-kind regression"):
        registry.get_task(f"{tmp_path / 'floats.npz'}?kind=binary")
    np.savez(tmp_path / "three.npz", x=np.zeros((30, 2)), y=np.arange(30) % 3)
    with pytest.raises(UsageError, match="3 classes cannot be a binary task"):
        registry.get_task(f"{tmp_path / 'three.npz'}?kind=binary")


def test_labels_shaped_n_by_1_are_read_and_other_shapes_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "col.npz", x=np.arange(40.0).reshape(20, 2), y=(np.arange(20) % 2)[:, None])
    assert registry.get_task(str(tmp_path / "col.npz")).kind == "binary"
    np.savez(tmp_path / "grid.npz", x=np.zeros((20, 2)), y=np.zeros((20, 2)))
    with pytest.raises(UsageError, match=r"y has shape \[20, 2\]; give one label per example"):
        registry.get_task(str(tmp_path / "grid.npz"))


def test_an_unreadable_file_is_one_usage_error(csv_file: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.catalog import datafile

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(datafile, "open", refuse, raising=False)
    with pytest.raises(UsageError, match=r"blobs\.csv: cannot read it: Permission denied; fix "
                                         r"its permissions"):
        registry.get_task(str(csv_file))


def test_bench_run_on_a_csv_records_its_hash_in_json(csv_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--task", str(csv_file), "--loss", "bce", "--epochs", "2", "--seeds",
                 "0-1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    digest = registry.get_task(str(csv_file)).sha256
    assert [r["spec"]["task_sha256"] for r in out["runs"]] == [digest, digest]
    assert out["runs"][0]["spec"]["task"] == str(csv_file.resolve())


def test_bench_run_label_column_and_task_kind_flags(csv_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--task", str(csv_file), "--label-column", "c", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("blobs[c] / mlp") and "val_mse" in out
    assert main(["run", "--task", "moons", "--label-column", "c"]) == 2
    assert "apply to a data file task" in capsys.readouterr().err


@pytest.mark.parametrize(("x", "message"), [
    (np.float32(3), r"x is a single number; give one row of features per example"),
    (np.zeros((30, 0)), r"x has shape \[30, 0\], with no features"),
])
def test_features_that_are_no_rows_or_no_columns_are_one_usage_error(tmp_path: Path, x: Any,
                                                                      message: str) -> None:
    np.savez(tmp_path / "odd.npz", x=x, y=np.arange(30) % 2)
    with pytest.raises(UsageError, match=message):
        registry.get_task(str(tmp_path / "odd.npz"))


@pytest.mark.parametrize("header", [["a", "a", "label"], ["a", "label", " label"]])
def test_a_column_named_twice_is_one_usage_error(tmp_path: Path, header: list[str]) -> None:
    """Which of two same-named columns is the label, or which a chart names, is ambiguous."""
    path = write_csv(tmp_path / "twice.csv", header, [["1", "2", str(i % 2)] for i in range(20)])
    repeated = "a" if header[1] == "a" else "label"
    with pytest.raises(UsageError, match=rf"the header names column '{repeated}' more than once; "
                                         r"give each column its own name"):
        registry.get_task(str(path))


@pytest.mark.parametrize("header, label", [
    (["x", "y", "label"], "label"),  # y is a coordinate here: label wins
    (["y", "f", "Class"], "Class"),
    (["TARGET", "y", "f"], "TARGET"),
    (["a", "Y", "b"], "Y"),
])
def test_the_label_column_is_the_first_label_name_in_order(tmp_path: Path, header: list[str],
                                                           label: str) -> None:
    path = write_csv(tmp_path / "pts.csv", header,
                     [[str(i % 2) if h == label else str(i * 0.5) for h in header]
                      for i in range(30)])
    task = registry.get_task(str(path))
    assert (task.kind, task.input_dim, task.n_classes) == ("binary", 2, 2)


def test_two_label_columns_that_differ_in_case_are_one_usage_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "case.csv", ["f", "Label", "label"],
                     [["1", str(i % 2), str(i % 2)] for i in range(20)])
    with pytest.raises(UsageError, match=r"columns 'Label' and 'label' could each be the label; "
                                         r"name one with --label-column"):
        registry.get_task(str(path))

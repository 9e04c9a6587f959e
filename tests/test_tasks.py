"""Tasks: shapes, kinds, determinism, splits, and the torchvision loaders on tiny IDX files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.catalog.tasks import TASKS, load_task, place_debian_fashion_mnist
from bench.errors import DataUnavailableError, UsageError
from tests.conftest import write_tiny_mnist

GENERATED = [n for n, t in TASKS.items() if n not in ("mnist", "fashion_mnist")]


@pytest.mark.parametrize("name", GENERATED)
def test_task_shapes_kinds_and_splits(name: str) -> None:
    n = 300 if TASKS[name].synthetic else None
    data = load_task(name, n_samples=n)
    task = data.task
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)):
        assert x.shape[1:] == task.input_shape
        assert x.shape[0] == y.shape[0] > 0
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
        if task.kind == "regression":
            assert y.dtype == torch.float32
        else:
            assert y.dtype == torch.int64
            assert int(y.min()) >= 0 and int(y.max()) < task.n_classes
    if task.kind != "regression":
        assert len(torch.unique(data.y_train)) == task.n_classes  # every class present
    if task.synthetic:
        assert data.n_train == 300


@pytest.mark.parametrize("name", GENERATED)
def test_task_is_deterministic_given_data_seed(name: str) -> None:
    n = 200 if TASKS[name].synthetic else None
    a, b = load_task(name, data_seed=3, n_samples=n), load_task(name, data_seed=3, n_samples=n)
    c = load_task(name, data_seed=4, n_samples=n)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)


def test_default_sizes_follow_the_notebooks() -> None:
    assert load_task("moons").n_train == 1000
    assert load_task("linear").n_train == 100
    assert load_task("regression").n_train == 100
    assert load_task("circle").n_train == 1000


def test_labels_follow_the_notebook_rules() -> None:
    d = load_task("linear", dtype=torch.float64)
    x, y = d.x_train, d.y_train
    assert torch.equal(y, (x[:, 0] - x[:, 1] < 0.3).long())
    d = load_task("circle", dtype=torch.float64)
    assert torch.equal(d.y_train, ((d.x_train - 0.5).norm(dim=1) < 0.4).long())
    d = load_task("sine", dtype=torch.float64)
    x = d.x_train
    expected = (x[:, 1] >= -0.25 + 0.75 * torch.sin(torch.pi * x[:, 0])).long()
    assert torch.equal(d.y_train, expected)
    assert torch.equal(torch.round(x * 100) / 100, x)  # rounded to 2 decimals


def test_dtype_and_device_move() -> None:
    d = load_task("moons", dtype=torch.float64)
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.int64


def test_n_samples_is_refused_for_fixed_size_data() -> None:
    with pytest.raises(UsageError, match="synthetic tasks only"):
        load_task("digits", n_samples=100)


def test_mnist_loader_reads_tiny_idx_files(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path, n_train=60, n_test=20)
    data = load_task("mnist", root=tmp_path)
    assert data.x_train.shape == (50, 784) and data.x_val.shape == (10, 784)
    assert data.x_test.shape == (20, 784)
    assert float(data.x_train.max()) <= 1.0 and float(data.x_train.min()) >= 0.0
    assert data.task.kind == "multiclass" and data.task.n_classes == 10


def test_missing_mnist_files_give_a_one_line_fix(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_task("fashion_mnist", root=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert "FashionMNIST" in message and "make data" in message


def test_debian_fashion_mnist_is_placed_for_torchvision(tmp_path: Path) -> None:
    source = tmp_path / "debian"
    write_tiny_mnist(tmp_path / "src", folder="x", gz=True)
    (tmp_path / "src" / "x" / "raw").rename(source)
    raw = place_debian_fashion_mnist(tmp_path / "data", source)
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    data = load_task("fashion_mnist", root=tmp_path / "data")
    assert data.x_test.shape == (20, 784)
    place_debian_fashion_mnist(tmp_path / "data", source)  # idempotent


def test_missing_debian_package_names_the_install(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="apt-get install -y dataset-fashion-mnist"):
        place_debian_fashion_mnist(tmp_path, tmp_path / "absent")


def test_a_source_that_holds_no_archives_is_one_error_and_places_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailableError, match=r"holds no \*-ubyte.gz files"):
        place_debian_fashion_mnist(tmp_path / "data", tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataUnavailableError, match="is a file; give the folder"):
        place_debian_fashion_mnist(tmp_path / "data", tmp_path / "file")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage, not gzip")
    with pytest.raises(DataUnavailableError, match="is not a readable gzip file"):
        place_debian_fashion_mnist(tmp_path / "data", bad)
    assert not any((tmp_path / "data").rglob("*.part"))
    import gzip  # a good header, damaged compressed data inside (zlib.error, not BadGzipFile)
    data = bytearray(gzip.compress(bytes(range(256)) * 64))
    data[20:40] = b"\xff" * 20
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(DataUnavailableError, match="is not a readable gzip file"):
        place_debian_fashion_mnist(tmp_path / "data", bad)
    assert not any((tmp_path / "data").rglob("*.part"))
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()

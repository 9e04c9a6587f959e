"""Tasks: data sets as device-resident tensors with train / validation / test splits.

Every task is deterministic given its data seed. Synthetic tasks re-create the notebooks' data
(two moons, the uniform-square circle, the x - y < 0.3 boundary, the sine boundary, the noisy
linear regression); real tasks read scikit-learn's digits or torchvision's MNIST classes from
`data/`. Inputs are float tensors of shape [N, D]; labels are int64 class indices, or float
targets for regression. Splits are made once on the CPU in float64, cached in-process, then
cast and moved, so a sweep never re-reads files or re-generates data per trial.
"""

from __future__ import annotations

import functools
import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bench.catalog import datafile
from bench.catalog.datafile import display_name
from bench.catalog.names import lookup
from bench.errors import DataUnavailableError, UsageError

if TYPE_CHECKING:  # splits become tensors when loaded: naming or checking tasks needs no torch
    import torch

TaskKind = Literal["binary", "multiclass", "regression"]

DATA_ROOT = Path(os.environ.get("NNBENCH_DATA", "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Task:
    """What a task is: its kind, shapes, default metric and how to make its splits."""

    name: str
    description: str
    kind: TaskKind
    input_dim: int
    n_classes: int  # 2 for binary, C for multiclass, 0 for regression
    default_metric: str  # "accuracy" (maximise) or "mse" (minimise)
    default_n_samples: int | None  # training-set size of synthetic tasks; None for real data
    make: Callable[[int, int | None, Path], Splits]
    origin: str = "built-in"  # where the entry comes from: "built-in", a data file, a plugin
    shape: tuple[int, ...] | None = None  # one example's shape when not (input_dim,)
    sha256: str | None = None  # a data file task's content hash (None for the others)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return self.shape if self.shape is not None else (self.input_dim,)

    @property
    def display_name(self) -> str:
        """The short name tables show (a data file's stem; else the name)."""
        return display_name(self.name)

    @property
    def synthetic(self) -> bool:
        """True for tasks generated in code (their size can be chosen)."""
        return self.default_n_samples is not None


Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task as tensors on one device, in one dtype."""

    task: Task
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    def to(self, device: str | torch.device, dtype: torch.dtype) -> TaskData:
        """Copy with inputs (and regression targets) in `dtype` on `device`."""
        import torch

        label_dtype = dtype if self.task.kind == "regression" else torch.int64

        def move(t: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
            return t.to(device=device, dtype=dt)

        return TaskData(
            self.task,
            move(self.x_train, dtype), move(self.y_train, label_dtype),
            move(self.x_val, dtype), move(self.y_val, label_dtype),
            move(self.x_test, dtype), move(self.y_test, label_dtype),
        )


# --- synthetic generators (each returns x, y for n points) ----------------------------------

def _three_way(make_xy: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]],
               n_train: int, data_seed: int) -> Splits:
    """Draw train, validation and test sets (val/test half the training size, at least 200)."""
    rng = np.random.default_rng(data_seed)
    n_eval = max(n_train // 2, 200)
    x_tr, y_tr = make_xy(n_train, rng)
    x_va, y_va = make_xy(n_eval, rng)
    x_te, y_te = make_xy(n_eval, rng)
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def _moons(n_samples: int | None, data_seed: int) -> Splits:
    from sklearn.datasets import make_moons

    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return make_moons(n_samples=n, shuffle=True, noise=0.1,
                          random_state=int(rng.integers(2**31)))

    return _three_way(make_xy, n_samples or 1000, data_seed)


def _circles(n_samples: int | None, data_seed: int) -> Splits:
    from sklearn.datasets import make_circles

    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return make_circles(n_samples=n, shuffle=True, noise=0.05, factor=0.5,
                            random_state=int(rng.integers(2**31)))

    return _three_way(make_xy, n_samples or 1000, data_seed)


def _circle(n_samples: int | None, data_seed: int) -> Splits:
    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((n, 2))
        return x, (np.linalg.norm(x - 0.5, axis=1) < 0.4).astype(np.int64)

    return _three_way(make_xy, n_samples or 1000, data_seed)


def _linear(n_samples: int | None, data_seed: int) -> Splits:
    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((n, 2))
        return x, (x[:, 0] - x[:, 1] < 0.3).astype(np.int64)

    return _three_way(make_xy, n_samples or 100, data_seed)


def _sine(n_samples: int | None, data_seed: int) -> Splits:
    eps = 1e-5

    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # The notebook draws each coordinate uniformly in (-1, 1) and rounds to 2 decimals.
        x = np.round(rng.uniform(-1 + eps, 1 - eps, size=(n, 2)), 2)
        y = (x[:, 1] >= -0.25 + 0.75 * np.sin(np.pi * x[:, 0])).astype(np.int64)
        return x, y

    return _three_way(make_xy, n_samples or 1000, data_seed)


def _regression(n_samples: int | None, data_seed: int) -> Splits:
    # One true weight vector per data seed, shared by the three splits.
    w = np.random.default_rng([data_seed, 1]).standard_normal(2)

    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = 5.0 * rng.standard_normal((n, 2))
        return x, x @ w + 2.0 + rng.standard_normal(n)

    return _three_way(make_xy, n_samples or 100, data_seed)


def _mnist_synthetic(n_samples: int | None, data_seed: int) -> Splits:
    """MNIST-shaped data (784 features in [0, 1], 10 classes) made from noisy class prototypes."""
    prototypes = np.random.default_rng([data_seed, 2]).random((10, 784))

    def make_xy(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n)
        x = np.clip(prototypes[y] + 0.35 * rng.standard_normal((n, 784)), 0.0, 1.0)
        return x.astype(np.float32), y.astype(np.int64)

    rng = np.random.default_rng(data_seed)
    n_train = n_samples or 60000
    x_tr, y_tr = make_xy(n_train, rng)
    x_va, y_va = make_xy(max(n_train // 6, 200), rng)
    x_te, y_te = make_xy(max(n_train // 6, 200), rng)
    return x_tr, y_tr, x_va, y_va, x_te, y_te


# --- real data sets -----------------------------------------------------------------------

def _stratified_split(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float],
                      data_seed: int) -> Splits:
    from sklearn.model_selection import train_test_split

    val_frac, test_frac = fractions
    x_rest, x_te, y_rest, y_te = train_test_split(
        x, y, test_size=test_frac, stratify=y, random_state=data_seed)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x_rest, y_rest, test_size=val_frac / (1 - test_frac), stratify=y_rest,
        random_state=data_seed)
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def _digits(n_samples: int | None, data_seed: int, root: Path) -> Splits:
    from sklearn.datasets import load_digits

    del n_samples, root
    bunch = load_digits()
    return _stratified_split(bunch.data / 16.0, bunch.target.astype(np.int64), (0.2, 0.2),
                             data_seed)


def how_to_provide(name: str, root: Path) -> str:
    """One line saying how to put a torchvision data set's files in place."""
    folder = "FashionMNIST" if name == "fashion_mnist" else "MNIST"
    hint = (" or run `make data` (it uses Debian's dataset-fashion-mnist package)"
            if name == "fashion_mnist" else "")
    return (f"{name} files not found under {root / folder / 'raw'} and could not be downloaded; "
            f"place the four IDX files (train-images-idx3-ubyte, ...) there{hint}")


def _torchvision_dataset(name: str, root: Path, train: bool):
    """Open torchvision's class from `root`, downloading only when the files are absent."""
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion_mnist" else datasets.MNIST
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError:
        pass  # files absent: fall through to the real download path
    if os.environ.get("NNBENCH_OFFLINE") == "1":
        raise DataUnavailableError(how_to_provide(name, root))
    try:
        return cls(root=str(root), train=train, download=True)
    except (RuntimeError, OSError, urllib.error.URLError) as exc:
        raise DataUnavailableError(how_to_provide(name, root)) from exc


def _torchvision_splits(name: str, n_samples: int | None, data_seed: int, root: Path) -> Splits:
    del n_samples
    train = _torchvision_dataset(name, root, train=True)
    test = _torchvision_dataset(name, root, train=False)
    x_all = train.data.reshape(len(train.data), -1).numpy().astype(np.float32) / 255.0
    y_all = train.targets.numpy().astype(np.int64)
    # Validation: a seeded 1/6 of the official training set (10,000 of 60,000 for the real files).
    perm = np.random.default_rng(data_seed).permutation(len(y_all))
    n_val = max(len(y_all) // 6, 1)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    x_te = test.data.reshape(len(test.data), -1).numpy().astype(np.float32) / 255.0
    y_te = test.targets.numpy().astype(np.int64)
    return x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx], x_te, y_te


def _synthetic(fn: Callable[[int | None, int], Splits]) -> Callable[[int, int | None, Path], Splits]:
    def make(data_seed: int, n_samples: int | None, root: Path) -> Splits:
        del root
        return fn(n_samples, data_seed)

    return make


def _real(fn: Callable[..., Splits], *args: str) -> Callable[[int, int | None, Path], Splits]:
    def make(data_seed: int, n_samples: int | None, root: Path) -> Splits:
        return fn(*args, n_samples, data_seed, root)

    return make


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("moons", "two interleaving half-moons, noise 0.1 (notebooks 000, 001)", "binary",
             2, 2, "accuracy", 1000, _synthetic(_moons)),
        Task("circle", "uniform unit square, label inside radius 0.4 of the centre (notebook 003)",
             "binary", 2, 2, "accuracy", 1000, _synthetic(_circle)),
        Task("circles", "scikit-learn make_circles: two concentric rings, noise 0.05", "binary",
             2, 2, "accuracy", 1000, _synthetic(_circles)),
        Task("linear", "uniform unit square, label x - y < 0.3 (notebook 003)", "binary",
             2, 2, "accuracy", 100, _synthetic(_linear)),
        Task("sine", "square (-1, 1)^2, boundary y = -1/4 + 3/4 sin(pi x) (notebook 004)",
             "binary", 2, 2, "accuracy", 1000, _synthetic(_sine)),
        Task("regression", "y = Xw + 2 + N(0, 1) noise, X ~ 5 N(0, I) in 2-D (notebook 001)",
             "regression", 2, 0, "mse", 100, _synthetic(_regression)),
        Task("mnist_synthetic", "MNIST-shaped synthetic data: 784 features, 10 noisy prototypes",
             "multiclass", 784, 10, "accuracy", 60000, _synthetic(_mnist_synthetic)),
        Task("digits", "scikit-learn 8x8 handwritten digits (1797 images, 64 features)",
             "multiclass", 64, 10, "accuracy", None, _real(_digits)),
        Task("mnist", "MNIST handwritten digits via torchvision, root data/ (notebook 002)",
             "multiclass", 784, 10, "accuracy", None, _real(_torchvision_splits, "mnist")),
        Task("fashion_mnist", "Fashion-MNIST via torchvision, root data/ (`make data` places it)",
             "multiclass", 784, 10, "accuracy", None,
             _real(_torchvision_splits, "fashion_mnist")),
    ]
}


# --- tasks given as data: data files and plugins ------------------------------------------

# Plugin tasks by name (`bench.catalog.plugins` fills it): a Task, or a pending entry (with its
# `origin`) that makes it when called, on first use: a plugin's data is drawn only when its
# task is looked up, not when the plugin loads.
PLUGIN_TASKS: dict[str, Any] = {}


def split_arrays(x: np.ndarray, y: np.ndarray, kind: str, data_seed: int) -> Splits:
    """Split one data set 60/20/20 by the data seed as the built-in real data sets are split
    (stratified by class; a plain seeded split for regression)."""
    if kind != "regression":
        return _stratified_split(x, y, (0.2, 0.2), data_seed)
    from sklearn.model_selection import train_test_split

    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=0.2, random_state=data_seed)
    x_tr, x_va, y_tr, y_va = train_test_split(x_rest, y_rest, test_size=0.25,
                                              random_state=data_seed)
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def standardise(splits: Splits) -> Splits:
    """Features scaled by the training split's mean and standard deviation (a constant feature
    keeps scale 1), so no statistic of the validation or test set leaks into training."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x_tr - mean) / std, y_tr, (x_va - mean) / std, y_va, (x_te - mean) / std, y_te


_FILE_TASKS: dict[tuple[str, int, int], Task] = {}  # (reference, mtime_ns, size) -> its Task


def file_task(name: str) -> Task:
    """The Task of a data file reference (path, ?label=, ?kind=), read and validated; cached
    per file state and content hash, so a changed file is a new task."""
    ref = datafile.parse_ref(name)
    try:
        stat = ref.path.stat()
        key = (ref.key(), stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    if key is not None and key in _FILE_TASKS:
        return _FILE_TASKS[key]
    data = datafile.read(ref)

    def make(data_seed: int, n_samples: int | None, root: Path) -> Splits:
        del n_samples, root
        return standardise(split_arrays(data.x, data.y, data.kind, data_seed))

    shape = tuple(int(d) for d in data.x.shape[1:])
    task = Task(ref.key(), data.description, data.kind, int(np.prod(shape)), data.n_classes,
                "mse" if data.kind == "regression" else "accuracy", None, make,
                origin=f"data file {ref.path}", shape=shape if len(shape) > 1 else None,
                sha256=data.sha256)
    if key is not None:
        _FILE_TASKS[key] = task
    return task


def plugin_task(name: str) -> Task | None:
    """A plugin's task, made on first use; None when no plugin registered `name`."""
    entry = PLUGIN_TASKS.get(name)
    if entry is None or isinstance(entry, Task):
        return entry
    task = entry()
    PLUGIN_TASKS[name] = task
    return task


def resolve_task(name: str) -> Task:
    """The task `name` names: built-in, a plugin's, or a data file's path; else a UsageError
    listing the tasks."""
    if name in TASKS:
        return TASKS[name]
    if name in PLUGIN_TASKS:
        return plugin_task(name)  # type: ignore[return-value]
    if isinstance(name, str) and datafile.looks_like_path(name):
        return file_task(name)
    return lookup("task", {**TASKS, **PLUGIN_TASKS}, name,
                  also="; or the path of a .csv or .npz data file")


@functools.lru_cache(maxsize=8)
def _made(task: Task, data_seed: int, n_samples: int | None, root: str) -> Splits:
    return task.make(data_seed, n_samples, Path(root))


def task_splits(name: str, *, data_seed: int = 0, n_samples: int | None = None,
                root: Path | None = None) -> Splits:
    """A task's six split arrays as `load_task` reads them (x_train, y_train, x_val, y_val,
    x_test, y_test; NumPy, cached, not to be modified), for readers that need no torch."""
    root = Path(root) if root is not None else DATA_ROOT
    return _made(resolve_task(name), data_seed, n_samples, str(root))


@functools.lru_cache(maxsize=32)
def _cpu_splits(task: Task, data_seed: int, n_samples: int | None, root: str) -> TaskData:
    import torch

    arrays = task.make(data_seed, n_samples, Path(root))
    tensors = [torch.as_tensor(np.ascontiguousarray(a)) for a in arrays]
    x_dtype = torch.float64
    y_dtype = torch.float64 if task.kind == "regression" else torch.int64
    x_tr, y_tr, x_va, y_va, x_te, y_te = (
        t.to(x_dtype if i % 2 == 0 else y_dtype) for i, t in enumerate(tensors))
    return TaskData(task, x_tr, y_tr, x_va, y_va, x_te, y_te)


def load_task(name: str, *, data_seed: int = 0, n_samples: int | None = None,
              device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              root: Path | None = None) -> TaskData:
    """Load (or generate) a task's splits as tensors on `device` in `dtype` (default
    float32)."""
    import torch

    task = resolve_task(name)
    if n_samples is not None and not task.synthetic:
        raise UsageError(f"n_samples applies to synthetic tasks only; {name!r} has a fixed size: "
                         "drop --n-samples")
    root = Path(root) if root is not None else DATA_ROOT
    return _cpu_splits(task, data_seed, n_samples, str(root)).to(
        device, torch.float32 if dtype is None else dtype)


def training_set_size(name: str, n_samples: int | None) -> int | None:
    """Training-set size known without loading data (synthetic tasks), else None."""
    task = resolve_task(name)
    if task.synthetic:
        return n_samples or task.default_n_samples
    return None


def place_debian_fashion_mnist(root: Path | None = None,
                               source: Path = DEBIAN_FASHION_MNIST) -> Path:
    """Unpack Debian's Fashion-MNIST IDX files where torchvision's FashionMNIST looks for them."""
    import gzip
    import shutil
    import zlib

    root = Path(root) if root is not None else DATA_ROOT
    source = Path(source)
    if source.exists() and not source.is_dir():
        raise DataUnavailableError(f"{source} is a file; give the folder that holds the "
                                   f"*-ubyte.gz files, e.g. --source {DEBIAN_FASHION_MNIST}")
    if not source.is_dir():
        raise DataUnavailableError(
            f"{source} not found; install it with `apt-get install -y dataset-fashion-mnist` "
            "(after `apt-get update`)")
    archives = sorted(source.glob("*-ubyte.gz"))
    if not archives:
        raise DataUnavailableError(f"{source} holds no *-ubyte.gz files; give the folder "
                                   "Debian's dataset-fashion-mnist installs, e.g. --source "
                                   f"{DEBIAN_FASHION_MNIST}")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in archives:
        target = raw / gz.name[: -len(".gz")]
        if target.exists() and target.stat().st_size > 0:
            continue
        tmp = target.with_suffix(".part")
        try:
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a full disk, a read-only folder: the usual one-line error
            raise DataUnavailableError(f"{gz} is not a readable gzip file ({exc}); reinstall "
                                       "dataset-fashion-mnist") from None
        tmp.replace(target)  # atomic: a killed copy never leaves a half file under the real name
    return raw

"""Shared test set-up: no network downloads, small helpers to write IDX files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never try to download data sets (this machine has no network for them).
os.environ.setdefault("NNBENCH_OFFLINE", "1")


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    """Write a uint8 array in the IDX format torchvision's MNIST classes read."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_tiny_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20,
                     seed: int = 0, gz: bool = False) -> Path:
    """Tiny MNIST-format files (28x28 images, 10 classes) under root/folder/raw."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, size=(n, 28, 28))
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return raw


@pytest.fixture
def tiny_mnist_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root holding tiny MNIST files, made the default root for the test."""
    write_tiny_mnist(tmp_path)
    monkeypatch.setattr("bench.catalog.tasks.DATA_ROOT", tmp_path)
    return tmp_path


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

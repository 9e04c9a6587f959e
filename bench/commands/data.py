"""`bench data`: put Debian's Fashion-MNIST where torchvision's FashionMNIST reads it."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "data"
HELP = "place Debian's dataset-fashion-mnist files under data/FashionMNIST/raw/"


def configure(parser: argparse.ArgumentParser) -> None:
    """--root (default data/), --source (default the Debian package's folder)."""
    from bench.catalog.tasks import DATA_ROOT, DEBIAN_FASHION_MNIST

    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST)


def run(args: argparse.Namespace) -> int:
    """Unpack the IDX files (idempotent) and say where they went."""
    from bench.catalog.tasks import place_debian_fashion_mnist

    raw = place_debian_fashion_mnist(args.root, args.source)
    print(f"Fashion-MNIST IDX files are in {raw}")
    return 0

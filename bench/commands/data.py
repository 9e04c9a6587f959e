"""`bench data`: put Debian's Fashion-MNIST where torchvision's FashionMNIST reads it."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "data"
HELP = "place Debian's dataset-fashion-mnist files under data/FashionMNIST/raw/"


def configure(parser: argparse.ArgumentParser) -> None:
    """--root (default data/), --source (default the Debian package's folder)."""
    parser.add_argument("--root", type=Path, default=None,
                        help="data folder (default: $NNBENCH_DATA, else data/)")
    parser.add_argument("--source", type=Path, default=None,
                        help="the IDX files (default: /usr/share/datasets/fashion-mnist)")


def run(args: argparse.Namespace) -> int:
    """Unpack the IDX files (idempotent) and say where they went."""
    from bench.catalog.tasks import DATA_ROOT, DEBIAN_FASHION_MNIST, place_debian_fashion_mnist

    raw = place_debian_fashion_mnist(args.root or DATA_ROOT, args.source or DEBIAN_FASHION_MNIST)
    print(f"Fashion-MNIST IDX files are in {raw}")
    return 0

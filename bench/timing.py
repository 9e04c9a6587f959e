"""The clock: wall time that synchronises CUDA before it is read.

The training loops use `Stopwatch` so that timed regions include the GPU work they launched;
`bench time` (timing grid, warm-up, repeats, statistics) builds on the same clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on a CUDA device; a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates synchronised wall-clock seconds over several timed regions."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the body, synchronising the device before starting and before stopping."""
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - start

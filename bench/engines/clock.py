"""The clock every engine uses: wall time that synchronises CUDA before it is read, kept as
laps (with CUDA-event device time inside `record_stopwatches()`), and torch's thread count set
and restored (`num_threads`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from bench.errors import UsageError

Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter or a fake in tests)

def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on a CUDA device; a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)



# Stopwatches created while a recorder is active are appended to its list (see
# `record_stopwatches`); a ContextVar keeps this local to the caller's context.
_RECORDER: ContextVar[list[Stopwatch] | None] = ContextVar("nnbench_stopwatches", default=None)


class Stopwatch:
    """Accumulates synchronised wall-clock seconds over several timed regions.

    `seconds` is the total; `laps` holds each region's seconds. A watch created inside
    `record_stopwatches()` on a CUDA device also records CUDA events around each region, giving
    device time per lap in `cuda_laps`.
    """

    def __init__(self, device: str | torch.device = "cpu", clock: Clock = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.seconds = 0.0
        self.laps: list[float] = []
        self.cuda_laps: list[float] = []
        recorder = _RECORDER.get()
        self._events = recorder is not None and torch.device(device).type == "cuda"
        if recorder is not None:
            recorder.append(self)

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the body, synchronising the device before starting and before stopping."""
        synchronize(self.device)
        if self._events:
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
        start = self.clock()
        try:
            yield
        finally:
            if self._events:
                end_event.record()
            synchronize(self.device)
            lap = self.clock() - start
            self.seconds += lap
            self.laps.append(lap)
            if self._events:
                self.cuda_laps.append(start_event.elapsed_time(end_event) / 1000.0)



@contextmanager
def record_stopwatches() -> Iterator[list[Stopwatch]]:
    """Collect every Stopwatch created in the body (in creation order), with CUDA events on."""
    watches: list[Stopwatch] = []
    token = _RECORDER.set(watches)
    try:
        yield watches
    finally:
        _RECORDER.reset(token)



@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the body and restore it after; None keeps it."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise UsageError(f"thread count must be at least 1, got {threads}; use --threads 1")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

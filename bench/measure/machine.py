"""The machine and the commit a measurement was taken on: host, CPU, GPU, driver, library
versions, and the checked-out commit with whether the tree differs from it.

The one reader of these for every measurement (`bench time`, `bench perf`, `bench check`). The CPU
is named from /proc/cpuinfo (Linux), else by py-cpuinfo where it is installed (a dev dependency,
through pytest-benchmark), else by `platform`. Importing this module loads no torch (`bench check
--help` imports it); `machine_info` does.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo, else py-cpuinfo when installed, else `platform`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import cpuinfo  # optional (py-cpuinfo, dev dependency): names CPUs off Linux too

        brand = cpuinfo.get_cpu_info().get("brand_raw")
    except Exception:  # absent, or a platform it cannot read: fall back, never fail
        brand = None
    return brand or platform.processor() or platform.machine()


def _gpu_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """Host, CPU, GPU, driver and library versions for a result file's envelope; `threads` is
    the torch thread count the measurement ran on (default: torch's current count)."""
    import torch  # heavy: only when a measurement is written

    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads() if threads is None else threads,
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_driver": _gpu_driver() if cuda else None,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


def git_state(directory: str | Path = ".") -> tuple[str | None, bool | None]:
    """(checked-out commit, whether tracked files differ from it); (None, None) outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=directory, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head, bool(dirty)


def git_commit(directory: str | Path = ".") -> str:
    """`git_state` as one string: the commit, with '-dirty' when tracked files differ from it,
    or 'unknown' outside git."""
    head, dirty = git_state(directory)
    if head is None:
        return "unknown"
    return f"{head}-dirty" if dirty else head

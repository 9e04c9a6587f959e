"""The batched engine's fused CPU step: build `native_mlp.cpp` once, call it through ctypes.

On the CPU the stacked torch step of `bench.engines.batched` is bound by per-operation overhead and by
passes over `[K, F, B]` activations larger than the cache. The C++ kernel instead trains each
member end to end (gather, forward, loss, backward) with its activations in L1/L2, members
spread over the torch thread count. It computes the same function as the torch step (held to
1e-9 in float64 by `tests/test_native.py`); the optimizer update stays in torch.

The library is compiled on first use with the system C++ compiler (about 2 s) into
`$NNBENCH_CACHE` (default `~/.cache/nnbench`), named by a hash of the source, the flags, the
compiler and the CPU, and written atomically, so concurrent workers share one build. Where no
compiler works, or with `NNBENCH_NATIVE=0`, `library()` returns None (with one warning in the
former case) and the engine keeps its torch step.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from bench.catalog.models import Activation, BatchNorm, Head, Linear

SOURCE = Path(__file__).with_name("native_mlp.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread")
ROW = 8  # int64 columns per layer-table row, as `Layer` in native_mlp.cpp
# Input width from which the kernel's first layer works on input rows (WIDE_INPUT in the .cpp);
# there a shared-input evaluation is faster as the torch step's one GEMM over all members.
WIDE_INPUT = 32
OP = {"linear": 0, "act": 1, "bn": 2}
ACT = {"relu": 0, "tanh": 1, "sigmoid": 2, "identity": 3, "softmax": 4}
LOSS = {"mse": 0, "bce": 1, "ce": 2}
DTYPES = (torch.float32, torch.float64)

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p


def cache_dir() -> Path:
    """Where compiled kernels are kept: $NNBENCH_CACHE, else ~/.cache/nnbench."""
    return Path(os.environ.get("NNBENCH_CACHE") or Path.home() / ".cache" / "nnbench")


def _cpu_signature() -> str:
    """The CPU's model and feature flags (-march=native code is only valid on such a CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return "\n".join(keep) or platform.machine()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def build(force: bool = False) -> Path:
    """Compile the kernel library if it is not cached yet; returns its path.

    Raises RuntimeError with the compiler's message when no compiler exists or it fails.
    """
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found: install g++ (apt-get install -y g++) "
                           "or set CXX")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version,
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"native_mlp-{key}.so"
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed: {proc.stderr.strip()[:2000]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None when disabled (NNBENCH_NATIVE=0) or unbuildable."""
    if os.environ.get("NNBENCH_NATIVE", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as err:
        warnings.warn(f"the batched engine's native CPU step is unavailable ({err}); "
                      "using its torch step", RuntimeWarning, stacklevel=2)
        return None
    lib.nb_workspace_elems.restype = _i64
    lib.nb_workspace_elems.argtypes = [_ptr, _i64, _i64, _i64, _i64]
    lib.nb_table_row.restype = _i64
    lib.nb_wide_input.restype = _i64
    lib.nb_vec_bytes.restype = _i64
    lib.nb_train_step.restype = None
    lib.nb_train_step.argtypes = [_i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _i64, _ptr, _i64,
                                  _i64, _i64, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _i64,
                                  _i64]
    lib.nb_eval_forward.restype = None
    lib.nb_eval_forward.argtypes = [_i64, _ptr, _i64, _i64, _ptr, _ptr, _i64, _i64, _i64, _i64,
                                    _ptr, _ptr, _i64, _i64]
    if lib.nb_table_row() != ROW or lib.nb_wide_input() != WIDE_INPUT:
        raise RuntimeError("native_mlp.cpp and bench/native.py disagree on the layer table")
    return lib


def supports(device: str, dtype: torch.dtype) -> bool:
    """Whether the native step can run here: CPU tensors of float32/float64, library built."""
    return device == "cpu" and dtype in DTYPES and library() is not None


def _ptr_of(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeMLP:
    """The fused step for one stacked group: K members of one architecture on one data set.

    `offsets` maps each parameter name ("0.weight", ...) to the flat-buffer offset of member
    0's block (member k's copy starts k * numel later); `running` maps BatchNorm layer indices
    to their [K, F] running mean and variance, updated in place by training steps. Members are
    spread over `threads` threads of the kernel's own.
    """

    def __init__(self, arch: tuple, head: Head, loss: str, k: int, flat: torch.Tensor,
                 grad: torch.Tensor, offsets: dict[str, int],
                 running: dict[int, tuple[torch.Tensor, torch.Tensor]], threads: int = 1) -> None:
        lib = library()
        if lib is None:
            raise RuntimeError("the native step is unavailable; check supports() first")
        self.lib, self.k, self.flat, self.grad = lib, k, flat, grad
        self.dtype, self.elem = flat.dtype, flat.element_size()
        self.head, self.loss = head, loss
        rows: list[list[int]] = []
        width = 0
        for i, layer in enumerate(arch):
            if isinstance(layer, Linear):
                width = layer.out_features
                rows.append([OP["linear"], layer.in_features, width, offsets[f"{i}.weight"],
                             offsets[f"{i}.bias"], 0, 0, 0])
            elif isinstance(layer, Activation):
                rows.append([OP["act"], width, width, 0, 0, ACT[layer.name], 0, 0])
            elif isinstance(layer, BatchNorm):
                rm, rv = running[i]
                if not (rm.is_contiguous() and rv.is_contiguous()):
                    raise ValueError("BatchNorm running statistics must be contiguous")
                rows.append([OP["bn"], layer.features, layer.features, offsets[f"{i}.weight"],
                             offsets[f"{i}.bias"], 0, rm.data_ptr(), rv.data_ptr()])
            else:
                raise ValueError(f"the native step has no kernel for {layer!r}")
        self.table = torch.tensor(rows, dtype=torch.int64)
        self.n_layers = len(rows)
        self.in_dim = arch[0].in_features
        self.threads = max(1, threads)  # the kernel's own threads (std::thread per call)
        self._ws: dict[int, tuple[torch.Tensor, int]] = {}

    def _workspace(self, n: int) -> tuple[torch.Tensor, int]:
        """Zeroed scratch for the kernel's threads at batch size n and the elements per thread;
        sized by the kernel once per batch size and kept for later calls (no per-step query)."""
        if n not in self._ws:
            per = int(self.lib.nb_workspace_elems(self.table.data_ptr(), self.n_layers, n,
                                                  self.in_dim, self.elem))
            self._ws[n] = (torch.zeros(per * self.threads, dtype=self.dtype), per)
        return self._ws[n]

    def train_step(self, x: torch.Tensor, target: torch.Tensor, start: int, n: int,
                   order: torch.Tensor | None, losses: torch.Tensor) -> None:
        """One step's gradients into `grad` and per-member losses into `losses` [K].

        The batch is examples start..start+n of the order: `order` [K, N] (each member's own
        permutation of the rows of x) or, when None, the rows themselves.
        """
        ws, per = self._workspace(n)
        float_target = target if target.is_floating_point() else None
        class_target = None if target.is_floating_point() else target
        rows = order[:, start:] if order is not None else None
        self.lib.nb_train_step(
            self.elem, self.table.data_ptr(), self.n_layers, self.k, self.flat.data_ptr(),
            self.grad.data_ptr(), x.data_ptr(), x.shape[1], _ptr_of(rows),
            order.stride(0) if order is not None else 0, 0 if order is not None else start, n,
            ACT[self.head.activation], LOSS[self.loss], self.head.n_outputs,
            _ptr_of(float_target), _ptr_of(class_target), losses.data_ptr(), ws.data_ptr(), per,
            self.threads)

    def eval_forward(self, x: torch.Tensor, start: int, n: int) -> torch.Tensor:
        """Raw outputs [K, O, n] of examples start..start+n of x, BatchNorm in eval mode."""
        ws, per = self._workspace(0)
        out = torch.empty((self.k, self.head.n_outputs, n), dtype=self.dtype)
        self.lib.nb_eval_forward(self.elem, self.table.data_ptr(), self.n_layers, self.k,
                                 self.flat.data_ptr(), x.data_ptr(), x.shape[1], start, n,
                                 self.head.n_outputs, out.data_ptr(), ws.data_ptr(), per,
                                 self.threads)
        return out


def main() -> int:
    """`python -m bench.engines.native`: build (or find) the kernel library now and say where it is."""
    try:
        path = build()
    except RuntimeError as err:
        print(f"native step unavailable, the batched engine will use its torch step: {err}")
        return 0
    print(f"native step: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The batched engine's fused C++ step: built once, cached, and the same function as torch's.

Member-by-member equality with the reference engine (float64, every model and optimizer) is in
test_batched.py, parametrised over both steps; this file covers the kernel's own concerns.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from bench.engines import batched, native, stacked
from bench.engines.batched import train_many
from bench.spec import RunSpec
from tests.test_batched import assert_same_run

MOONS = RunSpec(task="moons", model="bn_mlp_20x3", loss="mse", optimizer="sgd", lr=0.1,
                momentum=0.9, batch_size=50, epochs=2, n_samples=300)
DIGITS = RunSpec(task="digits", model="mlp", hidden=(16, 16), activation="tanh", loss="ce",
                 optimizer="sgd", lr=0.1, batch_size=64, epochs=3, dtype="float64")


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch):
    """library() re-evaluated under the test's environment, and again after it."""
    native.library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native.library.cache_clear()


def test_library_builds_once_into_the_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNBENCH_CACHE", str(tmp_path))
    first = native.build()
    stamp = first.stat().st_mtime_ns
    assert first.parent == tmp_path and first.name.startswith("native_mlp-")
    assert native.build() == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_disabled_native_step_falls_back_to_torch(fresh_library) -> None:
    fresh_library.setenv("NNBENCH_NATIVE", "0")
    assert native.library() is None and not native.supports("cpu", torch.float32)
    specs = [MOONS.replace(seed=s) for s in range(3)]
    auto = train_many(specs)
    fresh_library.delenv("NNBENCH_NATIVE")
    native.library.cache_clear()
    forced_torch = train_many(specs, step="torch")
    for a, b in zip(auto, forced_torch, strict=True):
        assert a.curves == b.curves and a.metrics == b.metrics


def test_native_step_where_unavailable_says_how_to_fix(fresh_library) -> None:
    fresh_library.setenv("NNBENCH_NATIVE", "0")
    with pytest.raises(ValueError, match="use step='torch'"):
        train_many([MOONS], step="native")
    with pytest.raises(ValueError, match="unknown step 'fast'; choose one of auto, native, torch"):
        train_many([MOONS], step="fast")


def test_compiler_failure_warns_once_and_uses_torch(fresh_library, tmp_path) -> None:
    fresh_library.setenv("NNBENCH_CACHE", str(tmp_path))
    fresh_library.setenv("CXX", "/bin/false")
    with pytest.warns(RuntimeWarning, match="native CPU step is unavailable"):
        assert native.library() is None
    assert train_many([MOONS])[0].engine == "batched"


def test_gradients_equal_the_torch_step_in_float32() -> None:
    """One step from the same state: the kernel's gradients and losses are torch's to 1e-5."""
    spec = MOONS.replace(dtype="float32")
    specs = [spec.replace(seed=s, lr=0.05 * (s + 1)) for s in range(5)]
    data = batched.load_data(spec, "cpu")
    plan = batched.plan_run(spec, data.n_train)
    grads, losses = [], []
    for use_native in (False, True):
        states = [batched.initial_state(plan.arch, init=s.init, init_scale=s.init_scale,
                                        seed=s.seed, dtype=plan.dtype) for s in specs]
        stack = stacked.Stack(plan, states, "cpu")
        y = batched.encode_targets(data.y_train, plan.head, spec.loss, plan.dtype).contiguous()
        if use_native:
            stack.use_native(spec.loss, 1)
            out = torch.empty(len(specs))
            stack.native.train_step(data.x_train.contiguous(), y, 50, 50, None, out)
        else:
            out = stacked.torch_step(stack, data.x_train, y, 50, 100, None, None, None,
                                     spec.loss, plan.head)
        grads.append(stack.grad.clone())
        losses.append(out.clone())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_thread_count_and_member_order_do_not_change_results() -> None:
    """Members share per-thread scratch: a diverging member processed just before a calm one
    (wide inputs, padded buffers) must leave no trace, on one thread or two."""
    calm = [DIGITS.replace(seed=s, shuffle=True) for s in (1, 2, 3)]
    wild = DIGITS.replace(seed=9, lr=1e300, weight_decay=1e300, shuffle=True)  # inf, then NaN
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = train_many(calm, record_steps=True, keep_params=True, step="native")
        mixed = train_many([wild, *calm], record_steps=True, keep_params=True, step="native")
        torch.set_num_threads(2)
        two = train_many([*calm, wild], record_steps=True, keep_params=True, step="native")
    finally:
        torch.set_num_threads(threads)
    assert mixed[0].diverged and two[3].diverged
    for solo, a, b in zip(alone, mixed[1:], two[:3], strict=True):
        assert a.step_losses == solo.step_losses and b.step_losses == solo.step_losses
        for key, value in solo.params.items():
            assert torch.equal(a.params[key], value) and torch.equal(b.params[key], value)


def test_engine_restores_the_torch_thread_count() -> None:
    before = torch.get_num_threads()
    train_many([MOONS.replace(seed=s) for s in range(2)], step="native")
    assert torch.get_num_threads() == before


def test_kernel_layer_table_matches_python() -> None:
    lib = native.library()
    assert lib is not None
    assert lib.nb_table_row() == native.ROW and lib.nb_wide_input() == native.WIDE_INPUT


def _cpu_flags() -> set[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")),
                set())


# (-march level, the kernel's vector width there, the CPU flags that level adds: /proc/cpuinfo
# names, cumulative, so that code built for it cannot hit an illegal instruction here)
_V2 = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
_V3 = _V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
WIDTHS = [("x86-64-v2", 16, _V2), ("x86-64-v3", 32, _V3), ("x86-64-v4", 64, _V4)]


@pytest.mark.parametrize(("march", "width", "flags"), WIDTHS, ids=[w[0] for w in WIDTHS])
def test_every_vector_width_computes_the_torch_steps_function(fresh_library, tmp_path, march,
                                                               width, flags) -> None:
    """The kernel's vector width follows the target (AVX-512, AVX2, SSE/NEON): each build is
    the torch step's function, to 1e-9 in float64 and 1e-4 in float32 (where the float
    reductions have their own shuffles), on a BatchNorm network and a wide input."""
    missing = sorted(flags - _cpu_flags())
    if platform.machine() != "x86_64" or missing:
        pytest.skip(f"this CPU cannot run -march={march} code (lacks {', '.join(missing)})")
    fresh_library.setenv("NNBENCH_CACHE", str(tmp_path))
    fresh_library.setattr(native, "FLAGS", tuple(
        f"-march={march}" if f == "-march=native" else f for f in native.FLAGS))
    try:
        native.build()
    except RuntimeError as err:  # e.g. a GCC before 11 knows no -march=x86-64-vN
        pytest.skip(f"the compiler cannot build -march={march}: {str(err)[:200]}")
    lib = native.library()
    assert lib is not None and lib.nb_vec_bytes() == width
    cases = [(MOONS.replace(dtype="float64"), 1e-9), (DIGITS.replace(shuffle=True), 1e-9),
             (MOONS.replace(dtype="float32"), 1e-4),
             (DIGITS.replace(shuffle=True, dtype="float32"), 1e-4)]
    for spec, rtol in cases:
        specs = [spec.replace(seed=s, lr=0.05 * (s + 1)) for s in range(3)]
        fast = train_many(specs, record_steps=True, keep_params=True, step="native")
        slow = train_many(specs, record_steps=True, keep_params=True, step="torch")
        for a, b in zip(slow, fast, strict=True):
            assert_same_run(a, b, rtol=rtol)

"""The report's chart workers: results in order, errors raised in the build, a dead worker an
error (never a hang), and no worker left running whatever happens."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from bench.report import parallel
from bench.report.figures import Chart, Missing, Skipped


def _slow_then_value(unit: int) -> list:
    time.sleep(0.05 * (5 - unit))  # the first units finish last
    return [Missing(f"k{unit}", "q", str(os.getpid()))]


def test_results_come_back_in_unit_order_from_several_workers() -> None:
    made = parallel.draw_all(list(range(5)), _slow_then_value, jobs=2)
    assert [m[0].key for m in made] == [f"k{i}" for i in range(5)]
    assert len({m[0].needs for m in made}) == 2  # two worker processes drew them
    assert multiprocessing.active_children() == []


def _started(unit: int) -> list:
    began = time.monotonic()
    time.sleep(0.05)
    return [Missing(f"k{unit}", "q", repr(began))]


def test_workers_take_units_in_the_given_order_and_results_keep_unit_order() -> None:
    made = parallel.draw_all(list(range(6)), _started, jobs=2, order=[5, 4, 3, 2, 1, 0])
    assert [m[0].key for m in made] == [f"k{i}" for i in range(6)]
    began = [float(m[0].needs) for m in made]
    assert began[5] < began[1] and began[4] < began[0]  # the first in order started first


def test_dispatch_order_puts_the_charts_with_a_panel_per_study_first() -> None:
    from types import SimpleNamespace

    def chart_curves(ctx): ...
    def chart_lr(ctx): ...
    def chart_history(ctx): ...
    def chart_boundaries(ctx): ...

    views = SimpleNamespace(views=[1, 2, 3])
    units = [(chart_history, views), (chart_lr, views), (chart_boundaries, views),
             (chart_curves, views), (chart_history, views)]
    assert parallel.dispatch_order(units) == [3, 1, 0, 2, 4]  # curves: two panels per study


def _fails(unit: int) -> list:
    if unit == 2:
        raise ValueError("log-scaled values <= 0")
    time.sleep(0.2)
    return []


def test_a_chart_error_is_raised_in_the_build_and_the_workers_are_gone() -> None:
    with pytest.raises(ValueError, match="log-scaled"):
        parallel.draw_all(list(range(6)), _fails, jobs=2)
    assert multiprocessing.active_children() == []


def _dies(unit: int) -> list:
    if unit == 1:
        os._exit(3)
    return []


def test_a_worker_that_dies_is_an_error_naming_its_exit_code() -> None:
    with pytest.raises(RuntimeError, match=r"exit code 3"):
        parallel.draw_all(list(range(4)), _dies, jobs=2)
    assert multiprocessing.active_children() == []


def test_one_job_draws_in_this_process() -> None:
    made = parallel.draw_all([0, 1], _slow_then_value, jobs=1)
    assert {m[0].needs for m in made} == {str(os.getpid())}


def test_split_units_merge_as_the_whole_function_would_return() -> None:
    nothing = Missing("boundaries", "q", "a 2-D study")
    chart = Chart("boundary_a", "t", "q", "c")
    skip = Skipped("boundary_b", "decision boundaries of study 'b' skipped: ...")
    assert parallel.merge([[nothing], [nothing]], "boundaries") == [nothing]
    assert parallel.merge([[nothing], [chart]], "boundaries") == [chart]
    assert parallel.merge([[skip], [nothing]], "boundaries") == [skip]
    failed = Missing("boundary_c", "q", "stored runs that retrain")
    assert parallel.merge([[failed], [nothing]], "boundaries") == [failed]


def test_a_worker_that_imports_torch_itself_runs_it_on_one_thread() -> None:
    """A report loads no torch before the workers fork; a unit that needs it (a model given
    as code, a retrained run) gets one thread, as when it was imported before the fork."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from bench.report import parallel
        from bench.report.figures import Missing

        def threads(unit):
            import torch
            return [Missing(f"k{unit}", "q", str(torch.get_num_threads()))]

        assert "torch" not in sys.modules
        made = parallel.draw_all([0, 1], threads, jobs=2)
        print(",".join(m[0].needs for m in made))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == "1,1"

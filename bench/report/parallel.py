"""The report's charts drawn in worker processes, one chart (or one study's chart) at a time.

Drawing is matplotlib's pure-Python layout and rasterising: it uses one core, and a report
draws dozens of figures, so `draw_all` spreads them over the machine's cores. Workers are
forked from the build once every table is read (they share it without copying or pickling);
each is handed one unit at a time over its own pipe (no shared queue whose lock a killed
worker could hold) and returns what the chart function returned (PNG bytes included), and
writes its files into the report's temporary folder. The results are put back in the order
of the units, so the report is the same whatever finishes first. A chart function's error
comes back and is raised in the build like a serial one; a worker that dies is an error
naming its exit code, never a hang. Whatever stops the build (an error, Ctrl-C, SIGTERM)
terminates and joins the workers before the temporary folder is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from bench.report.figures import Chart, Context, Missing, Skipped

Item = Chart | Missing | Skipped
# One piece of work: a chart function and the context it reads (a subset for per-study charts).
Unit = tuple[Callable[[Context], Any], Context]

# Chart functions that draw one figure per study: split so each study is its own unit.
PER_STUDY_VIEWS = ("chart_boundaries",)
PER_STUDY = ("chart_history",)


def units_of(fns: tuple[Callable[[Context], Any], ...], ctx: Context) -> list[tuple[int, Unit]]:
    """(index of the chart function, unit) for every piece of work: per-study chart functions
    split by study (history by stored study, boundaries by study view when they are drawn),
    the others whole."""
    out: list[tuple[int, Unit]] = []
    for i, fn in enumerate(fns):
        name = getattr(fn, "__name__", "")
        if name in PER_STUDY and len(ctx.studies) > 1:
            out += [(i, (fn, dataclasses.replace(ctx, studies=[s]))) for s in ctx.studies]
        elif name in PER_STUDY_VIEWS and ctx.boundaries and len(ctx.views) > 1:
            out += [(i, (fn, dataclasses.replace(ctx, views=[v]))) for v in ctx.views]
        else:
            out.append((i, (fn, ctx)))
    return out


def merge(parts: list[list[Item]], own_key: str) -> list[Item]:
    """One chart function's items from its units, as the whole function would return them:
    in order; its "nothing to draw" `Missing` (key `own_key`, e.g. 'boundaries') kept once,
    and only when no unit drew a chart, missed a study's own chart or skipped one."""
    items = [item for part in parts for item in part]
    drew = any(isinstance(item, Chart | Skipped) or (isinstance(item, Missing) and
                                                     item.key != own_key) for item in items)
    out: list[Item] = []
    for item in items:
        if isinstance(item, Missing) and item.key == own_key and (drew or item in out):
            continue
        out.append(item)
    return out


# Panels per study view of the whole-report charts, where more than one (a guess of the cost).
PANELS_PER_VIEW = {"chart_curves": 2}


def dispatch_order(units: list[Unit]) -> list[int]:
    """The order workers take the units in: longest first, so that no worker starts a slow
    chart as the others run out of work. The cost is guessed from the panels: a whole-report
    chart draws a panel (or row) per study view, a per-study unit one figure."""
    def cost(i: int) -> int:
        fn, ctx = units[i]
        name = getattr(fn, "__name__", "")
        if name in PER_STUDY or name in PER_STUDY_VIEWS:
            return 1
        return len(ctx.views) * PANELS_PER_VIEW.get(name, 1)

    return sorted(range(len(units)), key=lambda i: -cost(i))


# A report has a few dozen charts: more workers than this only add forks.
MAX_JOBS = 8


def jobs_here() -> int:
    """The cores this process may use (its CPU affinity), at least 1 and at most `MAX_JOBS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_JOBS))


def draw_all(units: list[Unit], run: Callable[[Unit], list[Item]], jobs: int,
             order: list[int] | None = None) -> list[list[Item]]:
    """`run(unit)` for every unit, results in unit order, over up to `jobs` forked workers
    that take the units in `order` (indices; default: as given); in this process when `jobs`
    is 1, there is one unit, or the system is not Linux: fork is what shares the read tables
    for free, and only Linux makes it safe with the libraries loaded."""
    jobs = min(jobs, len(units))
    if jobs <= 1 or not sys.platform.startswith("linux"):
        return [run(u) for u in units]
    mp = multiprocessing.get_context("fork")
    workers: list[tuple[Any, Connection]] = []
    results: dict[int, list[Item]] = {}
    try:
        for _ in range(jobs):
            mine, theirs = mp.Pipe()
            proc = mp.Process(target=_worker, args=(theirs, units, run), daemon=True)
            proc.start()
            theirs.close()
            workers.append((proc, mine))
        todo = iter(order if order is not None else range(len(units)))
        busy: dict[Connection, Any] = {}
        for proc, conn in workers:
            if (i := next(todo, None)) is not None:
                conn.send(i)
                busy[conn] = proc
        while busy:
            for conn in wait(list(busy)):
                proc = busy.pop(conn)
                try:
                    i, ok, payload = conn.recv()
                except EOFError:
                    proc.join(5)
                    raise RuntimeError(f"a chart worker stopped (exit code {proc.exitcode}) "
                                       "before it finished its chart") from None
                if not ok:
                    raise payload
                results[i] = payload
                if (j := next(todo, None)) is not None:
                    conn.send(j)
                    busy[conn] = proc
    finally:
        for _, conn in workers:
            with contextlib.suppress(OSError):  # a worker that has gone: nothing to tell
                conn.send(None)
            conn.close()
        for proc, _ in workers:
            proc.join(0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [results[i] for i in range(len(units))]


def _worker(conn: Connection, units: list[Unit], run: Callable[[Unit], list[Item]]) -> None:
    """A forked worker: draw the units it is sent until it is sent None. Ctrl-C is the
    build's to handle (it stops the workers); SIGTERM ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:  # as torch's own DataLoader workers do after a fork
        sys.modules["torch"].set_num_threads(1)
    else:  # a unit may import it (a model given as code, a retrained run): one thread then too
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    while True:
        try:
            i = conn.recv()
        except EOFError:
            return
        if i is None:
            return
        try:
            reply: tuple[int, bool, Any] = (i, True, run(units[i]))
        except Exception as exc:  # raised again in the build, as a serial chart's would be
            reply = (i, False, exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send((i, False, RuntimeError(f"{type(reply[2]).__name__}: {reply[2]}")))

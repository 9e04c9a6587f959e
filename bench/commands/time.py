"""`bench time`: training time per epoch over a grid, CPU and CUDA side by side.

Each cell (task, model or width, batch size, engine, device, threads) is trained through the
real engine; the engine's own synchronised per-epoch clock gives the samples, warm-up epochs
are dropped, and repeats continue until a minimum time. One JSON file per invocation goes to
`results/timing/NNNN_timing.json` (never overwritten, rewritten atomically after every cell so
an interrupted run keeps what it measured) and a table goes to the terminal.

Runs with torch, numpy, scikit-learn and scipy only (no optuna, pandas or seaborn).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.catalog import registry
from bench.commands._common import parse_positive_ints, refuse_repeats
from bench.engines.registry import check_engine_name, get_engine
from bench.errors import UsageError
from bench.measure.machine import git_state, machine_info
from bench.store import ensure_dir, new_numbered_path, write_error, write_json_atomic

NAME = "time"
HELP = "time training per epoch on CPU and CUDA over a grid of tasks, widths and batch sizes"

DEFAULTS: dict[str, Any] = {
    "task": "moons,mnist_synthetic", "model": "", "widths": "16,64,256,1024",
    "batch_sizes": "16,64,256,full", "engines": "notebook,reference,batched", "k": 64,
    "epochs": 2, "warmup": 1, "min_time": 0.5, "min_repeats": 3, "max_train": "6000",
    "max_gflop": 100.0, "max_gflop_cuda": 20000.0,
}
QUICK: dict[str, Any] = {
    "task": "moons", "widths": "16,256", "batch_sizes": "16,full", "k": 16, "epochs": 2,
    "warmup": 1, "min_time": 0.05, "min_repeats": 2, "max_gflop": 20.0,
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Grid, repeat and output options; unset options take --quick's or the full defaults."""
    d = DEFAULTS
    add = parser.add_argument
    add("--task", help=f"comma-separated tasks, names from `bench list` (default {d['task']})")
    add("--model", help="comma-separated registry models to time besides the widths "
                        "(e.g. bn_mlp_20x3,sigmoid_mlp_16x2; default none)")
    add("--widths", help="generic ReLU MLPs with two hidden layers of each width, or 'none' "
                         f"(default {d['widths']})")
    add("--batch-sizes", dest="batch_sizes",
        help=f"comma-separated batch sizes; 'full' is the whole training set "
             f"(default {d['batch_sizes']})")
    add("--engines", help=f"notebook (the notebooks' per-item DataLoader; 'dataloader' is its "
                          f"former name), reference (preloaded device tensors), batched (K runs "
                          f"stacked) (default {d['engines']})")
    add("--k", type=int, help=f"runs trained together by the batched engine (default {d['k']})")
    add("--device", default="auto",
        help="cpu, cuda, cpu,cuda or auto: cpu, plus cuda when available (default auto)")
    add("--dtype", default="float32", choices=("float32", "float64"),
        help="floating-point type of every cell: float32, float64 (default: %(default)s)")
    add("--threads", default="1",
        help="comma-separated torch thread counts to measure, e.g. 1,2,4 (default: %(default)s: "
             "tiny models are bound by per-operation overhead, and extra threads only contend); "
             "restored afterwards")
    add("--epochs", type=int, help=f"epochs per engine call (default {d['epochs']})")
    add("--warmup", type=int, help=f"warm-up epochs dropped per cell (default {d['warmup']})")
    add("--min-time", dest="min_time", type=float,
        help=f"repeat until the kept epochs total this many seconds (default {d['min_time']})")
    add("--min-repeats", dest="min_repeats", type=int,
        help=f"keep at least this many epochs per cell (default {d['min_repeats']})")
    add("--max-repeats", dest="max_repeats", type=int, default=50,
        help="keep at most this many epochs per cell (default 50)")
    add("--max-train", dest="max_train",
        help="cap synthetic training sets at N examples (mnist_synthetic has 60000), or 'none' "
             f"(default {d['max_train']})")
    add("--max-gflop", dest="max_gflop", type=float,
        help="skip CPU cells whose training work per epoch (6 x params x examples x K) "
             f"exceeds this many GFLOP (default {d['max_gflop']:g})")
    add("--max-gflop-cuda", dest="max_gflop_cuda", type=float,
        help=f"the same cap for CUDA cells (default {d['max_gflop_cuda']:g})")
    add("--quick", action="store_true",
        help="a sub-minute grid: moons, widths 16 and 256, batch 16 and full, K 16")
    add("--out", default="results/timing",
        help="directory of the JSON files (default: %(default)s)")


@dataclass(frozen=True)
class Grid:
    """The parsed, validated grid and repeat settings."""

    tasks: tuple[str, ...]
    archs: tuple[tuple[str, int | None], ...]  # (model, width)
    batch_sizes: tuple[int | None, ...]
    engines: tuple[str, ...]
    k: int
    devices: tuple[str, ...]
    dtype: str
    threads: tuple[int | None, ...]
    epochs: int
    warmup: int
    min_time: float
    min_repeats: int
    max_repeats: int
    max_train: int | None
    max_gflop: float
    max_gflop_cuda: float


def _opt(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    if value is not None:
        return value
    if args.quick and name in QUICK:
        return QUICK[name]
    return DEFAULTS[name]


def _split(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


def _devices(text: str) -> tuple[str, ...]:
    """The devices --device names: `auto` is cpu and cuda where CUDA is available, else cpu
    (`run` says so once every usage check has passed)."""
    import torch

    if text == "auto":
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    devices = tuple(_split(text))
    if not devices:
        raise UsageError("--device names no device; use --device cpu, cuda, cpu,cuda or auto")
    for device in devices:
        if device not in ("cpu", "cuda"):
            raise UsageError(f"unknown device {device!r}; use --device cpu, cuda, cpu,cuda or auto")
    refuse_repeats(devices, "--device", "e.g. --device cpu,cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available here; "
                         "use --device cpu or --device auto")
    return devices


def parse_grid(args: argparse.Namespace) -> Grid:
    """Turn the options into a Grid; every bad value is a one-line UsageError."""
    from bench.measure.timing import MAX_EPOCHS_PER_CALL, MAX_K, MAX_LAPS, MAX_THREADS

    tasks = tuple(_split(_opt(args, "task")))
    for task in tasks:
        registry.get_task(task)
    models = tuple(_split(_opt(args, "model")))
    for model in models:
        registry.get_model(model)
    widths_text = _opt(args, "widths")
    widths = [] if widths_text == "none" else parse_positive_ints(widths_text, "--widths")
    archs = tuple([(m, None) for m in models] + [("mlp", w) for w in widths])
    engines = tuple(check_engine_name(e, allow_auto=False) for e in _split(_opt(args, "engines")))
    max_train_text = str(_opt(args, "max_train"))
    max_train = None if max_train_text == "none" else parse_positive_ints(max_train_text,
                                                                      "--max-train")[0]
    threads_text = args.threads
    threads = (None,) if threads_text is None else tuple(parse_positive_ints(threads_text,
                                                                        "--threads"))
    grid = Grid(
        tasks=tasks, archs=archs,
        batch_sizes=tuple(parse_positive_ints(_opt(args, "batch_sizes"), "--batch-sizes", ("full",))),
        engines=engines, k=_opt(args, "k"), devices=(), dtype=args.dtype,
        threads=threads, epochs=_opt(args, "epochs"), warmup=_opt(args, "warmup"),
        min_time=_opt(args, "min_time"), min_repeats=_opt(args, "min_repeats"),
        max_repeats=args.max_repeats, max_train=max_train, max_gflop=_opt(args, "max_gflop"),
        max_gflop_cuda=_opt(args, "max_gflop_cuda"))
    if not (grid.tasks and grid.archs and grid.batch_sizes and grid.engines):
        raise UsageError("the grid is empty; give at least one --task, one --model or --widths "
                         "value, one --batch-sizes value and one --engines value")
    for name, value, low, high in (
            ("--k", grid.k, 1, MAX_K), ("--epochs", grid.epochs, 1, MAX_EPOCHS_PER_CALL),
            ("--warmup", grid.warmup, 0, MAX_LAPS), ("--min-repeats", grid.min_repeats, 1, MAX_LAPS),
            ("--max-repeats", grid.max_repeats, 1, MAX_LAPS),
            ("--threads", max(t or 1 for t in grid.threads), 1, MAX_THREADS)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
        if value > high:
            raise UsageError(f"{name} must be at most {high}, got {value}")
    for name, value, low in (("--min-time", grid.min_time, 0.0), ("--max-gflop", grid.max_gflop, None),
                             ("--max-gflop-cuda", grid.max_gflop_cuda, None)):
        if not math.isfinite(value) or (value < low if low is not None else value <= 0):
            raise UsageError(f"{name} must be a finite number {'>= 0' if low is not None else '> 0'}"
                             f", got {value:g}; e.g. {name} {DEFAULTS[name[2:].replace('-', '_')]:g}")
    if grid.max_repeats < grid.min_repeats:
        raise UsageError(f"--max-repeats ({grid.max_repeats}) must be at least --min-repeats "
                         f"({grid.min_repeats})")
    for flag, values, example in (  # a cell measured twice would count as two
            ("--task", tasks, "moons,sine"), ("--model", models, "bn_mlp_20x3"),
            ("--widths", widths, "16,64"), ("--batch-sizes", grid.batch_sizes, "16,64,full"),
            ("--engines", engines, "reference,batched"), ("--threads", threads, "1,2")):
        refuse_repeats(values, flag, f"e.g. {flag} {example}",
                       lambda v: "full" if v is None else str(v))
    return dataclasses.replace(grid, devices=_devices(args.device))


def resolved_command(grid: Grid, out: str) -> str:
    """A `bench time` command line that spells out every resolved grid setting."""
    models = [m for m, w in grid.archs if w is None]
    widths = [str(w) for m, w in grid.archs if w is not None]
    parts = ["bench", "time", "--task", ",".join(grid.tasks)]
    if models:
        parts += ["--model", ",".join(models)]
    parts += ["--widths", ",".join(widths) or "none",
              "--batch-sizes", ",".join(str(b) if b else "full" for b in grid.batch_sizes),
              "--engines", ",".join(grid.engines), "--k", str(grid.k),
              "--device", ",".join(grid.devices), "--dtype", grid.dtype]
    if grid.threads != (None,):
        parts += ["--threads", ",".join(str(t) for t in grid.threads)]
    parts += ["--epochs", str(grid.epochs), "--warmup", str(grid.warmup),
              "--min-time", f"{grid.min_time:g}", "--min-repeats", str(grid.min_repeats),
              "--max-repeats", str(grid.max_repeats),
              "--max-train", str(grid.max_train) if grid.max_train else "none",
              "--max-gflop", f"{grid.max_gflop:g}", "--max-gflop-cuda",
              f"{grid.max_gflop_cuda:g}", "--out", out]
    return shlex.join(parts)


def _n_samples(task: str, max_train: int | None) -> int | None:
    from bench.catalog.tasks import training_set_size

    size = training_set_size(task, None)
    if size is None or max_train is None or size <= max_train:
        return None
    return max(max_train, 10)


def _cases(grid: Grid, device: str) -> tuple[list, list[str]]:
    """The cells to measure on one device, and a notice for each one skipped."""
    from bench.engines.setup import load_data, plan_run
    from bench.measure.timing import TimingCase, describe

    cases, skipped = [], []
    cap, cap_option = ((grid.max_gflop_cuda, "--max-gflop-cuda") if device == "cuda"
                       else (grid.max_gflop, "--max-gflop"))
    for task in grid.tasks:
        n_samples = _n_samples(task, grid.max_train)
        data = None
        for model, width in grid.archs:
            for bs in grid.batch_sizes:
                for engine in grid.engines:
                    k = grid.k if get_engine(engine).stacks else 1
                    case = TimingCase(task, model, width, bs, engine, k, device, grid.dtype,
                                      n_samples)
                    spec = case.spec(grid.epochs)
                    if data is None:
                        data = load_data(spec, device)
                    if bs is not None and bs > data.n_train:
                        skipped.append(f"{describe(case)}: batch size above the {data.n_train} "
                                       "training examples")
                        continue
                    try:
                        plan = plan_run(spec, data.n_train)
                    except UsageError as exc:
                        if "batch norm" not in str(exc):
                            raise
                        skipped.append(f"{describe(case)}: {exc}")
                        continue
                    gflop = 6 * plan.parameters * data.n_train * k / 1e9
                    if gflop > cap:
                        skipped.append(f"{describe(case)}: ~{gflop:.0f} GFLOP per epoch is above "
                                       f"{cap_option} {cap:g}")
                        continue
                    cases.append((case, data))
    return cases, skipped


def run(args: argparse.Namespace) -> int:
    """Measure the grid, writing the JSON file after every cell, then print the table."""
    import torch

    from bench.engines.clock import num_threads
    from bench.measure.timing import (
        SCHEMA,
        NoisyTimingWarning,
        cuda_crossover,
        describe,
        measure_case,
    )

    grid = parse_grid(args)
    ensure_dir(args.out, "--out")  # before any data is loaded or measured
    plan = []
    skipped: list[str] = []
    for device in grid.devices:
        cases, notes = _cases(grid, device)
        plan.extend(cases)
        skipped.extend(notes)
    if not plan:
        first = skipped[0] if skipped else "no cell"
        more = f"; {len(skipped) - 1} more skipped" if len(skipped) > 1 else ""
        raise UsageError(f"nothing to measure: every cell of the grid was skipped ({first}"
                         f"{more}); widen --batch-sizes or raise --max-gflop "
                         "(--max-gflop-cuda on cuda)")
    # the notices once every usage check has passed, so that an error stands alone
    if args.device == "auto" and "cuda" not in grid.devices:
        print("bench: notice: CUDA is not available here; measuring cpu only", file=sys.stderr)
    for note in skipped:
        print(f"bench: notice: skipping {note}", file=sys.stderr)

    commit, dirty = git_state()
    resolved = resolved_command(grid, args.out)
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["bench", *sys.argv[1:]]) if sys.argv[1:2] == ["time"]
        else resolved,
        "resolved_command": resolved,
        "git_commit": commit, "git_dirty": dirty, "machine": machine_info(),
        "settings": {"epochs_per_call": grid.epochs, "warmup": grid.warmup,
                     "min_time": grid.min_time, "min_repeats": grid.min_repeats,
                     "max_repeats": grid.max_repeats, "max_train": grid.max_train,
                     "max_gflop": grid.max_gflop, "max_gflop_cuda": grid.max_gflop_cuda},
        "skipped": skipped, "complete": False, "measurements": [],
    }
    try:
        path = new_numbered_path(args.out, "timing", ".json")
    except OSError as exc:
        raise write_error(args.out, exc, "nothing was measured") from None

    def save() -> None:
        try:
            write_json_atomic(path, document)
        except OSError as exc:  # a full disk: the last complete write stays in place
            raise write_error(path, exc, "the file keeps what was written before") from None

    save()
    total = len(plan) * len(grid.threads)
    done = 0
    for threads in grid.threads:
        with num_threads(threads):
            for case, data in plan:
                done += 1
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", NoisyTimingWarning)
                    timing = measure_case(case, epochs=grid.epochs, warmup=grid.warmup,
                                          min_time=grid.min_time, min_repeats=grid.min_repeats,
                                          max_repeats=grid.max_repeats, data=data)
                entry = timing.to_dict()
                document["measurements"].append(entry)
                save()
                print(f"[{done}/{total}] {describe(case, timing.batch_size)} "
                      f"t{timing.threads}: {entry['epoch_seconds_median'] * 1e3:.1f} ms/epoch",
                      file=sys.stderr)
                for w in caught:
                    print(f"bench: warning: {w.message}", file=sys.stderr)
    document["complete"] = True
    document["machine"]["threads"] = torch.get_num_threads()
    save()
    print(format_table(document["measurements"]))
    crossover = cuda_crossover(document["measurements"])
    if crossover:
        print()
        print(format_crossover(crossover))
    print(f"\nwrote {path}")
    return 0


def _model_label(m: dict[str, Any]) -> str:
    return f"mlp w{m['width']}" if m["width"] is not None else m["model"]


def format_table(measurements: list[dict[str, Any]]) -> str:
    """Aligned table: per-epoch median, spread, throughput and speed against the reference."""
    ref = {(m["task"], m["model"], m["width"], m["batch_size"], m["device"], m["threads"]):
           m["epoch_seconds_median"] for m in measurements if m["engine"] == "reference"}
    header = ("task", "model", "batch", "engine", "k", "device", "thr", "epoch ms", "IQR %",
              "samples/s", "trial ms", "vs ref")
    rows = [header]
    for m in measurements:
        base = ref.get((m["task"], m["model"], m["width"], m["batch_size"], m["device"],
                        m["threads"]))
        per_trial = m["per_trial_epoch_seconds_median"]
        rows.append((
            m["task"], _model_label(m), str(m["batch_size"]), m["engine"], str(m["k"]),
            m["device"], str(m["threads"]), f"{m['epoch_seconds_median'] * 1e3:.2f}",
            f"{m['iqr_over_median'] * 100:.0f}{'!' if m['noisy'] else ''}",
            f"{m['samples_per_second_median']:.3g}", f"{per_trial * 1e3:.3g}",
            f"{base / per_trial:.2f}x" if base else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("IQR % with '!': noisy (IQR above 10% of the median). vs ref: reference epoch "
                 "time / this per-trial epoch time (>1 is faster).")
    return "\n".join(lines)


def format_crossover(rows: list[dict[str, Any]]) -> str:
    """CPU vs CUDA per cell: where the GPU starts to pay off (speedup > 1)."""
    lines = ["CPU vs CUDA (speedup = CPU epoch time / CUDA epoch time):"]
    for r in rows:
        lines.append(f"  {r['task']:<16} {_model_label(r):<18} bs {r['batch_size']:<6} {r['engine']:<10} "
                     f"k {r['k']:<4} cpu {r['cpu_seconds'] * 1e3:9.2f} ms  cuda "
                     f"{r['cuda_seconds'] * 1e3:9.2f} ms  speedup {r['cuda_speedup']:.2f}x")
    return "\n".join(lines)

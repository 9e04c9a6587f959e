"""Engine speed comparison: the notebooks' loop, the reference engine and the batched engine.

`bench perf` measures, in one process and on one device, the wall time of a whole training run
("trial": training, per-epoch validation and final metrics) for two workloads:

- `moons`: notebook 000's recipe (moons, bn_mlp_20x3, MSE, SGD lr 0.1 momentum 0.9, batch
  100, 10 epochs, no shuffling);
- `mnist`: the 784-16-16-10 sigmoid network of notebook 002 (sigmoid_mlp_16x2, MSE, SGD lr
  0.1) on MNIST-sized synthetic data (60,000 training examples), mini-batches of 64 with
  per-epoch shuffling, 1 epoch;
- `mnist_fixed`: the same without shuffling (shared batches: the batched engine's first layer
  becomes one GEMM over all members, and no per-member gather is needed);
- `plugin_mlp`, `plugin_bn_mlp`, `lenet5_digits` (issue 15, opt-in with `--workloads`):
  networks given as code, which the batched engine trains on its torch.func path.

Each engine gets one untimed warm-up call, then `repeats` timed calls, interleaved across the
engines (see `time_trials`); figures are medians.
Batched figures are per trial: the time of one `train_many` call over K runs divided by K.
Speed-ups are ratios of medians taken in the same run and are checked against Issue 3's
targets (`TARGETS`). Peak memory is taken apart from the timing: on CUDA
`torch.cuda.max_memory_allocated` of one untimed call; on the CPU, a fresh subprocess (same
data, same thread count) makes a warm-up call, then reports how far the peak resident set of a
second call rises above what it held before it (`peak_rss_growth_mib`, Linux
/proc/self/status with the peak reset in between): imports, data and one-time library
initialisation are not counted, everything the engine allocates for a run is, tensors
included.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.catalog.tasks import TaskData
from bench.engines.batched import chosen_step
from bench.engines.clock import synchronize
from bench.engines.registry import EpochHook, EpochReport, get_engine
from bench.engines.setup import load_data
from bench.notebooks.recipes import get_recipe
from bench.spec import RunSpec


@dataclass(frozen=True)
class Workload:
    """A named recipe whose trials are timed; `spec` is seed 0 of it."""

    name: str
    description: str
    spec: RunSpec
    quick_n_samples: int | None  # training-set size under --quick


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("moons", "notebook 000: moons, bn_mlp_20x3, mse, sgd lr 0.1 momentum 0.9, "
                 "batch 100, 10 epochs, no shuffle",
                 get_recipe("moons_bn_mlp").spec, None),  # the recipe itself, unchanged
        Workload("mnist", "notebook 002's 784-16-16-10 sigmoid net, mse, sgd lr 0.1, on "
                 "mnist_synthetic (60,000 train), batch 64, shuffled, 1 epoch",
                 RunSpec(task="mnist_synthetic", model="sigmoid_mlp_16x2", loss="mse",
                         optimizer="sgd", lr=0.1, batch_size=64, epochs=1, shuffle=True),
                 6000),
        Workload("mnist_fixed", "as mnist but in a fixed order (shuffle off, like notebook "
                 "002's full-batch loop): every member sees the same batches, so the batched "
                 "engine's first layer is one GEMM over all members",
                 RunSpec(task="mnist_synthetic", model="sigmoid_mlp_16x2", loss="mse",
                         optimizer="sgd", lr=0.1, batch_size=64, epochs=1, shuffle=False),
                 6000),
        # Networks given as code (issue 15): the batched engine's torch.func path.
        Workload("plugin_mlp", "notebook 000's recipe with its 2-20-20-20-1 ReLU shape written "
                 "as nn.Module code (relu_mlp_20x3_code, no batch norm): the torch.func path",
                 get_recipe("moons_bn_mlp").spec.replace(model="relu_mlp_20x3_code"), None),
        Workload("plugin_bn_mlp", "as plugin_mlp with batch norm after each ReLU "
                 "(bn_mlp_20x3_code, per-member running statistics)",
                 get_recipe("moons_bn_mlp").spec.replace(model="bn_mlp_20x3_code"), None),
        Workload("lenet5_digits", "lenet5 on digits (8x8), ce, sgd lr 0.05 momentum 0.9, batch "
                 "64, shuffled, 2 epochs: convolutions, compute-bound on the CPU",
                 RunSpec(task="digits", model="lenet5", loss="ce", optimizer="sgd", lr=0.05,
                         momentum=0.9, batch_size=64, epochs=2, shuffle=True), None),
    ]
}
ENGINES = ("notebook", "reference", "batched")  # registry engines, in the table's order
# Optional: the batched engine forced onto its stacked torch step, at the same K values, so the
# native step's gain over it is a ratio taken in the same run (`bench perf --torch-step`). A row
# label, not an engine: it runs the batched engine with `step="torch"` (see `VARIANTS`).
TORCH_STEP = "batched_torch"
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {TORCH_STEP: ("batched", {"step": "torch"})}
BATCHED = ("batched", TORCH_STEP)  # the rows timed at each K
# Issue 3's speed targets: batched per-trial speed-up at least this much over each baseline.
TARGETS: dict[str, dict[str, float]] = {
    "moons": {"notebook": 50.0, "reference": 10.0},
    "mnist": {"reference": 5.0},
    "mnist_fixed": {"reference": 5.0},
    "plugin_mlp": {"reference": 3.0},  # issue 15
}
TARGET_K = {"moons": 256, "plugin_mlp": 256}  # the group size a workload's target is stated for (else any K)


def trial_runner(engine: str, spec: RunSpec, data: TaskData, k: int = 1) -> Callable[[], int]:
    """A zero-argument call that trains K trials (K=1 unless the engine stacks runs) and
    returns how many it trained; `engine` is a registry engine or a row of `VARIANTS`."""
    name, options = VARIANTS.get(engine, (engine, {}))
    chosen = get_engine(name)
    specs = [spec.replace(seed=s) for s in range(k if chosen.stacks else 1)]
    return lambda: len(chosen.train(specs, data=data, **options))


def time_trials(runs: Sequence[Callable[[], int]], device: str,
                repeats: int) -> list[list[float]]:
    """Seconds per trial of `repeats` timed calls of each run, after one warm-up call each.

    The repeats are interleaved (run 1, run 2, ..., run 1, run 2, ...), so a burst of load
    from other processes on a shared machine falls on every engine alike instead of on
    whichever happened to be measured then; the ratios of medians stay fair.
    """
    for run in runs:
        run()
    out: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, seconds in zip(runs, out, strict=True):
            synchronize(device)
            start = time.perf_counter()
            trials = run()
            synchronize(device)
            seconds.append((time.perf_counter() - start) / trials)
    return out


def peak_memory(engine: str, spec: RunSpec, k: int, device: str) -> dict[str, float]:
    """Peak memory of one untimed K-trial call, in MiB (see the module docstring)."""
    if torch.device(device).type == "cuda":
        run = trial_runner(engine, spec, load_data(spec, device), k)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        synchronize(device)
        return {"cuda_max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    request = json.dumps({"engine": engine, "spec": spec.to_dict(), "k": k,
                          "threads": torch.get_num_threads()})
    code = "import sys; from bench.measure.perf import _child_peak_rss; _child_peak_rss(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, request], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return {"peak_rss_growth_mib": float("nan")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _child_peak_rss(request: str) -> None:
    """Subprocess side of `peak_memory`: a warm-up call (libraries initialise lazily), then the
    peak RSS of a second call over the RSS before it, as JSON."""
    args = json.loads(request)
    torch.set_num_threads(args["threads"])
    spec = RunSpec.from_dict(args["spec"])
    run = trial_runner(args["engine"], spec, load_data(spec, "cpu"), args["k"])
    run()
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_rss_growth_mib": (peak - before) / 1024, "peak_rss_mib": peak / 1024}))


def measure_workload(workload: Workload, *, device: str, ks: Sequence[int], repeats: int,
                     quick: bool, engines: Sequence[str] = ENGINES,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Median ms per trial, peak memory and speed-up ratios of every engine on one workload."""
    spec = workload.spec.replace(device=device)
    if quick and workload.quick_n_samples is not None:
        spec = spec.replace(n_samples=workload.quick_n_samples)
    data = load_data(spec, device)
    rows: list[dict[str, Any]] = []
    cases = [(e, 1) for e in engines if e not in BATCHED]
    cases += [(e, k) for e in BATCHED if e in engines for k in ks]
    timed = time_trials([trial_runner(engine, spec, data, k) for engine, k in cases], device,
                        repeats)
    for (engine, k), seconds in zip(cases, timed, strict=True):
        row = {"engine": engine, "k": k, "repeats": repeats,
               **({"step": chosen_step(spec, data, VARIANTS.get(engine, ("", {}))[1].get(
                   "step", "auto"))} if engine in BATCHED else {}),
               "ms_per_trial_median": 1e3 * statistics.median(seconds),
               "ms_per_trial": [1e3 * s for s in seconds],
               **peak_memory(engine, spec, k, device)}
        rows.append(row)
        step = f" ({row['step']} step)" if "step" in row else ""
        log(f"  {workload.name:<6} {engine:<13} K={k:<5} {row['ms_per_trial_median']:10.3f} "
            f"ms/trial{step}")
    by_engine = {r["engine"]: r["ms_per_trial_median"] for r in rows if r["k"] == 1}
    torch_step = {r["k"]: r["ms_per_trial_median"] for r in rows if r["engine"] == TORCH_STEP}
    for row in rows:
        for base in ("notebook", "reference"):
            if base in by_engine and row["engine"] in BATCHED:
                row[f"speedup_vs_{base}"] = by_engine[base] / row["ms_per_trial_median"]
        if row["engine"] == "batched" and row["k"] in torch_step:
            row["speedup_vs_torch_step"] = torch_step[row["k"]] / row["ms_per_trial_median"]
    return {"workload": workload.name, "description": workload.description,
            "spec": spec.to_dict(), "n_train": data.n_train, "rows": rows,
            "targets": target_verdicts(workload.name, rows)}


def target_verdicts(workload: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each of the workload's targets: the best batched speed-up measured (at the K the
    target names, if it names one) and whether it meets the target."""
    out = []
    for base, wanted in TARGETS.get(workload, {}).items():
        k = TARGET_K.get(workload)
        got = [r for r in rows if r["engine"] == "batched" and f"speedup_vs_{base}" in r
               and (k is None or r["k"] == k)]
        best = max(got, key=lambda r: r[f"speedup_vs_{base}"], default=None)
        out.append({"baseline": base, "target": wanted, "k": None if best is None else best["k"],
                    "speedup": None if best is None else best[f"speedup_vs_{base}"],
                    "met": None if best is None else best[f"speedup_vs_{base}"] >= wanted})
    return out


# `bench perf --stopping`: notebook 000's moons group where a hook stops members mid-training.
STOP_AFTER, STOP_SHARE = 2, 0.75  # after epoch 2, the 3/4 with the highest validation loss


def stop_worst_hook(k: int, after: int, share: float) -> EpochHook:
    """An `on_epoch` hook that, once every one of K runs has reported epoch `after`, stops the
    `share` of them with the highest validation loss (as a pruner would)."""
    losses: dict[int, float] = {}

    def hook(report: EpochReport) -> list[int]:
        if report.epoch != after:
            return []
        losses[report.run] = report.val["loss"]
        if len(losses) < k:
            return []
        worst = sorted(losses, key=lambda i: (-losses[i], i))[:round(share * k)]
        losses.clear()
        return worst

    return hook


def measure_stopping(*, device: str, k: int, repeats: int, step: str = "auto",
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Seconds per K-run group of notebook 000's moons recipe (10 epochs) with no stopping,
    with `stop_worst_hook` stopping 3/4 after epoch 2 (they leave the stacked computation), and
    with every run stopped after epoch 2 (the cost of the first two epochs and the final
    metrics). The remaining epochs' cost with 1/4 of the members left, relative to all of them,
    is (stop - stop_all) / (none - stop_all), every figure a median of the same interleaved run.
    """
    spec = WORKLOADS["moons"].spec.replace(device=device)
    data = load_data(spec, device)
    specs = [spec.replace(seed=s) for s in range(k)]
    engine = get_engine("batched")

    def group(hook: Callable[[], EpochHook | None]) -> Callable[[], int]:
        def run() -> int:
            engine.train(specs, data=data, on_epoch=hook(), step=step)
            return 1  # time_trials divides by this: seconds per group
        return run

    cases = {"none": lambda: None,
             "stop_3_of_4": lambda: stop_worst_hook(k, STOP_AFTER, STOP_SHARE),
             "stop_all": lambda: stop_worst_hook(k, STOP_AFTER, 1.0)}
    timed = time_trials([group(h) for h in cases.values()], device, repeats)
    ms = {name: 1e3 * statistics.median(seconds) for name, seconds in zip(cases, timed,
                                                                          strict=True)}
    for name, value in ms.items():
        log(f"  moons K={k} {name:<12} {value:10.1f} ms/group")
    rest = (ms["stop_3_of_4"] - ms["stop_all"]) / (ms["none"] - ms["stop_all"])
    return {"workload": "moons", "spec": spec.to_dict(), "k": k, "repeats": repeats,
            "step": chosen_step(spec, data, step), "stop_after_epoch": STOP_AFTER,
            "stopped_share": STOP_SHARE, "ms_per_group_median": ms,
            "ms_per_group": {n: [1e3 * t for t in sec] for n, sec in zip(cases, timed,
                                                                         strict=True)},
            "ratio_stop_vs_none": ms["stop_3_of_4"] / ms["none"],
            "remaining_epochs_ratio": rest}


def format_stopping(result: dict[str, Any]) -> str:
    """The stopping comparison as lines of text."""
    ms = result["ms_per_group_median"]
    return "\n".join([
        f"moons K={result['k']} ({result['step']} step), median of {result['repeats']}: "
        f"no stopping {ms['none']:.1f} ms/group, 3/4 stopped after epoch "
        f"{result['stop_after_epoch']} {ms['stop_3_of_4']:.1f}, all stopped then "
        f"{ms['stop_all']:.1f}",
        f"3/4 stopped vs none: {result['ratio_stop_vs_none']:.2f}x the time; the remaining "
        f"epochs with 1/4 of the members cost {result['remaining_epochs_ratio']:.2f} of "
        f"all members' (expected about 0.25)"])


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Aligned text table (workload, engine, K, ms/trial, memory, speed-ups), then one line per
    target saying whether it is met."""
    lines = [f"{'workload':<11} {'engine':<13} {'K':>5} {'ms/trial':>10} {'peak MiB':>9} "
             f"{'x notebook':>10} {'x reference':>11} {'x torch step':>12}"]
    for res in results:
        for r in res["rows"]:
            mem = r.get("cuda_max_allocated_mib", r.get("peak_rss_growth_mib", float("nan")))
            nb = r.get("speedup_vs_notebook")
            ref = r.get("speedup_vs_reference")
            ts = r.get("speedup_vs_torch_step")
            lines.append(f"{res['workload']:<11} {r['engine']:<13} {r['k']:>5} "
                         f"{r['ms_per_trial_median']:>10.3f} {mem:>9.1f} "
                         f"{'' if nb is None else f'{nb:.1f}':>10} "
                         f"{'' if ref is None else f'{ref:.1f}':>11} "
                         f"{'' if ts is None else f'{ts:.2f}':>12}")
    lines.append("peak MiB: CUDA max allocated, or on the CPU the growth of a fresh process's "
                 "peak RSS during one call")
    for res in results:
        for t in res.get("targets", []):
            if t["speedup"] is None:
                verdict = f"not measured (needs the {t['baseline']} engine and batched)"
            else:
                verdict = (f"{t['speedup']:.1f}x at K={t['k']}: "
                           f"{'met' if t['met'] else 'NOT met'}")
            lines.append(f"target {res['workload']}: batched >= {t['target']:g}x "
                         f"{t['baseline']} per trial -> {verdict}")
    return "\n".join(lines)

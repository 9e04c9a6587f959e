"""`bench perf`: the notebooks' loop vs the reference engine vs the batched engine.

Times whole trials of notebook 000's moons recipe and of notebook 002's 784-16-16-10 network
on MNIST-sized data (see `bench.measure.perf` for the exact recipes), prints milliseconds per trial,
peak memory, speed-ups and whether each of Issue 3's speed targets is met, and writes them with
machine information to `results/perf/NNNN_perf.json` (never overwritten).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime

from bench.commands._common import parse_positive_ints
from bench.errors import UsageError
from bench.measure.machine import git_state, machine_info
from bench.spec import resolve_device
from bench.store import ensure_dir, new_numbered_path, write_error, write_json_atomic

NAME = "perf"
HELP = "time the notebooks' loop, the reference engine and the batched engine per trial"


def configure(parser: argparse.ArgumentParser) -> None:
    """Device, workloads, K values, repeats, threads and output directory."""
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or auto: cuda when available (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized: 2 repeats, K=16,64, 6,000 MNIST-sized examples")
    parser.add_argument("--ks", default=None,
                        help="batched group sizes, comma-separated (default 64,256; quick 16,64)")
    parser.add_argument("--workloads", default="moons,mnist,mnist_fixed",
                        help="comma-separated: moons, mnist, mnist_fixed, and for networks "
                             "given as code plugin_mlp, plugin_bn_mlp, lenet5_digits (default: "
                             "%(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per engine after one warm-up (default 5; quick 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for every engine (default: %(default)s: "
                             "tiny models are bound by per-operation overhead, and extra threads "
                             "only contend)")
    parser.add_argument("--torch-step", action="store_true",
                        help="also time the batched engine on its stacked torch step "
                             "(engine batched_torch) for the native step's gain in the same run")
    parser.add_argument("--stopping", action="store_true",
                        help="instead of the workloads: time a moons group (K = the largest "
                             "--ks) with no stopping, with 3/4 of it stopped after epoch 2 "
                             "(compaction) and with all of it stopped then")
    parser.add_argument("--sweep", type=int, default=None, metavar="TRIALS",
                        help="instead of the workloads: a TPE sweep of notebook 000's recipe "
                             "with TRIALS trials x 5 seeds, group 64 (issue 14 uses 2048): "
                             "its time split and overhead per trial, first and last 256")
    parser.add_argument("--pruning", type=int, default=None, metavar="TRIALS",
                        help="instead of the workloads: the same 27-epoch TPE moons study of "
                             "TRIALS trials x 3 seeds with hyperband and with no pruner "
                             "(issue 13 uses 192): member-epochs, wall time, best value; "
                             "--repeats pairs, interleaved, medians (default 5)")
    parser.add_argument("--step", default="auto", choices=("auto", "native", "torch"),
                        help="the batched engine's step for --stopping: auto, native, torch "
                             "(default: %(default)s)")
    parser.add_argument("--out-dir", default="results/perf",
                        help="where the JSON goes (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Measure every requested workload, print the table and write the JSON file."""
    from bench.engines.clock import num_threads
    from bench.measure import perf
    from bench.measure.timing import MAX_K, MAX_LAPS, MAX_THREADS

    device = resolve_device(args.device)
    if not 1 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}; "
                         "e.g. --threads 1")
    ks = parse_positive_ints(args.ks or ("16,64" if args.quick else "64,256"), "--ks")
    if max(ks) > MAX_K:
        raise UsageError(f"--ks values must be at most {MAX_K} (runs trained at once), "
                         f"got {max(ks)}")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if not 1 <= repeats <= MAX_LAPS:
        raise UsageError(f"--repeats must be between 1 and {MAX_LAPS}, got {repeats}")
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in perf.WORKLOADS]
    if unknown or not names:
        raise UsageError(f"unknown workload(s) {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(perf.WORKLOADS)}")
    ensure_dir(args.out_dir, "--out-dir")  # before measuring: fail fast
    if args.sweep is not None or args.pruning is not None:
        return _sweep_workload(args, repeats)
    results = []
    stopping = None
    with num_threads(args.threads) as threads:
        print(f"bench perf on {device}, {threads} thread(s), {repeats} repeats, K={ks}",
              file=sys.stderr)
        if args.stopping:
            stopping = perf.measure_stopping(device=device, k=max(ks), repeats=repeats,
                                             step=args.step,
                                             log=lambda line: print(line, file=sys.stderr))
        for name in names if stopping is None else []:
            engines = (*perf.ENGINES, perf.TORCH_STEP) if args.torch_step else perf.ENGINES
            results.append(perf.measure_workload(
                perf.WORKLOADS[name], device=device, ks=ks, repeats=repeats, quick=args.quick,
                engines=engines, log=lambda line: print(line, file=sys.stderr)))
        machine = machine_info()
    commit, dirty = git_state()
    print(perf.format_table(results) if stopping is None else perf.format_stopping(stopping))
    document = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench perf " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["perf"]
        else "bench perf",
        "device": device, "threads": threads, "quick": args.quick, "repeats": repeats, "ks": ks,
        "machine": machine, "git_commit": commit, "git_dirty": dirty,
        "note": "ms_per_trial = wall time of a whole run (training, per-epoch validation, final "
                "metrics); batched = one train_many call over K runs divided by K; repeats "
                "interleaved across engines; peak_rss_growth_mib = peak RSS of a fresh process "
                "during one call over its RSS before it",
        "workloads": results,
        **({"stopping": stopping} if stopping is not None else {}),
    }
    try:
        path = new_numbered_path(args.out_dir, "perf", ".json")
        write_json_atomic(path, document)
    except OSError as exc:  # a full disk, a read-only folder
        raise write_error(args.out_dir, exc, "the table above was not saved") from None
    print(f"wrote {path}")
    return 0


MAX_SWEEP_TRIALS = 100_000


def _sweep_workload(args: argparse.Namespace, repeats: int) -> int:
    """`--sweep N` or `--pruning N`: one sweep benchmark (bench.sweeps.speed), printed and
    written as JSON beside the engine figures."""
    import json

    from bench.sweeps import speed

    if args.sweep is not None and args.pruning is not None:
        raise UsageError("--sweep and --pruning are separate runs; give one of them")
    trials = args.sweep if args.sweep is not None else args.pruning
    kind = "sweep" if args.sweep is not None else "pruning"
    if not 1 <= trials <= MAX_SWEEP_TRIALS:
        raise UsageError(f"the number of trials must be between 1 and {MAX_SWEEP_TRIALS:,}, "
                         f"got {trials}; e.g. --{kind} {2048 if kind == 'sweep' else 192}")
    print(f"bench perf --{kind} {trials}: one torch thread, a fresh journal file",
          file=sys.stderr)
    figures = (speed.measure_sweep(trials) if kind == "sweep"
               else speed.measure_pruning(trials, repeats=repeats))
    print(json.dumps(figures, indent=2))
    for t in figures.get("targets", []):
        verdict = {True: "met", False: "NOT met"}.get(
            t["met"], f"not judged (stated for {speed.TARGET_TRIALS} trials)")
        print(f"target: {t['what']} -> {t['figure']} = {t['measured']}: {verdict}")
    commit, dirty = git_state()
    document = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": f"bench perf --{kind} {trials}"
                + (f" --repeats {repeats}" if kind == "pruning" else ""), "machine": machine_info(),
                "git_commit": commit, "git_dirty": dirty, kind: figures}
    try:
        path = new_numbered_path(args.out_dir, kind, ".json")
        write_json_atomic(path, document)
    except OSError as exc:
        raise write_error(args.out_dir, exc, "the figures above were not saved") from None
    print(f"wrote {path}")
    return 0

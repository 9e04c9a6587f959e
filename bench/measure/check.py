"""Regression check: quality and speed of both engines against a committed baseline.

`bench check` trains a small fixed set of check recipes over fixed seeds on the CPU and times
the reference and batched engines, then compares both with `results/baselines/check.json`.

Quality rule (per recipe and engine, on the mean of the validation metric over the seeds):
    fail if  new_mean < base_mean - max(k * base_sd / sqrt(n), floor)   (maximised metrics;
    mirrored for minimised ones), with k and floor stated in the baseline file. On the same
    machine and torch, CPU training is deterministic, so the values reproduce exactly; the
    allowance only has to absorb cross-machine float differences, which perturb a run about as
    much as drawing another seed does, hence a bound in units of the seed-to-seed standard error.

Speed rule (per engine): a machine-independent throughput is the engine's trials per second
    times the time of a fixed calibration workload (plain tensor ops of the same kind: tiny
    matmuls, normalisation, autograd, a bmm) timed right before and after it in the same process:
    "trials per calibration unit". A uniformly slower machine slows both and the ratio cancels.
    Times are process CPU seconds on one torch thread, so waiting for a CPU that other processes
    hold (a shared CI box) is not counted; the median over several interleaved repeats is kept.
    fail if  new < base * (1 - tolerance); the tolerance is stated in the baseline file.

Everything here is pure comparison logic plus the measurement; `bench/commands/check.py` is
the thin CLI.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.catalog import registry
from bench.engines.registry import check_engine_name, get_engine, train_specs
from bench.errors import UsageError
from bench.measure.machine import git_commit, machine_info
from bench.results import RunResult, metric_direction
from bench.spec import RunSpec
from bench.stats import mean_sd
from bench.store import write_error, write_json_atomic

FORMAT = 1
DEFAULT_BASELINE = Path("results/baselines/check.json")
# The registry engines the check measures (the notebooks' loop is `bench perf`'s concern).
ENGINES = tuple(check_engine_name(e, allow_auto=False) for e in ("reference", "batched"))
THREADS = 1  # one torch thread: reproducible reductions and timings on a shared machine

# Defaults written by `--update` when no baseline exists yet (an existing file keeps its own).
QUALITY_K = 3.0
QUALITY_FLOOR = 0.01
SPEED_TOLERANCE = 0.30


def _spec(**fields: Any) -> RunSpec:
    return RunSpec(device="cpu", engine="auto", **fields)


def _notebook_000(**changes: Any) -> RunSpec:
    """Notebook 000's recipe (moons, 2-20-20-20-1 BatchNorm MLP, MSE, SGD lr 0.1 momentum 0.9,
    batch 100, 10 epochs, in a fixed order) with `changes`, on the CPU, engine auto."""
    from bench.notebooks.recipes import get_recipe  # builds RunSpecs: loads the catalog (torch)

    return get_recipe("moons_bn_mlp").spec.replace(device="cpu", engine="auto", **changes)


# The check recipes: small, quick, each exercising a different part of the engines, and not
# fully saturated, so that a broken optimizer, loss or normalisation moves the metric.
@functools.cache
def check_recipes() -> dict[str, RunSpec]:
    """The check's runs by name (built on first use: a RunSpec loads the catalog and torch)."""
    return {
        # Notebook 000's network: BatchNorm, MSE on a sigmoid, SGD with Nesterov momentum; lr
        # 0.01 and 5 epochs keep it unsaturated; shuffled (the recipe is not), as measured.
        "moons_bn_sgd": _notebook_000(lr=0.01, nesterov=True, epochs=5, shuffle=True),
        # Adam and BCE on logits.
        "circle_adam_bce": _spec(task="circle", model="mlp", hidden=(16, 16), activation="relu",
                                 loss="bce", optimizer="adam", lr=0.01, batch_size=100, epochs=10),
        # tanh and the L1 penalty of notebook 004.
        "sine_tanh_l1": _spec(task="sine", model="mlp", hidden=(32, 32), activation="tanh",
                              loss="bce", optimizer="adam", lr=0.01, l1=1e-4, batch_size=100,
                              epochs=10),
        # MNIST-shaped (784 inputs, 10 classes; real MNIST files are not needed): softmax CE, AdamW.
        "mnist_synthetic_adamw": _spec(task="mnist_synthetic", n_samples=1000, model="mlp",
                                       hidden=(64,), activation="relu", loss="ce",
                                       optimizer="adamw", lr=0.0002, weight_decay=0.01,
                                       batch_size=50, epochs=2),
    }
SEEDS = tuple(range(8))
QUICK_SEEDS = (0, 1, 2)

@functools.cache
def speed_spec() -> RunSpec:
    """The speed workload: notebook 000's recipe, shuffled every epoch (the recipe keeps a fixed
    order; the check's baseline has always timed shuffled epochs, so it still does)."""
    return _notebook_000(shuffle=True)
BATCHED_TRIALS = 32  # seeds trained as one batched group per timed call
SPEED_REPEATS = 9
QUICK_SPEED_REPEATS = 3


@dataclass(frozen=True)
class CheckConfig:
    """What one check measures: the seeds, the engines and how many speed repeats."""

    seeds: tuple[int, ...] = SEEDS
    engines: tuple[str, ...] = ENGINES
    speed_repeats: int = SPEED_REPEATS
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool = False, engines: Sequence[str] = ENGINES) -> CheckConfig:
        """The full configuration, or the reduced one of `--quick` (same code path)."""
        if quick:
            return cls(QUICK_SEEDS, tuple(engines), QUICK_SPEED_REPEATS, True)
        return cls(SEEDS, tuple(engines), SPEED_REPEATS, False)


# --- comparison rules (pure functions) ----------------------------------------------------

@dataclass(frozen=True)
class QualityVerdict:
    """One quality row: baseline vs new mean of a metric over seeds, and the allowance."""

    base_mean: float
    base_sd: float
    n: int
    new_mean: float
    allowance: float
    direction: str
    new_diverged: int
    base_diverged: int

    @property
    def limit(self) -> float:
        """The worst mean that still passes."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        return self.base_mean + sign * self.allowance

    @property
    def ok(self) -> bool:
        """True when the mean holds within the allowance and no extra seed diverged."""
        if self.new_diverged > self.base_diverged or not math.isfinite(self.new_mean):
            return False
        if self.direction == "maximize":
            return self.new_mean >= self.limit
        return self.new_mean <= self.limit


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def quality_verdict(base_values: Sequence[float | None], new_values: Sequence[float | None], *,
                    direction: str = "maximize", k: float = QUALITY_K,
                    floor: float = QUALITY_FLOOR) -> QualityVerdict:
    """Compare per-seed metric values: allowance = max(k * base_sd / sqrt(n), floor).

    Non-finite values (diverged runs) are left out of the means and counted; more diverged
    seeds than the baseline had is a failure by itself. One baseline seed gives no standard
    deviation (NaN, `bench.stats`), so the allowance is the floor alone.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    base, new = _finite(base_values), _finite(new_values)
    base_mean, base_sd = mean_sd(base)
    new_mean, _ = mean_sd(new)
    n = max(len(base), 1)
    spread = k * base_sd / math.sqrt(n) if math.isfinite(base_sd) else 0.0
    allowance = max(spread, floor)
    return QualityVerdict(base_mean, base_sd, len(base), new_mean, allowance, direction,
                          len(new_values) - len(new), len(base_values) - len(base))


@dataclass(frozen=True)
class SpeedVerdict:
    """One speed row: baseline vs new normalised throughput (higher is faster)."""

    base: float
    new: float
    tolerance: float

    @property
    def ratio(self) -> float:
        """new / base: below 1 is slower."""
        return self.new / self.base

    @property
    def ok(self) -> bool:
        """True unless the new throughput is below base * (1 - tolerance)."""
        return math.isfinite(self.new) and self.new >= self.base * (1.0 - self.tolerance)

    def describe(self) -> str:
        """'1.85x slower', '1.10x faster' or 'same' (within half a percent)."""
        if not math.isfinite(self.new) or self.new <= 0:
            return "no measurement"
        if abs(self.ratio - 1) < 0.005:
            return "same"
        if self.ratio < 1:
            return f"{1 / self.ratio:.2f}x slower"
        return f"{self.ratio:.2f}x faster"


def speed_verdict(base: float, new: float, *, tolerance: float = SPEED_TOLERANCE) -> SpeedVerdict:
    """Compare normalised throughputs: fail below base * (1 - tolerance)."""
    if not 0 < tolerance < 1:
        raise ValueError(f"speed tolerance must be in (0, 1), got {tolerance}")
    return SpeedVerdict(float(base), float(new), float(tolerance))


def normalised_throughput(calibration_seconds: Sequence[float], workload_seconds: Sequence[float],
                          trials: int) -> float:
    """Median over repeats of trials per calibration unit: trials * cal / workload.

    `calibration_seconds[i]` is the calibration time measured next to `workload_seconds[i]` in
    the same process; on a machine uniformly f times slower both grow by f and it cancels.
    """
    if len(calibration_seconds) != len(workload_seconds) or not workload_seconds:
        raise ValueError("need one calibration time per workload time, at least one repeat")
    return statistics.median(trials * c / w for c, w in zip(calibration_seconds, workload_seconds,
                                                             strict=True))


# --- measurement --------------------------------------------------------------------------

def calibration_workload(steps: int = 50) -> None:
    """A fixed piece of work shaped like small-network training, independent of bench code.

    Tiny matmuls, a batch normalisation, autograd and in-place updates (the per-operation
    overhead the reference engine lives on) plus a batched matmul (the arithmetic the batched
    engine lives on). Its time is the unit speed is expressed in.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 2, generator=g)
    ws = [(0.3 * torch.randn(a, b, generator=g)).requires_grad_()
          for a, b in ((2, 20), (20, 20), (20, 1))]
    xb = torch.randn(32, 100, 20, generator=g)
    wb = (0.3 * torch.randn(32, 20, 20, generator=g)).requires_grad_()
    for _ in range(steps):
        h = x
        for w in ws[:-1]:
            h = torch.relu(h @ w)
            h = (h - h.mean(0)) / (h.var(0, unbiased=False) + 1e-5).sqrt()
        loss = (h @ ws[-1]).square().mean() + torch.tanh(torch.bmm(xb, wb)).square().mean()
        loss.backward()
        with torch.no_grad():
            for w in (*ws, wb):
                w -= 0.01 * w.grad
                w.grad = None


def _cpu_seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _run(specs: Sequence[RunSpec], engine: str) -> list[RunResult]:
    return train_specs(specs, engine)


def measure_quality(config: CheckConfig, progress: Callable[[str], None] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Train every check recipe over the seeds with each engine; per-seed validation metrics."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in check_recipes().items():
        metric = f"val_{registry.get_task(spec.task).default_metric}"
        specs = [spec.replace(seed=s) for s in config.seeds]
        for engine in config.engines:
            if progress is not None:
                progress(f"quality {name} [{engine}]")
            results = _run(specs, engine)
            values = [r.metrics[metric] for r in results]
            out[f"{name}/{engine}"] = {
                "recipe": name, "engine": engine, "metric": metric,
                "direction": metric_direction(metric), "spec": spec.to_dict(),
                "values": [v if math.isfinite(v) else None for v in values],
            }
    return out


def measure_speed(config: CheckConfig, progress: Callable[[str], None] | None = None
                  ) -> dict[str, Any]:
    """Interleaved repeats of calibration and each engine; normalised throughput per engine."""
    trials = {e: BATCHED_TRIALS if get_engine(e).stacks else 1 for e in config.engines}
    workloads = {e: [speed_spec().replace(seed=s) for s in range(trials[e])]
                 for e in config.engines}
    calibration_workload()  # warm-up: first calls allocate and load kernels
    for engine, specs in workloads.items():
        _run(specs, engine)
    samples: dict[str, dict[str, list[float]]] = {
        e: {"calibration_cpu": [], "cpu": [], "wall": []} for e in config.engines}
    for repeat in range(config.speed_repeats):
        if progress is not None:
            progress(f"speed repeat {repeat + 1}/{config.speed_repeats}")
        engines = list(config.engines)
        engines = engines[repeat % len(engines):] + engines[:repeat % len(engines)]
        before, _ = _cpu_seconds(calibration_workload)
        for engine in engines:
            cpu, wall = _cpu_seconds(lambda e=engine: _run(workloads[e], e))
            after, _ = _cpu_seconds(calibration_workload)
            samples[engine]["calibration_cpu"].append((before + after) / 2)
            samples[engine]["cpu"].append(cpu)
            samples[engine]["wall"].append(wall)
            before = after
    out: dict[str, Any] = {}
    for engine, s in samples.items():
        out[engine] = {
            "trials_per_call": trials[engine],
            "normalised": normalised_throughput(s["calibration_cpu"], s["cpu"], trials[engine]),
            "trials_per_cpu_second": trials[engine] / statistics.median(s["cpu"]),
            "trials_per_wall_second": trials[engine] / statistics.median(s["wall"]),
            "calibration_cpu_seconds": statistics.median(s["calibration_cpu"]),
            "samples": s,
        }
    return out


def measure(config: CheckConfig, progress: Callable[[str], None] | None = None
            ) -> dict[str, Any]:
    """A full measurement, in the shape of the baseline file (without its rules)."""
    from bench.engines.clock import num_threads

    with num_threads(THREADS):
        quality = measure_quality(config, progress)
        speed = measure_speed(config, progress)
    return {
        "config": _config_dict(config),
        "quality": quality,
        "speed": speed,
    }


def _config_dict(config: CheckConfig) -> dict[str, Any]:
    """The parts of a configuration that must match for two measurements to be comparable."""
    return {
        "quick": config.quick, "seeds": list(config.seeds), "engines": list(config.engines),
        "speed_repeats": config.speed_repeats, "threads": THREADS,
        "recipes": {name: spec.to_dict() for name, spec in check_recipes().items()},
        "speed_spec": speed_spec().to_dict(), "batched_trials": BATCHED_TRIALS,
    }


# --- baseline file ------------------------------------------------------------------------

def default_rules() -> dict[str, Any]:
    """The comparison rules a fresh baseline states."""
    return {
        "quality_k": QUALITY_K,
        "quality_floor": QUALITY_FLOOR,
        "quality_rule": "fail if new_mean < base_mean - max(quality_k * base_sd / sqrt(n), "
                        "quality_floor) (mirrored for minimised metrics), or more seeds diverge",
        "speed_tolerance": SPEED_TOLERANCE,
        "speed_rule": "fail if new normalised throughput < base * (1 - speed_tolerance); "
                      "normalised = median over repeats of trials * calibration CPU seconds / "
                      "workload CPU seconds",
    }


def build_baseline(measurement: dict[str, Any], rules: dict[str, Any] | None = None,
                   ) -> dict[str, Any]:
    """A baseline document: the measurement plus rules, machine, commit and time."""
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(threads=THREADS),
        "commit": git_commit(),
        "rules": dict(rules) if rules is not None else default_rules(),
        **measurement,
    }


def replaceable_by_update(path: str | Path) -> bool:
    """Whether `--update` may write `path`: absent or empty, a baseline (damaged ones too: a
    .json file that does not parse), never a file of another kind (a study file, another
    JSON file such as a timing file)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not JSON: a damaged baseline only where named like one
        return path.suffix.lower() == ".json"
    return isinstance(data, dict) and "rules" in data and "format" in data


def rules_for_update(path: str | Path) -> dict[str, Any]:
    """The rules an `--update` writes: the existing file's (tuned by hand), else the defaults."""
    try:
        return load_baseline(path)["rules"]
    except UsageError:
        return default_rules()


def write_baseline(path: str | Path, baseline: dict[str, Any]) -> Path:
    """Replace the baseline file atomically (a failure leaves the old one intact); a full disk
    or a read-only place is a one-line UsageError."""
    try:
        return write_json_atomic(path, baseline)
    except OSError as exc:
        raise write_error(path, exc, "the previous baseline is kept") from None


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline file; problems are one-line UsageErrors naming the fix."""
    path = Path(path)
    fix = f"rewrite it with `bench check --update --baseline {path}`"
    if path.is_dir():
        raise UsageError(f"baseline {path} is a folder, not a baseline file; pass the JSON file, "
                         f"e.g. --baseline {DEFAULT_BASELINE}")
    if not path.is_file():
        raise UsageError(f"baseline {path} not found; create it with "
                         f"`bench check --update --baseline {path}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        detail = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0][:120]
        raise UsageError(f"baseline {path} is not valid JSON ({detail}); fix it or {fix}") from None
    missing = [k for k in ("format", "rules", "config", "quality", "speed")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise UsageError(f"baseline {path} lacks {', '.join(missing)}; {fix}")
    fmt = data["format"]
    if not _is_number(fmt) or isinstance(fmt, float):
        raise UsageError(f"baseline {path} has format {fmt!r}, a {type(fmt).__name__}: this bench "
                         f"reads the integer {FORMAT} (\"format\": {FORMAT}); fix it or {fix}")
    if fmt != FORMAT:
        raise UsageError(f"baseline {path} has format {fmt}, this bench reads {FORMAT}; {fix}")
    try:
        _validate_rules(data["rules"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"baseline {path} has bad rules ({exc}); fix them or {fix}") from None
    try:
        _validate_rows(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"baseline {path} has a malformed row ({exc!r}); {fix}") from None
    return data


def _is_number(value: Any) -> bool:
    """A JSON number: int or float, not a bool (True is an int in Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_number(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _validate_rules(rules: dict[str, Any]) -> None:
    if not isinstance(rules, dict):
        raise TypeError(f"rules must be an object, got {type(rules).__name__}")
    k = _finite_number(rules["quality_k"], "quality_k")
    floor = _finite_number(rules["quality_floor"], "quality_floor")
    if k < 0 or floor < 0:
        raise ValueError("quality_k and quality_floor must be >= 0")
    if not 0 < _finite_number(rules["speed_tolerance"], "speed_tolerance") < 1:
        raise ValueError("speed_tolerance must be in (0, 1)")


def _validate_rows(data: dict[str, Any]) -> None:
    """Every quality row has per-seed values and a direction; every speed row a figure."""
    for key in ("config", "quality", "speed"):
        if not isinstance(data[key], dict):
            raise TypeError(f"{key} must be an object, got {type(data[key]).__name__}")
    for key, row in data["quality"].items():
        if row["direction"] not in ("maximize", "minimize"):
            raise ValueError(f"{key}: direction {row['direction']!r}")
        if not isinstance(row["values"], list) or not all(v is None or _is_number(v)
                                                          for v in row["values"]):
            raise ValueError(f"{key}: values must be a list of numbers or null")
    for engine, row in data["speed"].items():
        if not _finite_number(row["normalised"], f"{engine}: normalised speed") > 0:
            raise ValueError(f"{engine}: normalised speed must be positive")


def _as_read_now(config: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration with its RunSpecs read as this version reads records
    (`RunSpec.from_dict`): a field added since (at its default) is no difference. A spec that
    no longer reads is left as stored, so it differs."""
    def read(spec: Any) -> Any:
        try:
            return RunSpec.from_dict(spec).to_dict()
        except (UsageError, TypeError, AttributeError):
            return spec

    out = dict(config)
    if isinstance(out.get("recipes"), dict):
        out["recipes"] = {name: read(spec) for name, spec in out["recipes"].items()}
    if "speed_spec" in out:
        out["speed_spec"] = read(out["speed_spec"])
    return out


def comparable(baseline: dict[str, Any], config: CheckConfig, path: str | Path) -> None:
    """Refuse (UsageError) to compare against a baseline measured under another configuration."""
    mine, theirs = _config_dict(config), _as_read_now(baseline.get("config", {}))
    differs = sorted(k for k in mine if theirs.get(k) != mine[k])
    if not differs:
        return
    hint = ""
    if "quick" in differs:
        hint = " (run with --quick)" if theirs.get("quick") else " (run without --quick)"
    raise UsageError(f"baseline {path} was measured with a different check configuration "
                     f"({', '.join(differs)} differ){hint}; refresh it with "
                     f"`bench check --update --baseline {path}`")


# --- comparing and reporting ----------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One line of the report: what was compared and whether it held."""

    kind: str  # "quality" or "speed"
    name: str
    cells: tuple[str, ...]
    ok: bool


def compare(baseline: dict[str, Any], measurement: dict[str, Any]) -> list[Row]:
    """Every quality and speed row of `measurement` judged against `baseline`'s rules."""
    rules = baseline["rules"]
    rows: list[Row] = []
    for key, new in measurement["quality"].items():
        base = baseline["quality"].get(key)
        if base is None:
            raise UsageError(f"baseline has no quality row {key!r}; refresh it with "
                             "`bench check --update`")
        v = quality_verdict(base["values"], new["values"], direction=new["direction"],
                            k=float(rules["quality_k"]), floor=float(rules["quality_floor"]))
        note = "ok" if v.ok else "REGRESSION"
        if v.new_diverged > v.base_diverged:
            note += f" ({v.new_diverged} diverged)"
        rows.append(Row("quality", key, (
            new["recipe"], new["engine"], new["metric"], f"{v.base_mean:.4f}",
            f"{v.base_sd:.4f}", f"{v.new_mean:.4f}", f"{v.new_mean - v.base_mean:+.4f}",
            f"{v.limit:.4f}", note), v.ok))
    for engine, new in measurement["speed"].items():
        base = baseline["speed"].get(engine)
        if base is None:
            raise UsageError(f"baseline has no speed row for engine {engine!r}; refresh it "
                             "with `bench check --update`")
        v = speed_verdict(base["normalised"], new["normalised"],
                          tolerance=float(rules["speed_tolerance"]))
        rows.append(Row("speed", engine, (
            engine, f"{v.base:.4g}", f"{v.new:.4g}", v.describe(),
            f"{new['trials_per_wall_second']:.1f}", "ok" if v.ok else "REGRESSION"), v.ok))
    return rows


QUALITY_HEADER = ("recipe", "engine", "metric", "baseline", "base_sd", "now", "change",
                  "limit", "verdict")
SPEED_HEADER = ("engine", "baseline", "now", "change", "trials/s (wall)", "verdict")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in (header, *rows)]
    return "\n".join(lines)


def render(baseline: dict[str, Any], measurement: dict[str, Any], rows: Sequence[Row]) -> str:
    """The readable report: rules, quality table, speed table, speedup and the verdict."""
    rules = baseline["rules"]
    n = len(measurement["config"]["seeds"])
    out = [
        f"quality: mean validation metric over {n} seeds; fails when worse than "
        f"max({rules['quality_k']:g} * sd / sqrt(n), {rules['quality_floor']:g}) "
        "below the baseline",
        format_table(QUALITY_HEADER, [r.cells for r in rows if r.kind == "quality"]),
        "",
        f"speed: trials per calibration unit (median of "
        f"{measurement['config']['speed_repeats']} repeats, CPU time, {THREADS} thread); "
        f"fails below baseline * (1 - {rules['speed_tolerance']:g})",
        format_table(SPEED_HEADER, [r.cells for r in rows if r.kind == "speed"]),
    ]
    speed, base_speed = measurement["speed"], baseline["speed"]
    if all(e in speed and e in base_speed for e in ENGINES):
        def speedup(s: dict[str, Any]) -> float:
            return s["batched"]["normalised"] / s["reference"]["normalised"]

        out.append(f"batched/reference speedup (information): baseline "
                   f"{speedup(base_speed):.1f}x, now {speedup(speed):.1f}x")
    machine = baseline.get("machine") if isinstance(baseline.get("machine"), dict) else {}
    host = machine.get("host", machine.get("node"))  # older baselines say node and processor
    if host != platform.node():
        out.append(f"note: baseline measured on {host or 'another machine'} "
                   f"({machine.get('cpu_model', machine.get('processor', '?'))}); speed is "
                   "compared through the calibration normalisation")
    bad = [r.name for r in rows if not r.ok]
    out.append("")
    out.append(f"check FAILED: {len(bad)} regression(s): {', '.join(bad)}" if bad
               else "check passed")
    return "\n".join(out)

"""Memory and work estimates made before anything runs, and the bounds that refuse a request.

One function, `estimate`, sizes a request from plain values: the model's parameters (from
`models.architecture` / `parameter_count`), the data (the task's training-set size and input
width), the members trained at once (a sweep's stacked group: group x seeds) and the dtype.
`bench run` and study parsing (`bench sweep`) both call `check`, which refuses in one line,
memory first:

- memory: an estimate above this machine's physical memory cannot fit, whatever flag is given
  ("... needs an estimated 80.0 GB of memory, this machine has 23.4 GB; use smaller hidden
  sizes"). The estimate counts the data (generated in float64, cached, and copied in the run's
  dtype: about 24 bytes per value), one member's parameters, gradients, optimizer state and
  batch activations (the batched engine's own per-member formula), the float64 draws of the
  initial weights, the largest evaluation pass, the stacked chunk of a group (the batched
  engine fills up to `bench.engines.batched.MEMORY_BUDGET` with members), the run records held in
  memory (Optuna's journal storage keeps every trial) and the process itself.
- work: more than `MAX_SAMPLE_EPOCHS` training examples processed (examples x epochs x runs),
  more than `MAX_MULTIPLY_ADDS` multiply-adds (forward and backward of every training example,
  plus the validation pass, each epoch, each run) or more than `MAX_STEPS` optimizer steps in
  one run (each step has a fixed cost, however small the model) is hours of CPU time: refused
  unless it is meant: `bench run --no-limits`, study key `allow_long = true`, or
  `no_limits=True` from `bench sweep`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.catalog import registry
from bench.errors import UsageError
from bench.spec import RunSpec

MAX_SAMPLE_EPOCHS = 1e10  # training examples processed, all runs together (~hours on a CPU)
MAX_MULTIPLY_ADDS = 1e14  # multiply-adds, all runs together (~hours on a CPU)
MAX_STEPS = 1e7  # optimizer steps of one run (epochs x batches per epoch; ~hours of overhead)
VALUE_BYTES = 24  # per data value: float64 generation + float64 cache + the run's dtype copy
BASE_BYTES = 512 << 20  # the Python process with torch, numpy, optuna loaded
RECORD_BYTES = 4096  # one RunSpec and RunResult (metrics, timings) in memory
EPOCH_RECORD_BYTES = 40 * 5  # per epoch of a run: its curve values as Python floats and JSON
REAL_TASK_EXAMPLES = {"digits": 1797, "mnist": 70000, "fashion_mnist": 70000}  # whole data set
DTYPE_BYTES = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Estimate:
    """What a request needs: peak memory by part (bytes) and total work."""

    parts: dict[str, int]  # "process", "data", "model", "activations", "members", "records"
    sample_epochs: float  # training examples processed, all runs
    multiply_adds: float  # multiply-adds, all runs
    steps: float  # optimizer steps of one run
    parameters: int  # one member's trainable parameters

    @property
    def memory_bytes(self) -> int:
        """Estimated peak memory of the process."""
        return sum(self.parts.values())

    def worst(self, other: Estimate) -> Estimate:
        """Part by part and figure by figure, the larger of two estimates."""
        parts = {k: max(self.parts.get(k, 0), other.parts.get(k, 0))
                 for k in self.parts | other.parts}
        return Estimate(parts, max(self.sample_epochs, other.sample_epochs),
                        max(self.multiply_adds, other.multiply_adds),
                        max(self.steps, other.steps), max(self.parameters, other.parameters))


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_examples(spec: RunSpec) -> int:
    """Training-set size of the spec's task: the synthetic size, or the whole real data set."""
    task = registry.get_task(spec.task)
    if task.synthetic:
        return int(spec.n_samples or task.default_n_samples)
    return REAL_TASK_EXAMPLES.get(task.name, 70000)


def estimate(spec: RunSpec, *, runs: int = 1, together: int = 1, stored_runs: int = 0) -> Estimate:
    """Estimate `runs` runs like `spec`, `together` of them trained at once (a stacked group),
    with `stored_runs` run records held in memory besides them. Pure arithmetic: nothing is
    allocated, so an absurd request (a billion seeds) is sized and refused at once."""
    # the batched engine loads torch; sizing a request must not load it at import
    from bench.catalog.models import Linear, module_size, parameter_count
    from bench.engines.batched import MEMORY_BUDGET
    from bench.engines.network import network_of

    task = registry.get_task(spec.task)
    head, arch, model = network_of(spec)
    if arch is None:  # a network given as code: sized by a meta-device pass
        size = module_size(model, task.input_shape, head.n_outputs)
        params, macs, largest = size.parameters, size.multiply_adds, size.parameters
        widths, width = [size.activations // 2], size.widest  # autograd: ~3 per unit
    else:
        linears = [layer for layer in arch if isinstance(layer, Linear)]
        params = parameter_count(arch)
        widths = [layer.out_features for layer in linears]
        macs = sum(layer.in_features * layer.out_features for layer in linears)
        largest = max((layer.in_features * layer.out_features for layer in linears), default=0)
        width = max(widths, default=1)
    elem = DTYPE_BYTES[spec.dtype]
    n_train = training_examples(spec)
    n_eval = max(n_train // 2, 200)  # synthetic validation and test sets (at most this size)
    n_total = n_train + 2 * n_eval if task.synthetic else n_train
    batch = min(spec.batch_size or n_train, n_train)

    # One member, as bench.engines.batched.members_per_chunk counts it: parameters, gradients and
    # optimizer state (8 per parameter), batch activations (6 per unit), the gathered batch.
    weights = elem * 8 * params
    activations = elem * (6 * batch * sum(widths) + batch * task.input_dim)
    init = 3 * 8 * largest  # float64 draws of the largest weight matrix (rand, scaled, cast)
    evaluation = 2 * elem * n_train * width  # the final pass over train
    budget = MEMORY_BUDGET["cuda" if spec.device == "cuda" else "cpu"]
    chunk = max(1, min(together, budget // max(weights + activations, 1)))
    parts = {
        "process": BASE_BYTES,
        "data": n_total * (task.input_dim + 1) * VALUE_BYTES,
        "model": weights + init,
        "activations": activations + evaluation,
        "members": (chunk - 1) * (weights + activations),
        "records": (together + stored_runs) * (RECORD_BYTES + spec.epochs * EPOCH_RECORD_BYTES),
    }
    sample_epochs = float(n_train) * spec.epochs * runs
    multiply_adds = float(macs) * (3 * n_train + n_eval) * spec.epochs * runs
    steps = float(spec.epochs) * -(-n_train // batch)
    return Estimate(parts, sample_epochs, multiply_adds, steps, params)


def gigabytes(n: float) -> str:
    """Bytes as '80.0 GB' (10^9 bytes)."""
    return f"{n / 1e9:.1f} GB"


_FIXES = {
    "data": "use a smaller n_samples",
    "model": "use smaller hidden sizes",
    "activations": "use a smaller batch size, n_samples or hidden sizes",
    "members": "use smaller hidden sizes or fewer seeds",
    "records": "use fewer seeds, a smaller group or fewer epochs",
    "process": "free some memory",
}


def check(est: Estimate, *, what: str, allow_long: bool, long_hint: str,
          memory: int | None = None) -> None:
    """Refuse (one-line UsageError) what cannot fit in memory (always), then work beyond the
    bounds unless `allow_long`. `what` names the request ("bench run", "study.toml"),
    `long_hint` how to say that a long run is meant (a flag or a study key)."""
    memory = machine_memory() if memory is None else memory
    if memory is not None and est.memory_bytes > memory:
        biggest = max(est.parts, key=lambda k: est.parts[k])
        raise UsageError(f"{what} needs an estimated {gigabytes(est.memory_bytes)} of memory "
                         f"({biggest} {gigabytes(est.parts[biggest])}, {est.parameters:,} "
                         f"parameters per model), this machine has {gigabytes(memory)}; "
                         f"{_FIXES[biggest]}")
    if allow_long:
        return
    for figure, limit, unit in (
            (est.sample_epochs, MAX_SAMPLE_EPOCHS, "training examples (examples x epochs x runs)"),
            (est.multiply_adds, MAX_MULTIPLY_ADDS, "multiply-adds (forward and backward, all runs)"),
            (est.steps, MAX_STEPS, "optimizer steps in one run (epochs x batches)")):
        if figure > limit:
            raise UsageError(f"{what} is estimated at {_count(figure)} {unit}, above the bound "
                             f"of {_count(limit)}: hours of training; use fewer epochs, seeds "
                             f"or trials, or {long_hint} if it is meant")


def _count(n: float) -> str:
    """A count for messages: 860 or 2.00e7."""
    if n < 1e6:
        return f"{n:.3g}"
    mantissa, exponent = f"{n:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def check_runs(specs: list[RunSpec], *, allow_long: bool = False, together: int | None = None,
               what: str = "bench run") -> None:
    """The budget check of `bench run`: these specs (seeds of one spec), `together` of them
    trained at once (default: all, as the batched engine does)."""
    if not specs:
        return
    est = estimate(specs[0], runs=len(specs),
                   together=len(specs) if together is None else together)
    check(est, what=what, allow_long=allow_long, long_hint="--no-limits")


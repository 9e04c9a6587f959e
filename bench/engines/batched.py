"""The batched engine: many runs that share a shape, trained as one stacked computation.

Tiny networks are bound by per-operation overhead, not arithmetic, so K runs are trained at
once: every parameter is stacked to `[K, ...]`, linear layers are batched GEMMs (one plain
GEMM over all members when the batch is shared), BatchNorm runs over all K*F channels at once
(each member keeps its own running statistics), and the loss is the sum of the members'
losses, so each member's gradient is exactly its own. The optimizer step is functional and
per member: one flat `[P]` buffer holds all K members' parameters (and another their
gradients), per-member hyperparameters are expanded to it once, and the SGD / Adam / AdamW
formulas of `torch.optim` run as a handful of element-wise ops over the whole buffer.

The step has no autograd: `Stack.forward` / `Stack.backward` are written out for the layer
types there are (Linear, relu / tanh / sigmoid, BatchNorm) with the losses' gradients
(`loss_and_grad`), on feature-major `[K, F, B]` activations, into buffers allocated once per
batch shape and reused every step (a fresh multi-MiB tensor costs page faults). BatchNorm is
folded into the Linear layer after it, so its output is never materialised, and its backward
needs no reduction over examples beyond the next layer's weight-gradient GEMM. The tests
hold every registry model x optimizer to the reference engine at 1e-9 in float64.

Members differ in seed (initial weights and shuffle order), learning rate, momentum, betas,
eps, weight decay, L1 lambda and init scale; everything else (`GROUP_FIELDS`) must be shared,
and `train_many` splits mixed specs into groups (and large groups into memory-bounded chunks).
A member whose epoch train or validation loss is not finite is reported diverged at that
epoch, exactly like the reference engine, and masked from then on: its parameters, optimizer
state and learning rate are zeroed so it affects nothing. A member the `on_epoch` hook stops is
frozen instead (learning rate 0, optimizer state zeroed, its BatchNorm running statistics put
back before the final metrics), so its result is that of the shorter run; it still rides along
in the stacked step until the group ends (dropping such members is the next issue's compaction).
The per-epoch record, divergence rule and RunResults are `bench.engines.bookkeeping`'s; the
stacked model and step live in `bench.engines.stacked`, the optimizers in
`bench.engines.functional_optim`.

Timing: a stacked group is timed as a whole, and each member reports the group's time divided
by K (`train_seconds`, `eval_seconds`, and the `seconds` of `time_to_target`), so per-run
throughput figures stay comparable with the reference engine.

No host synchronisation happens inside the step loop: losses are accumulated on the device
and read once per epoch together with the validation metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch

from bench.catalog import registry
from bench.catalog.losses import encode_targets, predict_classes
from bench.catalog.models import Head, Linear, initial_state, parameter_count
from bench.catalog.tasks import TaskData
from bench.engines import native
from bench.engines.bookkeeping import Ledger, final_metric_keys, relay
from bench.engines.clock import Stopwatch, num_threads
from bench.engines.functional_optim import StackedOptimizer
from bench.engines.registry import EpochHook, Progress
from bench.engines.setup import Plan, load_data, plan_run, shuffle_generator
from bench.engines.stacked import Stack, Workspace, gather_rows, torch_step
from bench.results import RunResult, metric_names
from bench.spec import RunSpec, resolve_device

# What members of one stacked group must share; everything else may differ per member.
GROUP_FIELDS = ("task", "data_seed", "n_samples", "model", "hidden", "activation", "batch_norm",
                "init", "loss", "optimizer", "nesterov", "batch_size", "epochs", "shuffle",
                "dtype", "device")

MAX_MEMBERS = 4096
# Bytes one chunk may use for activations, stacked parameters and gathered batches.
MEMORY_BUDGET = {"cpu": 1 << 30, "cuda": 8 << 30}
PREGATHER_BYTES = 256 << 20  # gather a whole epoch's shuffled inputs at once below this size
EVAL_ELEMENTS = 1 << 24  # elements of the widest activation per evaluation chunk
STEPS = ("auto", "native", "torch")  # how a CPU group's step runs; auto: native when it builds


def group_key(spec: RunSpec) -> tuple:
    """The shape a spec shares with the other members of its stacked group."""
    return (*(getattr(spec, f) for f in GROUP_FIELDS), resolve_device(spec.device))


def train_specs(specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
                progress: Progress | None = None, data: TaskData | None = None,
                **options: object) -> list[RunResult]:
    """The engine contract (`bench.engines.registry`): `train_many`."""
    return train_many(specs, on_epoch=on_epoch, progress=progress, data=data, **options)


def train_many(specs: Sequence[RunSpec], *, on_epoch: EpochHook | None = None,
               progress: Progress | None = None, data: TaskData | None = None,
               record_steps: bool = False, keep_params: bool = False,
               max_members: int | None = None, step: str = "auto") -> list[RunResult]:
    """Train every spec with the batched engine; results come back in input order.

    Specs are grouped by `group_key`; each group is trained in chunks of at most
    `max_members` members (default: as many as the memory budget allows, at most 4096).
    `progress(n)` is called with the number of runs each finished chunk completed.
    `step` picks the step implementation: "native" (the fused C++ kernel of `bench.engines.native`,
    CPU only), "torch" (the stacked torch step below, any device) or "auto" (native where it
    is available, else torch). Both compute the same function.
    `on_epoch` sees every member's epochs (indices into `specs`); a member it stops is frozen
    (see `bench.engines.registry`); `data`, when given, is every spec's task data.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    results: list[RunResult | None] = [None] * len(specs)
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec), []).append(i)
    pending: set[int] = set()  # stop requests from the hook, by index into specs
    given = data
    for indices in groups.values():
        first = specs[indices[0]]
        device = resolve_device(first.device)
        data = load_data(first, device) if given is None else given.to(device, first.torch_dtype)
        plan = plan_run(first, data.n_train)
        limit = max_members or members_per_chunk(plan, data, first.shuffle)
        # The native kernel runs on its own threads (torch's count); torch itself drops to one
        # thread meanwhile, or its idle OpenMP workers spin against the kernel's.
        use_native = _use_native(step, plan, data.x_train.shape[1], first.shuffle)
        native_threads = torch.get_num_threads() if use_native else 0
        for start in range(0, len(indices), limit):
            chunk = indices[start:start + limit]
            with num_threads(1) if native_threads else contextlib.nullcontext():
                trained = _train_group([specs[i] for i in chunk], data, plan,
                                       record_steps=record_steps, keep_params=keep_params,
                                       native_threads=native_threads,
                                       on_epoch=relay(on_epoch, chunk, pending))
            for i, result in zip(chunk, trained, strict=True):
                results[i] = result
            if progress is not None:
                progress(len(chunk))
    return [r for r in results if r is not None]


def chosen_step(spec: RunSpec, data: TaskData, step: str = "auto") -> str:
    """Which step implementation ("native" or "torch") `train_many` runs for spec's group."""
    plan = plan_run(spec, data.n_train)
    return "native" if _use_native(step, plan, data.x_train.shape[1], spec.shuffle) else "torch"


def _use_native(step: str, plan: Plan, in_dim: int, shuffle: bool) -> bool:
    """Whether a group runs the native step (`step="native"` where unsupported is an error).

    "auto" takes the faster of the two as measured by `bench perf`: the native step, except
    for wide inputs in a shared batch order, where the torch step's first layer is one large
    GEMM over all members (MKL beats the per-member kernel there).
    """
    if step == "torch":
        return False
    ok = native.supports(plan.device, plan.dtype)
    if step == "native" and not ok:
        raise ValueError(f"the native step needs a CPU float32/float64 group and a working C++ "
                         f"compiler (device {plan.device}, {plan.dtype}); use step='torch'")
    if step == "auto" and in_dim >= native.WIDE_INPUT and not shuffle:
        return False
    return ok


def members_per_chunk(plan: Plan, data: TaskData, shuffle: bool) -> int:
    """How many members fit the memory budget of the plan's device (at least 1)."""
    elem = plan.dtype.itemsize
    widths = [layer.out_features for layer in plan.arch if isinstance(layer, Linear)]
    in_dim = data.x_train.shape[1]
    per_member = elem * (8 * parameter_count(plan.arch) + 6 * plan.batch_size * sum(widths))
    if shuffle:
        per_member += elem * plan.batch_size * in_dim
    budget = MEMORY_BUDGET["cuda" if plan.device.startswith("cuda") else "cpu"]
    return int(max(1, min(MAX_MEMBERS, budget // per_member)))



def _loss(loss_fn: Callable[..., torch.Tensor], out: torch.Tensor, target: torch.Tensor,
          head: Head) -> torch.Tensor:
    """Per-member losses [K]; shared float targets are expanded to the stacked outputs."""
    if target.is_floating_point() and target.dim() < out.dim():
        target = target.expand_as(out)
    return loss_fn(out, target, head)


# --- evaluation -----------------------------------------------------------------------------------

def _evaluate(stack: Stack, x: torch.Tensor, y: torch.Tensor, loss_name: str,
              kind: str, keep: bool = True) -> dict[str, torch.Tensor]:
    """Per-member loss and metrics ([K] tensors) on one split, BN in eval mode.

    Large splits are evaluated in example chunks (sums combined), so memory stays bounded;
    chunks are as large as that allows, since the first layer's GEMM runs faster on wide
    operands. With `keep`, the buffers stay with the stack for the next call (the per-epoch
    validation); otherwise they are freed on return.
    """
    loss_fn = registry.get_loss(loss_name).fn
    head = stack.head
    widest = max(layer.out_features for layer in stack.arch if isinstance(layer, Linear))
    n = x.shape[0]
    chunk = max(1, min(n, EVAL_ELEMENTS // (stack.k * widest)))
    transient: dict[int, Workspace] = {}
    target = encode_targets(y, head, loss_name, stack.dtype)
    loss_sum: torch.Tensor | None = None
    score_sum: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            size = stop - start
            if stack.native is not None and x.shape[1] < native.WIDE_INPUT:
                out = stack.native.eval_forward(x, start, size)
            else:
                ws = stack.workspace(size, False) if keep else transient.setdefault(
                    size, Workspace(stack.dtype, stack.device))
                out = stack.forward(x[start:stop], False, ws)
            # [K, B, O] in memory: the loss and argmax run along contiguous rows of O.
            out = out.transpose(1, 2).contiguous()
            loss = _loss(loss_fn, out, target[start:stop], head)
            if kind == "regression":
                score = ((out.squeeze(-1) - y[start:stop]) ** 2).sum(dim=-1)
            else:
                score = (predict_classes(out, head) == y[start:stop]).to(out.dtype)
                score = score.mean(dim=-1) if chunk >= n else score.sum(dim=-1)
            if chunk >= n:
                loss_sum, score_sum = loss, score
            else:
                loss_sum = loss * (stop - start) + (0 if loss_sum is None else loss_sum)
                score_sum = score + (0 if score_sum is None else score_sum)
    assert loss_sum is not None and score_sum is not None
    scores = {"loss": loss_sum if chunk >= n else loss_sum / n}
    if kind == "regression":
        sse = score_sum
        sst = ((y - y.mean()) ** 2).sum()
        scores["mse"], scores["r2"] = sse / n, 1 - sse / sst
    else:
        scores["accuracy"] = score_sum if chunk >= n else score_sum / n
    return scores


# --- one group ------------------------------------------------------------------------------------

def _train_group(specs: list[RunSpec], data: TaskData, plan: Plan, *, record_steps: bool,
                 keep_params: bool, native_threads: int = 0,
                 on_epoch: EpochHook | None = None) -> list[RunResult]:
    """Train specs that share a shape as one stacked computation: with the fused C++ step on
    `native_threads` threads when that is positive, else with the stacked torch step."""
    first = specs[0]
    device, kind = plan.device, data.task.kind
    k, n, bs = len(specs), data.n_train, plan.batch_size
    names = metric_names(kind)
    n_batches = math.ceil(n / bs)

    states = [initial_state(plan.arch, init=s.init, init_scale=s.init_scale, seed=s.seed,
                            dtype=plan.dtype) for s in specs]
    stack = Stack(plan, states, device)
    opt = StackedOptimizer(stack, specs, first.epochs * n_batches)
    x = data.x_train
    y = encode_targets(data.y_train, plan.head, first.loss, plan.dtype)
    gens = [shuffle_generator(s.seed) for s in specs] if first.shuffle else []
    if native_threads:
        stack.use_native(first.loss, native_threads)
        x, y = x.contiguous(), y.contiguous()
    step_losses = torch.empty(k, dtype=plan.dtype, device=device)
    # The torch step gathers a whole epoch's shuffled inputs at once when they are small;
    # the native step reads each member's rows straight from x.
    pregather = not native_threads and k * n * x.shape[1] * x.element_size() <= PREGATHER_BYTES

    ledger = Ledger(specs, kind, data.task.default_metric, on_epoch)
    step_buffer = torch.empty((first.epochs * n_batches, k), dtype=plan.dtype, device=device) \
        if record_steps else None
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    frozen_bn: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # stopped members' BN stats
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    step = 0

    for epoch in range(1, first.epochs + 1):
        with train_clock.measure():
            xs = ys = order = None
            if first.shuffle:
                order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
                if pregather:
                    xs, ys = gather_rows(x, order), gather_rows(y, order)
            loss_sum = torch.zeros(k, dtype=plan.dtype, device=device)
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                if stack.native is not None:
                    stack.native.train_step(x, y, start, stop - start, order, step_losses)
                    detached = step_losses
                else:
                    detached = torch_step(stack, x, y, start, stop, order, xs, ys,
                                          first.loss, plan.head)
                opt.step(stack.grad, step)
                loss_sum += detached
                if step_buffer is not None:
                    step_buffer[step] = detached
                step += 1
        with eval_clock.measure():
            val = _evaluate(stack, data.x_val, data.y_val, first.loss, kind)
            rows = torch.stack([loss_sum, val["loss"], *(val[m] for m in names)]).tolist()
        for i in range(k):
            if ledger.alive(i):
                scores = {"loss": rows[1][i], **{m: rows[2 + j][i] for j, m in enumerate(names)}}
                ledger.record(i, epoch, rows[0][i] / n_batches, scores, train_clock.seconds / k)
        ended = ledger.newly_ended()
        if ended:
            if keep_params:
                snapshots.update({i: stack.member_state(i, epoch * n_batches)
                                  for i in ended if ledger.diverged(i)})
            diverged = [i for i in ended if ledger.diverged(i)]
            stopped = [i for i in ended if not ledger.diverged(i)]
            if diverged:
                opt.mask(_member_mask(k, diverged, device))
            if stopped:  # frozen: no more updates; BN statistics put back before final metrics
                opt.freeze(_member_mask(k, stopped, device))
                frozen_bn.update({i: [(rm[i].clone(), rv[i].clone())
                                      for rm, rv in stack.running.values()] for i in stopped})
        if not ledger.any_alive():
            break

    for i, saved in frozen_bn.items():
        for (rm, rv), (m, v) in zip(stack.running.values(), saved, strict=True):
            rm[i].copy_(m)
            rv[i].copy_(v)
    keys = final_metric_keys(kind)
    finished = [i for i in range(k) if not ledger.diverged(i)]
    final = _final_metrics(stack, data, first.loss, kind, val) if finished else None
    steps_cpu = step_buffer.cpu() if step_buffer is not None else None
    train_s, eval_s = train_clock.seconds / k, eval_clock.seconds / k
    results = []
    for i in range(k):
        if final is None:
            metrics = dict.fromkeys(keys, math.nan)
        else:
            metrics = {key: final[key][i] for key in keys}
            if ledger.stopped[i]:  # validation as it was when the member stopped
                curves = ledger.curves[i]
                metrics.update({f"val_{m}": curves[f"val_{m}"][-1] for m in names},
                               val_loss=curves["val_loss"][-1])
        epochs_run = ledger.epochs_run[i]
        params = None
        if keep_params:
            params = snapshots.get(i) or stack.member_state(i, epochs_run * n_batches)
        results.append(ledger.result(
            i, metrics=metrics, train_seconds=train_s, eval_seconds=eval_s, n_train=n,
            engine="batched",
            step_losses=steps_cpu[:epochs_run * n_batches, i].tolist()
            if steps_cpu is not None else None,
            params=params))
    return results


def _member_mask(k: int, members: list[int], device: str) -> torch.Tensor:
    """A [K] boolean mask on `device`, True for `members`."""
    mask = torch.zeros(k, dtype=torch.bool)
    mask[members] = True
    return mask.to(device)


def _final_metrics(stack: Stack, data: TaskData, loss: str, kind: str,
                   val: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Final train / val / test metrics of every member (one host sync).

    `val` is the last epoch's validation evaluation of these very parameters (the
    parameters have not changed since), so it is reused rather than recomputed.
    """
    names = metric_names(kind)
    keys: list[str] = []
    values: list[torch.Tensor] = []
    for split, xs, ys in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        scores = val if split == "val" else _evaluate(stack, xs, ys, loss, kind, keep=False)
        for m in names:
            keys.append(f"{split}_{m}")
            values.append(scores[m])
        if split == "val":
            keys.append("val_loss")
            values.append(scores["loss"])
    rows = torch.stack(values).tolist()
    return dict(zip(keys, rows, strict=True))


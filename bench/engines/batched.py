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
eps, weight decay, L1 lambda and init scale; everything else (`registry.GROUP_FIELDS`) must be
shared, and `train_many` splits mixed specs into groups (and large groups into memory-bounded
chunks).
A member whose epoch train or validation loss is not finite is reported diverged at that
epoch, exactly like the reference engine; a member the `on_epoch` hook stops ends after that
epoch with the metrics of its model then. Either way it leaves the stacked computation at that
epoch boundary (compaction): the members left are copied, bit for bit, into a smaller stack
(`Stack.select`, `StackedOptimizer.select`), so the remaining epochs cost in proportion to them.
A member that stays computes exactly the bits it would have computed had nobody left: the native
step computes each member on its own, and on the CPU torch step rows keep their alignment and
the row count its vector multiple (`row_rules`; filler rows, never read, make up the rest).
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
from bench.catalog.models import Head, Linear, initial_state, module_size, parameter_count
from bench.catalog.tasks import TaskData
from bench.engines import native
from bench.engines.bookkeeping import Ledger, final_metric_keys
from bench.engines.clock import Stopwatch, num_threads
from bench.engines.functional_optim import StackedOptimizer
from bench.engines.registry import EpochHook, Progress, group_key, relay
from bench.engines.setup import (
    Plan,
    final_metric_table,
    load_data,
    plan_run,
    shuffle_generator,
)
from bench.engines.stacked import MemberCopies, Stack, Workspace, gather_rows, torch_step
from bench.results import RunResult, metric_names
from bench.spec import RunSpec, resolve_device

MAX_MEMBERS = 4096
# Bytes one chunk may use for activations, stacked parameters and gathered batches.
MEMORY_BUDGET = {"cpu": 1 << 30, "cuda": 8 << 30}
PREGATHER_BYTES = 256 << 20  # gather a whole epoch's shuffled inputs at once below this size
# What a row's numbers may depend on in torch's CPU kernels (see `row_rules`): the 16-byte
# alignment of its block, and whether it falls in a tensor's scalar tail after 2 x 64-byte vectors.
ALIGN_BYTES, VECTOR_BYTES = 16, 128
EVAL_ELEMENTS = 1 << 24  # elements of the widest activation per evaluation chunk
STEPS = ("auto", "native", "torch")  # how a CPU group's step runs; auto: native when it builds


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
    `on_epoch` sees every member's epochs (indices into `specs`); a member it stops leaves its
    group's stacked computation after that epoch (see `bench.engines.registry`); `data`, when
    given, is every spec's task data.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    results: list[RunResult | None] = [None] * len(specs)
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec), []).append(i)
    pending: list[int] = []  # stop requests from the hook, by index into specs
    given = data
    for indices in groups.values():
        first = specs[indices[0]]
        device = resolve_device(first.device)
        data = load_data(first, device) if given is None else given.to(device, first.torch_dtype)
        plan = plan_run(first, data.n_train)
        limit = max_members or members_per_chunk(plan, data, first.shuffle)
        if plan.arch is None:  # a network given as code: the torch.func path
            _train_factory_group(specs, indices, data, plan, limit, results, pending,
                                 record_steps=record_steps, keep_params=keep_params,
                                 on_epoch=on_epoch, progress=progress)
            continue
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


def _train_factory_group(specs: Sequence[RunSpec], indices: list[int], data: TaskData,
                         plan: Plan, limit: int, results: list[RunResult | None],
                         pending: list[int], *, record_steps: bool, keep_params: bool,
                         on_epoch: EpochHook | None, progress: Progress | None) -> None:
    """A group of a model given as code, in chunks of `limit` members: `functional.train_group`,
    or the reference engine when its module cannot be vmapped (said once, on stderr)."""
    from bench.engines import functional, reference  # torch.func loads only when needed

    stackable = True
    for start in range(0, len(indices), limit):
        chunk = indices[start:start + limit]
        chunk_specs = [specs[i] for i in chunk]
        hook = relay(on_epoch, chunk, pending)
        trained = functional.train_group(chunk_specs, data, plan, record_steps=record_steps,
                                         keep_params=keep_params, on_epoch=hook) \
            if stackable else None
        if trained is None:
            stackable = False
            trained = reference.train_specs(chunk_specs, data=data, record_steps=record_steps,
                                            keep_params=keep_params, on_epoch=hook)
        for i, result in zip(chunk, trained, strict=True):
            results[i] = result
        if progress is not None:
            progress(len(chunk))


def chosen_step(spec: RunSpec, data: TaskData, step: str = "auto") -> str:
    """Which step implementation ("native", "torch", or "torch.func" for a model given as
    code) `train_many` runs for spec's group."""
    plan = plan_run(spec, data.n_train)
    if plan.arch is None:
        return "torch.func"
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
    budget = MEMORY_BUDGET["cuda" if plan.device.startswith("cuda") else "cpu"]
    if plan.arch is None:  # a model given as code: autograd keeps ~3 values per activation
        assert plan.model is not None
        size = module_size(plan.model, plan.input_shape, plan.head.n_outputs)
        per_member = elem * (8 * size.parameters + 3 * plan.batch_size * size.activations)
        if shuffle:
            per_member += elem * plan.batch_size * math.prod(data.x_train.shape[1:])
        return int(max(1, min(MAX_MEMBERS, budget // per_member)))
    widths = [layer.out_features for layer in plan.arch if isinstance(layer, Linear)]
    in_dim = data.x_train.shape[1]
    per_member = elem * (8 * parameter_count(plan.arch) + 6 * plan.batch_size * sum(widths))
    if shuffle:
        per_member += elem * plan.batch_size * in_dim
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
    chunk = max(1, min(n, EVAL_ELEMENTS // (stack.eval_k * widest)))
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
            out = _whole_vectors(out.transpose(1, 2).contiguous())
            loss = _loss(loss_fn, out, target[start:stop], head)
            if kind == "regression":
                score = ((out.squeeze(-1) - y[start:stop]) ** 2).sum(dim=-1)
            else:
                score = (predict_classes(out, head) == y[start:stop]).to(out.dtype)
                score = score.mean(dim=-1) if chunk >= n else score.sum(dim=-1)
            loss, score = loss[:stack.k], score[:stack.k]
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


def _whole_vectors(out: torch.Tensor) -> torch.Tensor:
    """`out` ([K, ...], on the CPU) with zero rows appended up to a multiple of
    `VECTOR_BYTES / itemsize` rows, so that no member's loss falls in a kernel's scalar tail
    (see `row_rules`): its numbers do not depend on how many members there are."""
    rows = VECTOR_BYTES // out.element_size()
    if out.device.type != "cpu" or out.shape[0] % rows == 0:
        return out
    return torch.cat([out, out.new_zeros(-out.shape[0] % rows, *out.shape[1:])])


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

    # A sweep's trials share their seeds: each distinct start is drawn once (the stack copies
    # every state into its own buffer, so members may share one).
    drawn: dict[tuple[str, float, int], dict[str, torch.Tensor]] = {}
    for s in specs:
        if (key := (s.init, s.init_scale, s.seed)) not in drawn:
            drawn[key] = initial_state(plan.arch, init=s.init, init_scale=s.init_scale,
                                       seed=s.seed, dtype=plan.dtype)
    states = [drawn[(s.init, s.init_scale, s.seed)] for s in specs]
    period, multiple = row_rules(device, plan.dtype, native=bool(native_threads))
    fillers = -k % multiple  # rows that only pad the stack (copies of member 0, never read)
    stack = Stack(plan, states + states[:1] * fillers, device)
    opt = StackedOptimizer(stack, list(specs) + list(specs[:1]) * fillers,
                           first.epochs * n_batches)
    x = data.x_train
    y = encode_targets(data.y_train, plan.head, first.loss, plan.dtype)
    gens = [shuffle_generator(s.seed) for s in specs] if first.shuffle else []
    if native_threads:
        stack.use_native(first.loss, native_threads)
        x, y = x.contiguous(), y.contiguous()
    # The torch step gathers a whole epoch's shuffled inputs at once when they are small;
    # the native step reads each member's rows straight from x.
    pregather = not native_threads and k * n * x.shape[1] * x.element_size() <= PREGATHER_BYTES

    ledger = Ledger(specs, kind, data.task.default_metric, on_epoch)
    step_buffer = torch.empty((first.epochs * n_batches, k), dtype=plan.dtype, device=device) \
        if record_steps else None
    # rows[r]: the member (index into specs) in row r of the stack, None for a filler row
    rows: list[int | None] = [*range(k), *[None] * fillers]
    params: dict[int, dict[str, torch.Tensor]] = {}  # members that left, when keep_params
    final: dict[int, dict[str, float]] = {}  # final metrics of stopped members, at their stop
    # stopped members as they left (copies of their parameters and running statistics, the
    # members, their last validation), evaluated together at the end: one evaluation instead
    # of one per epoch that stops some
    held: list[tuple[MemberCopies, list[int], dict[str, torch.Tensor]]] = []
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    step = 0

    for epoch in range(1, first.epochs + 1):
        live = len(rows)
        with train_clock.measure():
            xs = ys = order = None
            if first.shuffle:
                order = torch.stack([torch.arange(n) if i is None else
                                     torch.randperm(n, generator=gens[i]) for i in rows])
                order = order.to(device)
                if pregather:
                    xs, ys = gather_rows(x, order), gather_rows(y, order)
            step_losses = torch.empty(live, dtype=plan.dtype, device=device)
            loss_sum = torch.zeros(live, dtype=plan.dtype, device=device)
            members = [r for r, i in enumerate(rows) if i is not None]
            if rows == list(range(k)):
                own, columns = slice(None), slice(None)
            else:
                own = torch.tensor(members, device=device)
                columns = torch.tensor([rows[r] for r in members], device=device)
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
                    step_buffer[step, columns] = detached[own]
                step += 1
        with eval_clock.measure():
            val = _evaluate(stack, data.x_val, data.y_val, first.loss, kind)
            values = torch.stack([loss_sum, val["loss"], *(val[m] for m in names)]).tolist()
        for r, i in enumerate(rows):
            if i is None:
                continue
            scores = {"loss": values[1][r], **{m: values[2 + j][r] for j, m in enumerate(names)}}
            ledger.record(i, epoch, values[0][r] / n_batches, scores, train_clock.seconds / k)
        ended = set(ledger.newly_ended())
        if ended:  # they leave the stacked computation now (compaction)
            leaving = [r for r, i in enumerate(rows) if i is not None and i in ended]
            if keep_params:
                params.update(zip([rows[r] for r in leaving],
                                  stack.member_states(leaving, epoch * n_batches), strict=True))
            stopped = [r for r in leaving if not ledger.diverged(rows[r])]
            if stopped:  # the model at its stop, for its final metrics
                held.append((stack.member_copies(stopped), [rows[r] for r in stopped],
                             {key: v[stopped] for key, v in val.items()}))
            staying = [r for r, i in enumerate(rows) if i is not None and i not in ended]
            if not staying:
                rows = []
                break
            if epoch == first.epochs:  # no epoch left to save: they just drop out of the rows
                rows = [None if i in ended else i for i in rows]
                break
            layout = pack_rows(staying, period, multiple)
            kept = [staying[0] if r is None else r for r in layout]  # fillers copy a member
            rows = [None if r is None else rows[r] for r in layout]
            stack, opt = _compact(stack, opt, kept)
            val = {key: v[kept] for key, v in val.items()}

    keys = final_metric_keys(kind)
    if held:
        members = [i for _, stopped_members, _ in held for i in stopped_members]
        last_val = {key: torch.cat([h[2][key] for h in held]) for key in val}
        merged = stack.assemble([h[0] for h in held])
        del held  # the copies now live in `merged` alone
        metrics = _final_metrics(merged, data, first.loss, kind, last_val)
        final.update({i: {key: values[r] for key, values in metrics.items()}
                      for r, i in enumerate(members)})
        del merged
    last = [r for r, i in enumerate(rows) if i is not None]
    if last:
        final.update(_leaving_metrics(stack, last, [rows[r] for r in last], data, first.loss,
                                      kind, val))
        if keep_params:
            params.update(zip([rows[r] for r in last],
                              stack.member_states(last, first.epochs * n_batches), strict=True))
    steps_cpu = step_buffer.cpu() if step_buffer is not None else None
    train_s, eval_s = train_clock.seconds / k, eval_clock.seconds / k
    results = []
    for i in range(k):
        epochs_run = ledger.epochs_run[i]
        results.append(ledger.result(
            i, metrics=final.get(i, dict.fromkeys(keys, math.nan)), train_seconds=train_s,
            eval_seconds=eval_s, n_train=n, engine="batched",
            step_losses=steps_cpu[:epochs_run * n_batches, i].tolist()
            if steps_cpu is not None else None,
            params=params.get(i) if keep_params else None))
    return results


def row_rules(device: str, dtype: torch.dtype, native: bool) -> tuple[int, int]:
    """(period, multiple): a member may only move to a row `period` rows away, and a stack has
    a multiple of `multiple` rows (fillers make up the rest), so that a member computes the
    same bits in whichever row it sits and however many rows there are.

    On the CPU torch's kernels are not position-free: MKL's batched GEMM may sum in another
    order when an operand starts at another 16-byte alignment (a member's block of a `[K, ...]`
    buffer starts at row * size), and elementwise kernels run two 64-byte vectors at a time and
    finish a tensor's last elements with scalar code, whose sigmoid, tanh, exp and log differ
    from the vectorised ones in the last bit. Rows 16 / itemsize apart share an alignment, and
    a row count that is a multiple of 128 / itemsize leaves no scalar tail in any `[K, ...]`
    tensor. The native step computes each member with its own unaligned loads in fixed blocks,
    and a CUDA thread computes an element the same way wherever it sits: (1, 1).
    """
    if native or not device.startswith("cpu"):
        return 1, 1
    return max(1, ALIGN_BYTES // dtype.itemsize), max(1, VECTOR_BYTES // dtype.itemsize)


def pack_rows(staying: list[int], period: int, multiple: int) -> list[int | None]:
    """Where the rows `staying` go when the others leave: for each new row, the old row it
    takes, or None for a filler. Each row keeps its place modulo `period` and the row count is
    rounded up to a multiple of `multiple` (see `row_rules`); within that, rows are packed as
    tightly as they can be.
    """
    classes = [[r for r in staying if r % period == c] for c in range(period)]
    length = max(period * (len(rows) - 1) + c + 1 for c, rows in enumerate(classes) if rows)
    length += -length % multiple
    return [classes[p % period][p // period] if p // period < len(classes[p % period]) else None
            for p in range(length)]


def _compact(stack: Stack, opt: StackedOptimizer,
             staying: list[int]) -> tuple[Stack, StackedOptimizer]:
    """The stack and optimizer of the rows `staying` alone (see `Stack.select`)."""
    smaller = stack.select(staying)
    return smaller, opt.select(smaller, staying)


def _leaving_metrics(stack: Stack, leaving: list[int], members: list[int], data: TaskData,
                     loss: str, kind: str,
                     val: dict[str, torch.Tensor]) -> dict[int, dict[str, float]]:
    """Final metrics of the stack's rows `leaving` (members `members`), whose last validation
    evaluation is `val` (of every row): the whole stack when every row leaves, else a stack
    of those rows alone."""
    if len(leaving) < stack.k:
        stack = stack.select(leaving)
        val = {key: v[leaving] for key, v in val.items()}
    metrics = _final_metrics(stack, data, loss, kind, val)
    return {i: {key: values[r] for key, values in metrics.items()}
            for r, i in enumerate(members)}


def _final_metrics(stack: Stack, data: TaskData, loss: str, kind: str,
                   val: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Final train / val / test metrics of every member (one host sync).

    `val` is the last epoch's validation evaluation of these very parameters (the
    parameters have not changed since), so it is reused rather than recomputed.
    """
    return final_metric_table(lambda xs, ys: _evaluate(stack, xs, ys, loss, kind, keep=False),
                              data, kind, val)

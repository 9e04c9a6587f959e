"""The batched engine's path for networks given as code: K copies of any `nn.Module` trained as
one computation with torch.func.

A model with a factory (`ModelDef.factory`: a plugin's network, `lenet5`) has no layer list for
the hand-written stacked step of `bench.engines.stacked`, so its members are stacked generically:
each member's module is built under its own seed (`factory_module`, exactly as the reference
engine builds it), the members' parameters go into one flat `[P]` buffer with `[K, ...]` views
(the layout `bench.engines.functional_optim` updates, so SGD / momentum / Nesterov / Adam / AdamW
with per-member hyperparameters, weight decay and L1 are the same code as for layer lists),
buffers (BatchNorm's running statistics) are stacked per member (plain BatchNorm layers run as
elementwise ops in the stacked template: `_VmapBatchNorm`), and one step is one `vmap`
of `functional_call(module, member's state, batch)` over the members and one reverse pass of
the sum of their losses into the flat buffer: every member's loss and gradient, each exactly its
own (what `vmap(grad(loss))` computes, at a fraction of its per-step cost; see
`_step_function`). Mini-batches follow each member's own shuffle (`shuffle_generator`, the
reference engine's order) or are shared when unshuffled.

The per-epoch record, divergence rule, hook and RunResults are `bookkeeping.Ledger`'s; a member
that diverges or is stopped leaves the stacked computation at that epoch boundary (its rows are
dropped from the flat buffer, its optimizer state with them). Unlike the layer-list path's
step, vmapped kernels are not promised to give a member the same last bit whatever rows share
the stack: members equal the reference engine's runs to rounding (1e-9 relative in float64, as
tested), not bit for bit across compactions.

A module whose forward torch.func cannot vmap (data-dependent Python control flow on tensor
values, in-place updates of tensors that are not per-member buffers, `.item()` calls) is found
by one probe step on copies before training; its group is trained by the reference engine
instead, with one line on stderr saying why (`UNSTACKABLE`); its results then say
`engine="reference"`.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call, vmap

from bench.catalog import registry
from bench.catalog.losses import encode_targets, predict_classes, regression_scores
from bench.catalog.models import Head, factory_module, module_size
from bench.catalog.tasks import TaskData
from bench.engines.bookkeeping import Ledger, final_metric_keys
from bench.engines.clock import Stopwatch
from bench.engines.functional_optim import StackedOptimizer
from bench.engines.registry import EpochHook
from bench.engines.setup import Plan, final_metric_table, shuffle_generator
from bench.results import RunResult, metric_names
from bench.spec import RunSpec

EVAL_ELEMENTS = 1 << 24  # activation elements (all members) per evaluation chunk
UNSTACKABLE = "bench: model {model!r} cannot be stacked with torch.func ({why}); " \
              "training its {k} run(s) with the reference engine"


class ModuleStack:
    """K members of one module: parameters in one flat `[P]` buffer laid out
    parameter by parameter, member by member, with `[K, ...]` views by parameter name; buffers
    stacked `[K, ...]`; `base`, a parameter-free copy of the module that `functional_call` runs.
    It offers what `StackedOptimizer` needs of a stack (`flat`, `per_element`,
    `element_index`, `device`, `dtype`)."""

    def __init__(self, base: torch.nn.Module, params: dict[str, torch.Tensor],
                 buffers: dict[str, torch.Tensor], order: Sequence[str]) -> None:
        self.base, self.order = base, list(order)
        first = next(iter(params.values()))
        self.k, self.device, self.dtype = first.shape[0], first.device, first.dtype
        self.shapes = {name: tuple(p.shape[1:]) for name, p in params.items()}
        self.numel = {name: math.prod(shape) for name, shape in self.shapes.items()}
        self.flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
        self.views: dict[str, torch.Tensor] = {}
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = self.k * self.numel[name]
            self.views[name] = self.flat[offset:offset + size].view(self.k, *shape)
            self.offsets[name] = offset
            offset += size
        self.buffers = {name: b.detach().clone() for name, b in buffers.items()}
        self.member_index = torch.cat([
            torch.arange(self.k, device=self.device).repeat_interleave(n)
            for n in self.numel.values()])

    def views_of(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[K, ...]` views by parameter name of a flat buffer laid out like `self.flat`."""
        return {name: flat[self.offsets[name]:self.offsets[name] + self.k * n].view(
            self.k, *self.shapes[name]) for name, n in self.numel.items()}

    @classmethod
    def of_members(cls, modules: Sequence[torch.nn.Module]) -> ModuleStack:
        """The stack of these modules (same structure): trainable parameters stacked into the
        flat buffer, everything else (buffers, frozen parameters) stacked per member."""
        named = [dict(m.named_parameters()) for m in modules]
        trainable = [name for name, p in named[0].items() if p.requires_grad]
        params = {name: torch.stack([n[name].detach() for n in named]) for name in trainable}
        rest = [dict(m.named_buffers()) | {k: v for k, v in n.items() if k not in trainable}
                for m, n in zip(modules, named, strict=True)]
        buffers = {name: torch.stack([r[name].detach() for r in rest]) for name in rest[0]}
        base = copy.deepcopy(modules[0]).to("meta")
        for module in base.modules():  # BatchNorm as elementwise ops (see _VmapBatchNorm)
            if type(module) in _VMAP_BATCH_NORM and module.affine and \
                    module.track_running_stats and module.momentum is not None:
                module.__class__ = _VMAP_BATCH_NORM[type(module)]
        return cls(base, params, buffers, list(modules[0].state_dict()))

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """One value per member ([K]) expanded to one per flat element ([P])."""
        return values.index_select(0, self.member_index)

    def element_index(self, rows: torch.Tensor) -> torch.Tensor:
        """Where the flat elements of members `rows` are, in the order a stack of just those
        members lays them out."""
        return torch.cat([
            (self.offsets[name] + rows.unsqueeze(1) * n
             + torch.arange(n, device=rows.device)).reshape(-1)
            for name, n in self.numel.items()])

    def select(self, rows: Sequence[int]) -> ModuleStack:
        """A stack of the members in `rows`, in that order (parameters and buffers copied)."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        return ModuleStack(self.base, {n: v.index_select(0, index) for n, v in self.views.items()},
                           {n: b.index_select(0, index) for n, b in self.buffers.items()},
                           self.order)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict, keyed and ordered like its module's `state_dict()`."""
        state = {**{n: v[k] for n, v in self.views.items()},
                 **{n: b[k] for n, b in self.buffers.items()}}
        return {name: state[name].detach().cpu().clone() for name in self.order}


class _VmapBatchNorm:
    """`nn.BatchNorm1d/2d.forward` written with elementwise ops and reductions, for the stacked
    template only (`ModuleStack.of_members` swaps the class of plain affine BatchNorm layers with
    running statistics and a momentum). Same function as `F.batch_norm` (biased variance to
    normalise, unbiased for the running estimate, as torch does), but under vmap torch's CPU
    `native_batch_norm_backward` on the `[B, K*C]` input vmap builds is slow (~30 ms for
    100 x 5,120 on one thread); these ops' backward is not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: torch.nn.BatchNorm1d = self  # type: ignore[assignment]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if bn.training:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dims, keepdim=True)
            centred = x - mean
            var = centred.square().mean(dims, keepdim=True)
            count = x.numel() // x.shape[1]
            with torch.no_grad():
                momentum = float(bn.momentum)  # type: ignore[arg-type]
                bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                bn.running_mean.mul_(1 - momentum).add_(  # type: ignore[union-attr]
                    mean.reshape(-1), alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(  # type: ignore[union-attr]
                    var.reshape(-1), alpha=momentum * count / max(count - 1, 1))
            normed = centred * torch.rsqrt(var + bn.eps)
        else:
            normed = (x - bn.running_mean.reshape(shape)) * torch.rsqrt(  # type: ignore[union-attr]
                bn.running_var.reshape(shape) + bn.eps)  # type: ignore[union-attr]
        return normed * bn.weight.reshape(shape) + bn.bias.reshape(shape)


class _VmapBatchNorm1d(_VmapBatchNorm, torch.nn.BatchNorm1d):
    """BatchNorm1d with `_VmapBatchNorm`'s forward."""


class _VmapBatchNorm2d(_VmapBatchNorm, torch.nn.BatchNorm2d):
    """BatchNorm2d with `_VmapBatchNorm`'s forward."""


_VMAP_BATCH_NORM: dict[type, type] = {torch.nn.BatchNorm1d: _VmapBatchNorm1d,
                                      torch.nn.BatchNorm2d: _VmapBatchNorm2d}


def train_group(specs: list[RunSpec], data: TaskData, plan: Plan, *, record_steps: bool,
                keep_params: bool, on_epoch: EpochHook | None = None) -> list[RunResult] | None:
    """Train specs that share a shape (a model given as code) as one torch.func computation;
    None when the module cannot be vmapped (the caller trains them with the reference
    engine; one line on stderr says why)."""
    assert plan.model is not None
    first = specs[0]
    device, kind = plan.device, data.task.kind
    k, n, bs = len(specs), data.n_train, plan.batch_size
    n_batches = math.ceil(n / bs)
    names = metric_names(kind)
    loss_fn = registry.get_loss(first.loss).fn
    head = plan.head

    modules = [factory_module(plan.model, plan.input_shape, head.n_outputs, seed=s.seed,
                              init_scale=s.init_scale, dtype=plan.dtype, device=device)
               for s in specs]
    stack = ModuleStack.of_members(modules)
    del modules
    x = data.x_train
    y = encode_targets(data.y_train, head, first.loss, plan.dtype)
    step_fn = _step_function(stack.base, loss_fn, head, first.shuffle)
    why = _probe(stack, step_fn, x, y, bs, data.x_val, first.shuffle)
    if why is not None:
        print(UNSTACKABLE.format(model=plan.model.name, why=why, k=k), file=sys.stderr)
        return None
    opt = StackedOptimizer(stack, list(specs), first.epochs * n_batches)
    gens = [shuffle_generator(s.seed) for s in specs] if first.shuffle else []
    eval_chunk = max(1, EVAL_ELEMENTS // max(1, k * module_size(
        plan.model, plan.input_shape, head.n_outputs).activations))

    ledger = Ledger(specs, kind, data.task.default_metric, on_epoch)
    step_buffer = torch.empty((first.epochs * n_batches, k), dtype=plan.dtype, device=device) \
        if record_steps else None
    rows = list(range(k))  # rows[r]: the member (index into specs) in row r of the stack
    params: dict[int, dict[str, torch.Tensor]] = {}
    final: dict[int, dict[str, float]] = {}
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    step = 0
    val: dict[str, torch.Tensor] = {}
    for epoch in range(1, first.epochs + 1):
        with train_clock.measure():
            order = torch.stack([torch.randperm(n, generator=gens[i]) for i in rows]).to(device) \
                if first.shuffle else None
            loss_sum = torch.zeros(len(rows), dtype=plan.dtype, device=device)
            for start in range(0, n, bs):
                if order is None:
                    xb, yb = x[start:start + bs], y[start:start + bs]
                else:
                    idx = order[:, start:start + bs]
                    xb, yb = x[idx], y[idx]
                grad, losses = step_fn(stack, xb, yb)
                opt.step(grad, step)
                loss_sum += losses
                if step_buffer is not None:
                    step_buffer[step, rows] = losses
                step += 1
        with eval_clock.measure():
            val = _evaluate(stack, data.x_val, data.y_val, first.loss, kind, head, eval_chunk)
            values = torch.stack([loss_sum, val["loss"], *(val[m] for m in names)]).tolist()
        for r, i in enumerate(rows):
            scores = {"loss": values[1][r], **{m: values[2 + j][r] for j, m in enumerate(names)}}
            ledger.record(i, epoch, values[0][r] / n_batches, scores, train_clock.seconds / k)
        ended = set(ledger.newly_ended())
        if not ended:
            continue
        leaving = [r for r, i in enumerate(rows) if i in ended]
        if keep_params:
            params.update({rows[r]: stack.member_state(r) for r in leaving})
        stopped = [r for r in leaving if not ledger.diverged(rows[r])]
        if stopped:
            final.update(_final_metrics(stack, stopped, [rows[r] for r in stopped], data,
                                        first.loss, kind, head, val, eval_chunk))
        staying = [r for r, i in enumerate(rows) if i not in ended]
        if not staying or epoch == first.epochs:
            rows = [rows[r] for r in staying]
            stack = stack.select(staying) if staying else stack
            val = {key: v[staying] for key, v in val.items()}
            break
        stack, opt = _compact(stack, opt, staying)
        val = {key: v[staying] for key, v in val.items()}
        rows = [rows[r] for r in staying]

    if rows:
        final.update(_final_metrics(stack, list(range(len(rows))), rows, data, first.loss, kind,
                                    head, val, eval_chunk))
        if keep_params:
            params.update({i: stack.member_state(r) for r, i in enumerate(rows)})
    steps_cpu = step_buffer.cpu() if step_buffer is not None else None
    keys = final_metric_keys(kind)
    train_s, eval_s = train_clock.seconds / k, eval_clock.seconds / k
    return [ledger.result(
        i, metrics=final.get(i, dict.fromkeys(keys, math.nan)), train_seconds=train_s,
        eval_seconds=eval_s, n_train=n, engine="batched",
        step_losses=steps_cpu[:ledger.epochs_run[i] * n_batches, i].tolist()
        if steps_cpu is not None else None,
        params=params.get(i) if keep_params else None) for i in range(k)]


Step = Callable[[ModuleStack, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _step_function(base: torch.nn.Module, loss_fn: Callable[..., torch.Tensor], head: Head,
                   per_member: bool) -> Step:
    """(stack, x, y) -> (flat gradient [P], losses [K]): every member's data-loss gradient, its
    batch shared (x, y unbatched) or its own (`per_member`: [K, B, ...]).

    The K forwards are one `vmap` of `functional_call` over the members' parameters and
    buffers; the gradient is one reverse pass of the sum of the members' losses with respect
    to the flat buffer (a member's loss depends on its own parameters alone, so its slice of
    that gradient is exactly its own gradient). This is `vmap(grad(loss))` without the
    per-step cost of nesting a grad transform in vmap (several times slower for small nets).
    """
    batch_dim = 0 if per_member else None
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, batch_dim))

    def step(stack: ModuleStack, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base.train()
        with torch.enable_grad():
            flat = stack.flat.detach().requires_grad_()
            out = forward(stack.views_of(flat), stack.buffers, x)
            target = y.expand_as(out) if y.is_floating_point() and y.dim() < out.dim() else y
            losses = loss_fn(out, target, head)
            (grad,) = torch.autograd.grad(losses.sum(), flat)
        return grad, losses.detach()

    return step


def _forward(stack: ModuleStack, x: torch.Tensor) -> torch.Tensor:
    """Every member's raw outputs [K, B, O] on shared inputs, in eval mode."""
    stack.base.eval()
    try:
        return vmap(lambda p, b: functional_call(stack.base, (p, b), (x,)))(
            stack.views, stack.buffers)
    finally:
        stack.base.train()


def _probe(stack: ModuleStack, step_fn: Step, x: torch.Tensor, y: torch.Tensor, bs: int,
           x_val: torch.Tensor, per_member: bool) -> str | None:
    """Why the stack cannot be trained with torch.func, or None: one step of member 0 (on a
    copy, so its buffers are untouched) and one evaluation forward on a few examples."""
    one = stack.select([0])
    xb, yb = x[:bs], y[:bs]
    if per_member:
        xb, yb = xb.unsqueeze(0), yb.unsqueeze(0)
    try:
        step_fn(one, xb, yb)
        _forward(one, x_val[:2])
    except Exception as exc:  # any failure means: not vmappable here
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return text if len(text) <= 160 else text[:157] + "..."
    return None


def _compact(stack: ModuleStack, opt: StackedOptimizer,
             staying: list[int]) -> tuple[ModuleStack, StackedOptimizer]:
    """The stack and optimizer of the rows `staying` alone."""
    smaller = stack.select(staying)
    return smaller, opt.select(smaller, staying)


def _evaluate(stack: ModuleStack, x: torch.Tensor, y: torch.Tensor, loss_name: str, kind: str,
              head: Head, chunk: int) -> dict[str, torch.Tensor]:
    """Per-member loss and metrics ([K] tensors) on one split, in eval mode; outputs computed
    in example chunks of `chunk` (memory), the loss over the whole split like the reference."""
    loss_fn = registry.get_loss(loss_name).fn
    with torch.no_grad():
        out = torch.cat([_forward(stack, x[s:s + chunk]) for s in range(0, x.shape[0], chunk)],
                        dim=1)
        target = encode_targets(y, head, loss_name, stack.dtype)
        if target.is_floating_point():  # shared float targets, compared with every member's
            target = target.expand_as(out)
        scores = {"loss": loss_fn(out, target, head)}
        if kind == "regression":
            scores["mse"], scores["r2"] = regression_scores(out, y)
        else:
            scores["accuracy"] = (predict_classes(out, head) == y).to(out.dtype).mean(dim=-1)
    return scores


def _final_metrics(stack: ModuleStack, rows: list[int], members: list[int], data: TaskData,
                   loss: str, kind: str, head: Head, val: dict[str, torch.Tensor],
                   chunk: int) -> dict[int, dict[str, float]]:
    """Final train / val / test metrics of the stack's `rows` (members `members`); `val` is
    the last validation evaluation of every row (reused: the parameters have not changed)."""
    part = stack if len(rows) == stack.k else stack.select(rows)
    val = val if len(rows) == stack.k else {key: v[rows] for key, v in val.items()}
    table = final_metric_table(
        lambda xs, ys: _evaluate(part, xs, ys, loss, kind, head, chunk), data, kind, val)
    return {i: {key: v[r] for key, v in table.items()} for r, i in enumerate(members)}

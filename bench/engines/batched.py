"""The batched engine: many runs that share a shape, trained as one stacked computation.

Tiny networks are bound by per-operation overhead, not arithmetic, so K runs are trained at
once: every parameter is stacked to `[K, ...]`, linear layers are batched GEMMs (one plain
GEMM over all members when the batch is shared), BatchNorm runs over all K*F channels at once
(each member keeps its own running statistics), and the loss is the sum of the members'
losses, so each member's gradient is exactly its own. The optimizer step is functional and
per member: one flat `[P]` buffer holds all K members' parameters (and another their
gradients), per-member hyperparameters are expanded to it once, and the SGD / Adam / AdamW
formulas of `torch.optim` run as a handful of element-wise ops over the whole buffer.

The step has no autograd: `_Stack.forward` / `_Stack.backward` are written out for the layer
types there are (Linear, relu / tanh / sigmoid, BatchNorm) with the losses' gradients
(`_loss_and_grad`), on feature-major `[K, F, B]` activations, into buffers allocated once per
batch shape and reused every step (a fresh multi-MiB tensor costs page faults). BatchNorm is
folded into the Linear layer after it, so its output is never materialised, and its backward
needs no reduction over examples beyond the next layer's weight-gradient GEMM. The tests
hold every registry model x optimizer to the reference engine at 1e-9 in float64.

Members differ in seed (initial weights and shuffle order), learning rate, momentum, betas,
eps, weight decay, L1 lambda and init scale; everything else (`GROUP_FIELDS`) must be shared,
and `train_many` splits mixed specs into groups (and large groups into memory-bounded chunks).
A member whose epoch train or validation loss is not finite is reported diverged at that
epoch, exactly like the reference engine, and masked from then on: its parameters, optimizer
state and learning rate are zeroed so it affects nothing.

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
from dataclasses import dataclass

import numpy as np
import torch

from bench.catalog import registry
from bench.catalog.losses import apply_head, encode_targets, predict_classes
from bench.catalog.models import Activation, BatchNorm, Head, Linear, initial_state, parameter_count
from bench.catalog.tasks import TaskData
from bench.engines import native
from bench.engines.clock import Stopwatch, num_threads
from bench.engines.setup import Plan, load_data, plan_run, shuffle_generator
from bench.results import RunResult, metric_names, reached
from bench.spec import RunSpec, resolve_device

Progress = Callable[[int], None]

# What members of one stacked group must share; everything else may differ per member.
GROUP_FIELDS = ("task", "data_seed", "n_samples", "model", "hidden", "activation", "batch_norm",
                "init", "loss", "optimizer", "nesterov", "batch_size", "epochs", "shuffle",
                "dtype", "device")

BN_MOMENTUM, BN_EPS = 0.1, 1e-5
MAX_MEMBERS = 4096
# Bytes one chunk may use for activations, stacked parameters and gathered batches.
MEMORY_BUDGET = {"cpu": 1 << 30, "cuda": 8 << 30}
PREGATHER_BYTES = 256 << 20  # gather a whole epoch's shuffled inputs at once below this size
EVAL_ELEMENTS = 1 << 24  # elements of the widest activation per evaluation chunk
SMALL_INPUT = 8  # input widths up to this get the first layer's weight gradient as D GEMVs
STEPS = ("auto", "native", "torch")  # how a CPU group's step runs; auto: native when it builds


def group_key(spec: RunSpec) -> tuple:
    """The shape a spec shares with the other members of its stacked group."""
    return (*(getattr(spec, f) for f in GROUP_FIELDS), resolve_device(spec.device))


def train_many(specs: Sequence[RunSpec], *, progress: Progress | None = None,
               record_steps: bool = False, keep_params: bool = False,
               max_members: int | None = None, step: str = "auto") -> list[RunResult]:
    """Train every spec with the batched engine; results come back in input order.

    Specs are grouped by `group_key`; each group is trained in chunks of at most
    `max_members` members (default: as many as the memory budget allows, at most 4096).
    `progress(n)` is called with the number of runs each finished chunk completed.
    `step` picks the step implementation: "native" (the fused C++ kernel of `bench.engines.native`,
    CPU only), "torch" (the stacked torch step below, any device) or "auto" (native where it
    is available, else torch). Both compute the same function.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    results: list[RunResult | None] = [None] * len(specs)
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(group_key(spec), []).append(i)
    for indices in groups.values():
        first = specs[indices[0]]
        device = resolve_device(first.device)
        data = load_data(first, device)
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
                                       native_threads=native_threads)
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


# --- stacked parameters ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Param:
    name: str  # state-dict key, e.g. "0.weight"
    shape: tuple[int, ...]  # one member's shape
    offset: int  # start in the flat buffer
    numel: int  # one member's element count


class _Stack:
    """K members' parameters and gradients in flat buffers, BN running statistics, and the
    hand-written stacked forward and backward passes (no autograd in the step loop)."""

    def __init__(self, plan: Plan, states: list[dict[str, torch.Tensor]], device: str) -> None:
        self.arch, self.head, self.dtype, self.device = plan.arch, plan.head, plan.dtype, device
        self.k = len(states)
        for i, layer in enumerate(self.arch):
            if isinstance(layer, BatchNorm) and not (
                    i + 1 < len(self.arch) and isinstance(self.arch[i + 1], Linear)):
                raise ValueError("the batched engine folds every BatchNorm into the Linear "
                                 "layer that follows it; this architecture has none there")
        entries: list[tuple[str, tuple[int, ...]]] = []
        for i, layer in enumerate(self.arch):
            if isinstance(layer, Linear):
                entries += [(f"{i}.weight", (layer.out_features, layer.in_features)),
                            (f"{i}.bias", (layer.out_features,))]
            elif isinstance(layer, BatchNorm):
                entries += [(f"{i}.weight", (layer.features,)), (f"{i}.bias", (layer.features,))]
        self.layout: list[_Param] = []
        offset = 0
        for name, shape in entries:
            numel = math.prod(shape)
            self.layout.append(_Param(name, shape, offset, numel))
            offset += self.k * numel
        self.flat = torch.empty(offset, dtype=self.dtype, device=device)
        self.grad = torch.zeros_like(self.flat)
        self.views: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        for p in self.layout:
            part = slice(p.offset, p.offset + self.k * p.numel)
            self.views[p.name] = self.flat[part].view(self.k, *p.shape)
            self.views[p.name].copy_(torch.stack([s[p.name] for s in states]))
            self.grads[p.name] = self.grad[part].view(self.k, *p.shape)
        # member_index[j] = which member flat element j belongs to.
        self.member_index = torch.cat([
            torch.arange(self.k, device=device).repeat_interleave(p.numel) for p in self.layout])
        self.running: dict[int, tuple[torch.Tensor, torch.Tensor]] = {
            i: (torch.zeros(self.k, layer.features, dtype=self.dtype, device=device),
                torch.ones(self.k, layer.features, dtype=self.dtype, device=device))
            for i, layer in enumerate(self.arch) if isinstance(layer, BatchNorm)}
        self._workspaces: dict[tuple[int, bool], _Workspace] = {}
        self.native: native.NativeMLP | None = None

    def use_native(self, loss: str, threads: int) -> None:
        """Run this stack's training steps and evaluations with the fused C++ kernel."""
        self.native = native.NativeMLP(self.arch, self.head, loss, self.k, self.flat, self.grad,
                                       {p.name: p.offset for p in self.layout}, self.running,
                                       threads)

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """Expand one value per member ([K]) to one per flat parameter element ([P])."""
        return values.index_select(0, self.member_index)

    def forward(self, x: torch.Tensor, training: bool,
                ws: _Workspace | None = None) -> torch.Tensor:
        """Raw outputs [K, O, B] (feature-major) for shared inputs [B, D] or per-member [K, B, D].

        Activations are feature-major, [K, F, B], so BatchNorm reduces and every per-feature
        broadcast runs along contiguous rows of B examples (much faster on the CPU than
        [K, B, F] with its short inner dimension). A BatchNorm layer is never materialised:
        its output c * s + shift (c the centred input, s = gamma / std) is folded into the
        Linear layer after it, whose weights become W * s and bias b + W @ shift, so a
        training step saves one full pass over the activations per BatchNorm layer.
        With `training`, BN uses batch statistics, updates its running estimates and keeps
        what `backward` needs in `ws` (which owns every buffer: no allocation per step).
        """
        ws = ws if ws is not None else _Workspace(self.dtype, self.device)
        k, n = self.k, x.shape[-2]
        h = x
        fold: tuple[torch.Tensor, torch.Tensor] | None = None  # (s, shift) of the BN before
        for i, layer in enumerate(self.arch):
            if isinstance(layer, Linear):
                w, b = self.views[f"{i}.weight"], self.views[f"{i}.bias"]
                fo, fi = layer.out_features, layer.in_features
                bias = b.unsqueeze(2)
                if fold is not None:
                    s, shift = fold
                    w = torch.mul(w, s.transpose(1, 2), out=ws.get(("wfold", i), (k, fo, fi)))
                    bias = torch.baddbmm(bias, self.views[f"{i}.weight"], shift,
                                         out=ws.get(("bfold", i), (k, fo, 1)))
                    fold = None
                out = ws.get(("z", i), (k, fo, n))
                if h.dim() == 2:  # shared inputs: one GEMM against all members' weights
                    torch.addmm(bias.reshape(k * fo, 1), w.reshape(k * fo, fi), h.t(),
                                out=out.view(k * fo, n))
                elif i == 0:  # per-member inputs [K, B, D]
                    torch.baddbmm(bias, w, h.transpose(1, 2), out=out)
                else:
                    torch.baddbmm(bias, w, h, out=out)
                h = out
            elif isinstance(layer, Activation):
                _ACTIVATIONS[layer.name](h)  # in place: the saved output gives the derivative
            else:
                fold = self._batch_norm(i, h, training, ws)
                h = ws.get(("c", i), h.shape) if training else h
        return h

    def _batch_norm(self, i: int, a: torch.Tensor, training: bool,
                    ws: _Workspace) -> tuple[torch.Tensor, torch.Tensor]:
        """BatchNorm1d of K members on [K, F, B]: (s, shift) with output c * s + shift.

        Training: batch statistics (biased variance to normalise, unbiased for the running
        estimate, momentum 0.1, eps 1e-5, as `nn.BatchNorm1d`), c = a - mean is kept in `ws`.
        Eval: running statistics, c = a itself.
        """
        k, f, n = a.shape
        gamma, beta = self.views[f"{i}.weight"], self.views[f"{i}.bias"]
        rm, rv = self.running[i]
        s = ws.get(("s", i), (k, f, 1))
        if not training:
            torch.add(rv.unsqueeze(2), BN_EPS, out=s).rsqrt_().mul_(gamma.unsqueeze(2))
            return s, torch.addcmul(beta.unsqueeze(2), rm.unsqueeze(2), s, value=-1.0,
                                    out=ws.get(("shift", i), (k, f, 1)))
        mean = torch.mean(a, 2, keepdim=True, out=ws.get(("mean", i), (k, f, 1)))
        c = torch.sub(a, mean, out=ws.get(("c", i), (k, f, n)))
        # Two-pass variance (no cancellation); the norm reads c once, without a c * c pass.
        var = torch.linalg.vector_norm(c, dim=2, keepdim=True, out=ws.get(("var", i), (k, f, 1)))
        var.square_().div_(n)
        invstd = torch.add(var, BN_EPS, out=ws.get(("invstd", i), (k, f, 1))).rsqrt_()
        rm.mul_(1 - BN_MOMENTUM).add_(mean.squeeze(2), alpha=BN_MOMENTUM)
        rv.mul_(1 - BN_MOMENTUM).add_(var.squeeze(2), alpha=BN_MOMENTUM * n / (n - 1))
        torch.mul(invstd, gamma.unsqueeze(2), out=s)
        return s, beta.unsqueeze(2)

    def backward(self, x: torch.Tensor, grad_out: torch.Tensor, ws: _Workspace) -> None:
        """Gradients of the summed member losses into `self.grad`, from dL/d outputs [K, O, B].

        Uses what the training `forward` of the same batch left in `ws`; each member's
        gradient is exactly its own (members never mix). Activation derivatives are
        autograd's own kernels (threshold / tanh / sigmoid backward from saved outputs).
        """
        k, n = self.k, x.shape[-2]
        g = grad_out
        i = len(self.arch) - 1
        while i >= 0:
            layer = self.arch[i]
            if isinstance(layer, Activation):
                _ACTIVATION_BACKWARD[layer.name](g, ws.get(("z", i - 1), g.shape), grad_input=g)
                i -= 1
                continue
            assert isinstance(layer, Linear)
            fo, fi = layer.out_features, layer.in_features
            w = self.views[f"{i}.weight"]
            gw, gb = self.grads[f"{i}.weight"], self.grads[f"{i}.bias"]
            torch.sum(g, 2, out=gb)
            if i == 0:
                if x.dim() == 2 and fi <= SMALL_INPUT:  # MKL's GEMM is slow this thin
                    for d in range(fi):
                        torch.mv(g.reshape(k * fo, n), x[:, d], out=gw[:, :, d].reshape(-1))
                elif x.dim() == 2:
                    torch.mm(g.reshape(k * fo, n), x, out=gw.view(k * fo, fi))
                else:
                    torch.bmm(g, x, out=gw)
                return
            if isinstance(self.arch[i - 1], BatchNorm):
                g = self._linear_after_batch_norm_backward(i, g, ws)
                i -= 2
                continue
            torch.bmm(g, ws.get(("z", i - 2), (k, fi, n)).transpose(1, 2), out=gw)
            g = _matmul(w.transpose(1, 2), g, ws.get(("g", i), (k, fi, n)))
            i -= 1

    def _linear_after_batch_norm_backward(self, i: int, g: torch.Tensor,
                                          ws: _Workspace) -> torch.Tensor:
        """Backward of Linear i applied to BN i-1's output c * s + beta: dL/d BN input.

        With G = g @ c^T (the one reduction over examples), everything the closed-form BN
        backward needs follows from small [K, O, F] products instead of passes over [K, F, B]:
        sum_b dy = W^T sum_b g, sum_b dy * c = sum_o W * G, dW = G * s + sum_b g beta^T, and
        dx = s * dy - s * dbeta / n - c * s * invstd * dgamma / n, where s * dy = (W * s)^T g.
        """
        j = i - 1
        k, fo, n = g.shape
        w, gw, gb = self.views[f"{i}.weight"], self.grads[f"{i}.weight"], self.grads[f"{i}.bias"]
        fi = w.shape[2]
        c, s = ws.get(("c", j), (k, fi, n)), ws.get(("s", j), (k, fi, 1))
        invstd = ws.get(("invstd", j), (k, fi, 1))
        gamma_grad, beta_grad = self.grads[f"{j}.weight"], self.grads[f"{j}.bias"]
        torch.bmm(g, c.transpose(1, 2), out=gw)  # G
        torch.bmm(gb.unsqueeze(1), w, out=beta_grad.unsqueeze(1))
        torch.sum(torch.mul(w, gw, out=ws.get(("wg", i), (k, fo, fi))), 1, out=gamma_grad)
        gamma_grad.mul_(invstd.squeeze(2))
        gw.mul_(s.transpose(1, 2)).baddbmm_(gb.unsqueeze(2),
                                            self.views[f"{j}.bias"].unsqueeze(1))
        shift = torch.mul(beta_grad.unsqueeze(2), s, out=ws.get(("dshift", j), (k, fi, 1)))
        shift.div_(-n)
        coef = torch.mul(gamma_grad.unsqueeze(2), s, out=ws.get(("dcoef", j), (k, fi, 1)))
        coef.mul_(invstd).div_(-n)
        dx = _matmul(ws.get(("wfold", i), (k, fo, fi)).transpose(1, 2), g,
                     ws.get(("g", i), (k, fi, n))).add_(shift)
        return dx.addcmul_(c, coef)

    def workspace(self, n: int, training: bool = True) -> _Workspace:
        """The reusable buffers for batches of n examples (fresh buffers fault in pages)."""
        key = (n, training)
        if key not in self._workspaces:
            self._workspaces[key] = _Workspace(self.dtype, self.device)
        return self._workspaces[key]

    def member_state(self, k: int, steps: int) -> dict[str, torch.Tensor]:
        """Member k's state dict after `steps` training steps, keyed like the reference's."""
        state = {p.name: self.views[p.name][k].detach().cpu().clone() for p in self.layout}
        for i, layer in enumerate(self.arch):
            if isinstance(layer, BatchNorm):
                rm, rv = self.running[i]
                state[f"{i}.running_mean"] = rm[k].cpu().clone()
                state[f"{i}.running_var"] = rv[k].cpu().clone()
                state[f"{i}.num_batches_tracked"] = torch.tensor(steps, dtype=torch.int64)
        return {name: state[name] for name in sorted(state, key=_state_order)}

    def reset_members(self, dead: torch.Tensor) -> None:
        """Zero the parameters and reset the BN statistics of members where `dead` is True."""
        mask = self.per_element(dead)
        self.flat.masked_fill_(mask, 0.0)
        for rm, rv in self.running.values():
            rm.masked_fill_(dead.unsqueeze(1), 0.0)
            rv.masked_fill_(dead.unsqueeze(1), 1.0)


def _gather_rows(x: torch.Tensor, index: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """x[index] for a [K, B] index: [K, B, ...], via `index_select` (into `out` if given), which
    on the CPU is about twice as fast as `F.embedding` or advanced indexing and uses threads."""
    k, b = index.shape
    flat = out.view(k * b, *x.shape[1:]) if out is not None else None
    return torch.index_select(x, 0, index.reshape(-1), out=flat).view(k, b, *x.shape[1:])


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Batched a @ b into out; a broadcast multiply when the inner size is 1 (MKL's batched
    GEMM is several times slower on outer products)."""
    if a.shape[2] == 1:
        return torch.mul(a, b, out=out)
    return torch.bmm(a, b, out=out)


class _Workspace:
    """Named buffers allocated on first use and reused by every later step of the same shape."""

    def __init__(self, dtype: torch.dtype, device: str) -> None:
        self.dtype, self.device = dtype, device
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, shape: Sequence[int]) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = torch.empty(tuple(shape), dtype=self.dtype,
                                                  device=self.device)
        return buf


def _state_order(name: str) -> tuple[int, int]:
    index, kind = name.split(".", 1)
    kinds = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return int(index), kinds.index(kind)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_, "tanh": torch.tanh_, "sigmoid": torch.sigmoid_,
}
# Autograd's derivative kernels, from the saved outputs: (grad, output, grad_input=out).
_ACTIVATION_BACKWARD: dict[str, Callable[..., torch.Tensor]] = {
    "relu": lambda g, out, grad_input: torch.ops.aten.threshold_backward.grad_input(
        g, out, 0, grad_input=grad_input),
    "tanh": torch.ops.aten.tanh_backward.grad_input,
    "sigmoid": torch.ops.aten.sigmoid_backward.grad_input,
}


# --- functional per-member optimizers ----------------------------------------------------------

class _Optimizer:
    """torch.optim's SGD / Adam / AdamW formulas on the flat buffer, one hyperparameter per member.

    Each formula follows torch's single-tensor implementation operation by operation (weight
    decay added to the gradient for SGD and Adam, decoupled for AdamW; Adam's bias corrections
    computed on the host in double precision per step, as torch does), so a member's update is
    the update torch.optim would make for that run.
    """

    def __init__(self, stack: _Stack, specs: list[RunSpec], total_steps: int) -> None:
        self.stack, self.kind = stack, specs[0].optimizer
        self.nesterov = specs[0].nesterov
        dev, dt = stack.device, stack.dtype

        def member(values: list[float]) -> torch.Tensor:
            return stack.per_element(torch.tensor(values, dtype=dt, device=dev))

        flat = stack.flat
        wd = [s.weight_decay for s in specs]
        self.l1 = member([s.l1 for s in specs]) if any(s.l1 for s in specs) else None
        if self.kind == "sgd":
            self.neg_lr = member([-s.lr for s in specs])
            self.wd = member(wd) if any(wd) else None
            has_momentum = any(s.momentum for s in specs)
            self.momentum = member([s.momentum for s in specs]) if has_momentum else None
            self.buf = torch.zeros_like(flat) if has_momentum else None
            return
        decoupled = self.kind == "adamw"
        self.wd = member(wd) if any(wd) and not decoupled else None
        self.decay = member([1 - s.lr * s.weight_decay for s in specs]) \
            if any(wd) and decoupled else None
        self.lerp_weight = member([1 - s.betas[0] for s in specs])
        self.beta2 = member([s.betas[1] for s in specs])
        self.one_minus_beta2 = member([1 - s.betas[1] for s in specs])
        self.eps = member([s.eps for s in specs])
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
        # Bias corrections for every step, computed in double on the host like torch does.
        t = np.arange(1, total_steps + 1, dtype=np.float64)[:, None]
        lr = np.array([s.lr for s in specs])[None, :]
        b1 = np.array([s.betas[0] for s in specs])[None, :]
        b2 = np.array([s.betas[1] for s in specs])[None, :]
        self.neg_step_size = torch.tensor(-(lr / (1 - b1 ** t)), dtype=dt, device=dev)
        self.bc2_sqrt = torch.tensor((1 - b2 ** t) ** 0.5, dtype=dt, device=dev)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, step_index: int) -> None:
        """One update of every member from the flat gradient (data loss only; L1 added here)."""
        p = self.stack.flat
        if self.l1 is not None:  # d/dp lambda * sum |p| = lambda * sgn(p), as autograd makes it
            grad = torch.addcmul(grad, self.l1, torch.sgn(p))
        if self.kind == "sgd":
            if self.wd is not None:
                grad = torch.addcmul(grad, p, self.wd)
            if self.buf is not None:
                self.buf.mul_(self.momentum).add_(grad)
                grad = torch.addcmul(grad, self.buf, self.momentum) if self.nesterov else self.buf
            p.addcmul_(grad, self.neg_lr)
            return
        if self.wd is not None:
            grad = torch.addcmul(grad, p, self.wd)
        if self.decay is not None:
            p.mul_(self.decay)
        self.exp_avg.lerp_(grad, self.lerp_weight)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad * self.one_minus_beta2, grad)
        per = self.stack.per_element
        denom = (self.exp_avg_sq.sqrt() / per(self.bc2_sqrt[step_index])).add_(self.eps)
        # torch's addcdiv computes p + (value * exp_avg) / denom, in that order.
        p.add_(torch.mul(self.exp_avg, per(self.neg_step_size[step_index])).div_(denom))

    @torch.no_grad()
    def mask(self, dead: torch.Tensor) -> None:
        """Stop updating members where `dead` is True and zero their state."""
        element_dead = self.stack.per_element(dead)
        if self.kind == "sgd":
            self.neg_lr.masked_fill_(element_dead, 0.0)
            if self.buf is not None:
                self.buf.masked_fill_(element_dead, 0.0)
        else:
            self.neg_step_size.masked_fill_(dead.unsqueeze(0), 0.0)
            self.exp_avg.masked_fill_(element_dead, 0.0)
            self.exp_avg_sq.masked_fill_(element_dead, 0.0)
            if self.decay is not None:
                self.decay.masked_fill_(element_dead, 1.0)
        self.stack.reset_members(dead)


def _loss(loss_fn: Callable[..., torch.Tensor], out: torch.Tensor, target: torch.Tensor,
          head: Head) -> torch.Tensor:
    """Per-member losses [K]; shared float targets are expanded to the stacked outputs."""
    if target.is_floating_point() and target.dim() < out.dim():
        target = target.expand_as(out)
    return loss_fn(out, target, head)


def _loss_and_grad(loss_name: str, out: torch.Tensor, target: torch.Tensor,
                   head: Head) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member losses [K] and d(sum of them)/d outputs, both for feature-major [K, O, B].

    MSE under a sigmoid, tanh or identity head and BCE have their gradients written out
    (the loss value is the registry's own function); softmax heads use autograd on the loss.
    """
    o = out.transpose(1, 2)  # [K, B, O] view
    scale = 1.0 / (o.shape[1] * o.shape[2])
    if target.is_floating_point() and target.dim() < o.dim():
        target = target.expand_as(o)
    if loss_name == "mse" and head.activation != "softmax":
        p = apply_head(o, head)
        diff = p - target
        grad = diff.mul(2 * scale)
        if head.activation in _ACTIVATION_BACKWARD:
            _ACTIVATION_BACKWARD[head.activation](grad, p, grad_input=grad)
        return diff.square_().mean(dim=(-2, -1)), grad.transpose(1, 2)
    loss_fn = registry.get_loss(loss_name).fn
    if loss_name == "bce":
        grad = torch.sigmoid(o).sub_(target).mul_(scale)
        return loss_fn(o, target, head), grad.transpose(1, 2)
    leaf = o.detach().requires_grad_()
    with torch.enable_grad():
        loss = loss_fn(leaf, target, head)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad.transpose(1, 2)


# --- evaluation -----------------------------------------------------------------------------------

def _evaluate(stack: _Stack, x: torch.Tensor, y: torch.Tensor, loss_name: str,
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
    transient: dict[int, _Workspace] = {}
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
                    size, _Workspace(stack.dtype, stack.device))
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
                 keep_params: bool, native_threads: int = 0) -> list[RunResult]:
    """Train specs that share a shape as one stacked computation: with the fused C++ step on
    `native_threads` threads when that is positive, else with the stacked torch step."""
    first = specs[0]
    device, kind = plan.device, data.task.kind
    k, n, bs = len(specs), data.n_train, plan.batch_size
    metric = data.task.default_metric
    names = metric_names(kind)
    n_batches = math.ceil(n / bs)

    states = [initial_state(plan.arch, init=s.init, init_scale=s.init_scale, seed=s.seed,
                            dtype=plan.dtype) for s in specs]
    stack = _Stack(plan, states, device)
    opt = _Optimizer(stack, specs, first.epochs * n_batches)
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

    curves: list[dict[str, list[float]]] = [
        {"train_loss": [], "val_loss": [], **{f"val_{m}": [] for m in names}} for _ in specs]
    step_buffer = torch.empty((first.epochs * n_batches, k), dtype=plan.dtype, device=device) \
        if record_steps else None
    diverged_epoch: list[int | None] = [None] * k
    epochs_run = [0] * k
    time_to_target: list[dict[str, float] | None] = [None] * k
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    train_clock, eval_clock = Stopwatch(device), Stopwatch(device)
    alive = [True] * k
    step = 0

    for epoch in range(1, first.epochs + 1):
        with train_clock.measure():
            xs = ys = order = None
            if first.shuffle:
                order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
                if pregather:
                    xs, ys = _gather_rows(x, order), _gather_rows(y, order)
            loss_sum = torch.zeros(k, dtype=plan.dtype, device=device)
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                if stack.native is not None:
                    stack.native.train_step(x, y, start, stop - start, order, step_losses)
                    detached = step_losses
                else:
                    detached = _torch_step(stack, x, y, start, stop, order, xs, ys,
                                           first.loss, plan.head)
                opt.step(stack.grad, step)
                loss_sum += detached
                if step_buffer is not None:
                    step_buffer[step] = detached
                step += 1
        with eval_clock.measure():
            val = _evaluate(stack, data.x_val, data.y_val, first.loss, kind)
            rows = torch.stack([loss_sum, val["loss"], *(val[m] for m in names)]).tolist()
        newly_dead = []
        for i in range(k):
            if not alive[i]:
                continue
            epochs_run[i] = epoch
            train_loss = rows[0][i] / n_batches
            c = curves[i]
            c["train_loss"].append(train_loss)
            c["val_loss"].append(rows[1][i])
            for j, m in enumerate(names):
                c[f"val_{m}"].append(rows[2 + j][i])
            if not (math.isfinite(train_loss) and math.isfinite(rows[1][i])):
                diverged_epoch[i] = epoch
                newly_dead.append(i)
                continue
            target = specs[i].target
            if (target is not None and time_to_target[i] is None
                    and reached(c[f"val_{metric}"][-1], target, metric)):
                time_to_target[i] = {"epoch": epoch, "seconds": train_clock.seconds / k}
        if newly_dead:
            if keep_params:
                snapshots.update({i: stack.member_state(i, epoch * n_batches)
                                  for i in newly_dead})
            dead = torch.zeros(k, dtype=torch.bool)
            dead[newly_dead] = True
            opt.mask(dead.to(device))
            for i in newly_dead:
                alive[i] = False
        if not any(alive):
            break

    final = _final_metrics(stack, data, first.loss, kind, val) if any(alive) else None
    steps_cpu = step_buffer.cpu() if step_buffer is not None else None
    keys = [f"{split}_{m}" for split in ("train", "val", "test") for m in names] + ["val_loss"]
    train_s, eval_s = train_clock.seconds / k, eval_clock.seconds / k
    results = []
    for i, spec in enumerate(specs):
        if diverged_epoch[i] is not None or final is None:
            metrics = dict.fromkeys(keys, math.nan)
        else:
            metrics = {key: final[key][i] for key in keys}
        params = None
        if keep_params:
            params = snapshots.get(i) or stack.member_state(i, epochs_run[i] * n_batches)
        results.append(RunResult(
            spec=spec,
            metrics=metrics,
            curves=curves[i],
            timing={"train_seconds": train_s, "eval_seconds": eval_s,
                    "samples_per_second": epochs_run[i] * n / train_s if train_s > 0 else math.nan},
            diverged=diverged_epoch[i] is not None,
            diverged_epoch=diverged_epoch[i],
            epochs_run=epochs_run[i],
            time_to_target=time_to_target[i],
            engine="batched",
            step_losses=steps_cpu[:epochs_run[i] * n_batches, i].tolist()
            if steps_cpu is not None else None,
            params=params,
        ))
    return results


def _torch_step(stack: _Stack, x: torch.Tensor, y: torch.Tensor, start: int, stop: int,
                order: torch.Tensor | None, xs: torch.Tensor | None, ys: torch.Tensor | None,
                loss: str, head: Head) -> torch.Tensor:
    """One stacked torch step on examples start..stop of the epoch: gradients into
    `stack.grad`; returns the per-member losses [K]. The batch is shared (`order` None), taken
    from the pre-gathered epoch (`xs`, `ys`), or gathered per member from `order` now."""
    k, n = stack.k, stop - start
    if order is None:
        xb, yb = x[start:stop], y[start:stop]
    elif xs is not None and ys is not None:
        xb, yb = xs[:, start:stop], ys[:, start:stop]
    else:
        idx = order[:, start:stop]
        xb = _gather_rows(x, idx, stack.workspace(n).get(("x",), (k, n, x.shape[1])))
        yb = _gather_rows(y, idx)
    ws = stack.workspace(n)
    out = stack.forward(xb, True, ws)
    detached, grad_out = _loss_and_grad(loss, out, yb, head)
    stack.backward(xb, grad_out, ws)
    return detached


def _final_metrics(stack: _Stack, data: TaskData, loss: str, kind: str,
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


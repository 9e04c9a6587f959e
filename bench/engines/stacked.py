"""The batched engine's stacked model: K members' parameters in flat buffers and the
hand-written forward and backward passes of the stacked torch step (no autograd in the step).

`Stack` holds every member's parameters (and gradients) in one flat `[P]` buffer with `[K, ...]`
views, BatchNorm running statistics per member, and `forward` / `backward` for the layer types
there are (Linear, relu / tanh / sigmoid, BatchNorm folded into the Linear layer after it) on
feature-major `[K, F, B]` activations, into `Workspace` buffers allocated once per batch shape.
`loss_and_grad` gives the losses' gradients and `torch_step` is one whole stacked step. See
`bench.engines.batched` for the engine that trains with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bench.catalog import registry
from bench.catalog.losses import apply_head
from bench.catalog.models import BATCH_NORM_EPS, Activation, BatchNorm, Head, Linear
from bench.engines import native
from bench.engines.setup import Plan

BN_MOMENTUM, BN_EPS = 0.1, BATCH_NORM_EPS
SMALL_INPUT = 8  # input widths up to this get the first layer's weight gradient as D GEMVs

# --- stacked parameters ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Param:
    name: str  # state-dict key, e.g. "0.weight"
    shape: tuple[int, ...]  # one member's shape
    offset: int  # start in the flat buffer
    numel: int  # one member's element count


# A few members' parameters ([R, ...] per state-dict name) and BatchNorm running statistics
# (layer index -> ([R, F] mean, [R, F] variance)), as `Stack.member_copies` takes them.
MemberCopies = tuple[dict[str, torch.Tensor], dict[int, tuple[torch.Tensor, torch.Tensor]]]


def _entries(arch: tuple) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter of `arch`, in the flat buffer's order."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    for i, layer in enumerate(arch):
        if isinstance(layer, Linear):
            entries += [(f"{i}.weight", (layer.out_features, layer.in_features)),
                        (f"{i}.bias", (layer.out_features,))]
        elif isinstance(layer, BatchNorm):
            entries += [(f"{i}.weight", (layer.features,)), (f"{i}.bias", (layer.features,))]
    return entries


class Stack:
    """K members' parameters and gradients in flat buffers, BN running statistics, and the
    hand-written stacked forward and backward passes (no autograd in the step loop)."""

    def __init__(self, plan: Plan, states: list[dict[str, torch.Tensor]], device: str) -> None:
        """K members from their state dicts (keyed like the reference's; running statistics
        start at zeros and ones)."""
        self._build(plan, {name: torch.stack([s[name] for s in states])
                           for name, _ in _entries(plan.arch)}, None, device)

    @classmethod
    def of_stacked(cls, plan: Plan, copies: MemberCopies, device: str) -> Stack:
        """A stack of the members in `copies` ([K, ...] per parameter, and per BatchNorm its
        running statistics), copied in one go per tensor (no split into members)."""
        new = cls.__new__(cls)
        new._build(plan, copies[0], copies[1], device)
        return new

    def _build(self, plan: Plan, params: dict[str, torch.Tensor],
               running: dict[int, tuple[torch.Tensor, torch.Tensor]] | None,
               device: str) -> None:
        self.plan, self.arch, self.head = plan, plan.arch, plan.head
        self.dtype, self.device = plan.dtype, device
        self.k = next(iter(params.values())).shape[0]
        self.eval_k = self.k  # the group size evaluation chunks are sized for (kept by `select`)
        for i, layer in enumerate(self.arch):
            if isinstance(layer, BatchNorm) and not (
                    i + 1 < len(self.arch) and isinstance(self.arch[i + 1], Linear)):
                raise ValueError("the batched engine folds every BatchNorm into the Linear "
                                 "layer that follows it; this architecture has none there")
        self.layout: list[_Param] = []
        offset = 0
        for name, shape in _entries(self.arch):
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
            self.views[p.name].copy_(params[p.name])
            self.grads[p.name] = self.grad[part].view(self.k, *p.shape)
        self.running: dict[int, tuple[torch.Tensor, torch.Tensor]] = {
            i: (torch.zeros(self.k, layer.features, dtype=self.dtype, device=device),
                torch.ones(self.k, layer.features, dtype=self.dtype, device=device))
            for i, layer in enumerate(self.arch) if isinstance(layer, BatchNorm)}
        for i, (rm, rv) in (running or {}).items():
            self.running[i][0].copy_(rm)
            self.running[i][1].copy_(rv)
        self._workspaces: dict[tuple[int, bool], Workspace] = {}
        self.native: native.NativeMLP | None = None
        self._native_args: tuple[str, int] | None = None

    def use_native(self, loss: str, threads: int) -> None:
        """Run this stack's training steps and evaluations with the fused C++ kernel."""
        self._native_args = (loss, threads)
        self.native = native.NativeMLP(self.arch, self.head, loss, self.k, self.flat, self.grad,
                                       {p.name: p.offset for p in self.layout}, self.running,
                                       threads)

    @functools.cached_property
    def member_index(self) -> torch.Tensor:
        """[P]: which member each flat element belongs to (built when first used: a stack made
        by compaction copies its optimizer's per-element tensors and may never need it)."""
        return torch.cat([torch.arange(self.k, device=self.device).repeat_interleave(p.numel)
                          for p in self.layout])

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """Expand one value per member ([K]) to one per flat parameter element ([P])."""
        return values.index_select(0, self.member_index)

    def forward(self, x: torch.Tensor, training: bool,
                ws: Workspace | None = None) -> torch.Tensor:
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
        ws = ws if ws is not None else Workspace(self.dtype, self.device)
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
                    ws: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
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

    def backward(self, x: torch.Tensor, grad_out: torch.Tensor, ws: Workspace) -> None:
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
                                          ws: Workspace) -> torch.Tensor:
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

    def workspace(self, n: int, training: bool = True) -> Workspace:
        """The reusable buffers for batches of n examples (fresh buffers fault in pages)."""
        key = (n, training)
        if key not in self._workspaces:
            self._workspaces[key] = Workspace(self.dtype, self.device)
        return self._workspaces[key]

    def member_states(self, rows: Sequence[int], steps: int) -> list[dict[str, torch.Tensor]]:
        """The state dicts of the members in `rows` after `steps` training steps, keyed like the
        reference's: one gather per tensor for all of them (members leave in batches). Each
        member's tensors are rows of those gathered copies, so training on leaves them as
        they are; `.clone()` one to hold it apart from the others' (e.g. before torch.save)."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        taken = {p.name: self.views[p.name].detach().index_select(0, index).cpu()
                 for p in self.layout}
        for i, layer in enumerate(self.arch):
            if isinstance(layer, BatchNorm):
                rm, rv = self.running[i]
                taken[f"{i}.running_mean"] = rm.index_select(0, index).cpu()
                taken[f"{i}.running_var"] = rv.index_select(0, index).cpu()
        names = sorted([*taken, *(f"{i}.num_batches_tracked" for i, layer in
                                  enumerate(self.arch) if isinstance(layer, BatchNorm))],
                       key=_state_order)
        # one unbind per tensor and one step count shared by all (a tensor per member and
        # layer cost more than the gathers when a pruner stops hundreds of members)
        parts = {name: tensor.unbind(0) for name, tensor in taken.items()}
        tracked = torch.tensor(steps, dtype=torch.int64)
        return [{name: parts[name][j] if name in parts else tracked for name in names}
                for j in range(len(index))]

    def element_index(self, rows: torch.Tensor) -> torch.Tensor:
        """Where the flat elements of members `rows` ([R] long) are, in the order a stack of just
        those members lays them out (parameter by parameter, member by member)."""
        return torch.cat([
            (p.offset + rows.unsqueeze(1) * p.numel
             + torch.arange(p.numel, device=rows.device)).reshape(-1) for p in self.layout])

    def select(self, rows: Sequence[int]) -> Stack:
        """A new stack of the members in `rows` (in that order): parameters and BatchNorm running
        statistics copied bit for bit, the same step implementation, the same evaluation chunks.

        This is how members leave a group (compaction): every kernel of the step computes a
        member from its own parameters alone, so a member trains on exactly as before.
        """
        return self.assemble([self.member_copies(rows)])

    def member_copies(self, rows: Sequence[int]) -> MemberCopies:
        """Copies of the parameters ([R, ...] per name) and BatchNorm running statistics of the
        members in `rows`: a quarter of what a stack of them holds (no gradient buffer, no
        element index), kept for `assemble`."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        return ({p.name: self.views[p.name].index_select(0, index) for p in self.layout},
                {i: (rm.index_select(0, index), rv.index_select(0, index))
                 for i, (rm, rv) in self.running.items()})

    def assemble(self, parts: Sequence[MemberCopies]) -> Stack:
        """One stack like this one (plan, device, evaluation chunks, step) of every member in
        `parts` (`member_copies`), in order, bit for bit: members that left a group at
        different epochs, evaluated together."""
        def cat(tensors: list[torch.Tensor]) -> torch.Tensor:  # no copy for one part (select)
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

        params = {name: cat([p[name] for p, _ in parts]) for name in parts[0][0]}
        running = {i: (cat([r[i][0] for _, r in parts]), cat([r[i][1] for _, r in parts]))
                   for i in parts[0][1]}
        new = Stack.of_stacked(self.plan, (params, running), self.device)
        new.eval_k = self.eval_k
        if self._native_args is not None:
            new.use_native(*self._native_args)
        return new


def gather_rows(x: torch.Tensor, index: torch.Tensor,
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


class Workspace:
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


def loss_and_grad(loss_name: str, out: torch.Tensor, target: torch.Tensor,
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


def torch_step(stack: Stack, x: torch.Tensor, y: torch.Tensor, start: int, stop: int,
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
        xb = gather_rows(x, idx, stack.workspace(n).get(("x",), (k, n, x.shape[1])))
        yb = gather_rows(y, idx)
    ws = stack.workspace(n)
    out = stack.forward(xb, True, ws)
    detached, grad_out = loss_and_grad(loss, out, yb, head)
    stack.backward(xb, grad_out, ws)
    return detached

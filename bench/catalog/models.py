"""Model definitions as plain layer lists, built into `nn.Sequential` or used functionally.

A model is an `Architecture`: a tuple of `Linear`, `Activation` and `BatchNorm` layers. The
reference engine builds it into an `nn.Sequential`; the batched engine reads the same tuple and
runs K stacked copies. The initial parameters come from `initial_state`, one seeded CPU
generator per run, so both engines start every run from exactly the same weights.

Every network of the notebooks is here, plus a generic `mlp`. The output layer always produces
raw scores (logits); the output activation ("head": sigmoid, tanh, softmax or identity) belongs
to the loss, chosen by `output_head` from the task, the loss and the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from bench.errors import UsageError

if TYPE_CHECKING:  # torch is imported where a network is built: reading specs needs none
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class Linear:
    """Fully connected layer `in_features -> out_features` with bias."""

    in_features: int
    out_features: int


@dataclass(frozen=True)
class Activation:
    """Element-wise non-linearity: relu, tanh or sigmoid."""

    name: str


BATCH_NORM_EPS = 1e-5  # torch's BatchNorm1d default, which `build_module` uses


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm1d over `features` channels (eps 1e-5, momentum 0.1, affine, running stats)."""

    features: int


Layer = Linear | Activation | BatchNorm
Architecture = tuple[Layer, ...]


@dataclass(frozen=True)
class Head:
    """How raw network outputs become predictions: `activation` over `n_outputs` units."""

    activation: str  # "sigmoid", "tanh", "softmax" or "identity"
    n_outputs: int


@dataclass(frozen=True)
class ModelDef:
    """A registry entry: a fixed network of the notebooks, or the generic configurable MLP."""

    name: str
    description: str
    hidden: tuple[int, ...] | None  # None: taken from the RunSpec (generic mlp)
    activation: str | None  # None: taken from the RunSpec
    batch_norm: bool | None  # None: taken from the RunSpec
    mse_head: str = "sigmoid"  # output activation under MSE on a classification task
    fixed_outputs: int | None = None
    # A network given as code: `factory(input_shape, n_outputs) -> nn.Module` (plugins, CNNs).
    # None for the layer-list networks above, which `architecture` describes.
    factory: Callable[[tuple[int, ...], int], nn.Module] | None = None
    origin: str = "built-in"  # where the entry comes from: "built-in", a plugin path or module

    @property
    def configurable(self) -> bool:
        """True when hidden sizes, activation and batch norm come from the RunSpec."""
        return self.hidden is None and self.factory is None


def lenet5(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """LeNet-5 for one-channel 28x28 or 8x8 images, flat ([784] / [64]) or not ([1, H, W]).

    28x28: conv 5x5 (pad 2) 6 channels, pool, conv 5x5 16 channels, pool, 400-120-84-outputs.
    8x8 (digits): the same with 3x3 convolutions (pad 1), so 16 x 2 x 2 = 64 features reach
    the linear layers. ReLU after every hidden layer, 2x2 average pooling (LeCun's subsampling).
    """
    from torch import nn

    pixels = math.prod(input_shape)
    side = {784: 28, 64: 8}.get(pixels)
    if side is None or len(input_shape) not in (1, 2, 3) or (
            len(input_shape) > 1 and input_shape[-2:] != (side, side)) or (
            len(input_shape) == 3 and input_shape[0] != 1):
        raise UsageError(f"lenet5 takes 28x28 or 8x8 one-channel images (784 or 64 inputs), "
                         f"not input shape {tuple(input_shape)}; use --model mlp for this task")
    kernel, pad, flat = (5, 2, 16 * 5 * 5) if side == 28 else (3, 1, 16 * 2 * 2)
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)) if len(input_shape) == 1 else
        nn.Unflatten(1, (1, side)) if len(input_shape) == 2 else nn.Identity(),
        nn.Conv2d(1, 6, kernel, padding=pad), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, kernel, padding=pad if side == 8 else 0), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, n_outputs))


def mlp_20x3_code(input_shape: tuple[int, ...], n_outputs: int,
                  batch_norm: bool = False) -> nn.Module:
    """Notebook 000's 20-20-20 ReLU network written as code, as a plugin would write it (an
    nn.Module factory; BatchNorm after each ReLU with `batch_norm`): the batched engine trains
    it on its torch.func path, where the layer-list twins take the hand-written step."""
    from torch import nn

    layers: list[nn.Module] = []
    width = math.prod(input_shape)
    for _ in range(3):
        layers += [nn.Linear(width, 20), nn.ReLU()]
        layers += [nn.BatchNorm1d(20)] if batch_norm else []
        width = 20
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, n_outputs))


MODELS: dict[str, ModelDef] = {
    m.name: m
    for m in [
        ModelDef("mlp", "generic MLP: --hidden, --activation, --batch-norm (Linear, act, BN)",
                 None, None, None),
        ModelDef("bn_mlp_20x3", "2-20-20-20-1 ReLU MLP, BatchNorm after each ReLU (notebook 000)",
                 (20, 20, 20), "relu", True),
        ModelDef("relu_mlp_500x2", "2-500-500-1 ReLU MLP (notebook 001)", (500, 500), "relu",
                 False),
        ModelDef("linear", "linear regression, no hidden layer (notebook 001)", (), "relu", False,
                 mse_head="identity"),
        ModelDef("logistic", "logistic regression: one linear layer, sigmoid (notebook 001)", (),
                 "relu", False),
        ModelDef("sigmoid_mlp_16x2", "784-16-16-10 sigmoid network of 3Blue1Brown (notebook 002)",
                 (16, 16), "sigmoid", False),
        ModelDef("relu_mlp_5", "2-5-2 ReLU network, two sigmoid outputs (notebook 003)", (5,),
                 "relu", False, fixed_outputs=2),
        ModelDef("tanh_mlp_4", "2-4-1 tanh network, tanh output, +-1 targets (notebook 003)",
                 (4,), "tanh", False, mse_head="tanh"),
        ModelDef("sigmoid_mlp_10", "2-10-1 sigmoid network (notebook 004)", (10,), "sigmoid",
                 False),
        ModelDef("lenet5", "LeNet-5 CNN (2 conv + 3 linear, ReLU, average pooling) for 28x28 "
                 "(mnist, fashion_mnist) or 8x8 (digits) images", None, None, None,
                 factory=lenet5),
        ModelDef("relu_mlp_20x3_code", "2-20-20-20-1 ReLU MLP written as nn.Module code, as a "
                 "plugin would (the batched engine's torch.func path)", None, None, None,
                 factory=mlp_20x3_code),
        ModelDef("bn_mlp_20x3_code", "bn_mlp_20x3 written as nn.Module code, as a plugin would "
                 "(the batched engine's torch.func path)", None, None, None,
                 factory=partial(mlp_20x3_code, batch_norm=True)),
    ]
}


def output_head(model: ModelDef, task_kind: str, n_classes: int, loss: str) -> Head:
    """Choose the output activation and width from the task, the loss and the model."""
    if task_kind == "regression":
        if model.fixed_outputs not in (None, 1):
            raise UsageError(f"model {model.name!r} has {model.fixed_outputs} outputs; a "
                             "regression task needs one: use --model mlp or linear")
        return Head("identity", 1)
    if loss == "ce":
        width = n_classes
        if model.fixed_outputs not in (None, width):
            raise UsageError(f"model {model.name!r} has {model.fixed_outputs} output(s) but "
                             f"cross-entropy needs {width}: use --loss mse or bce")
        return Head("softmax", width)
    width = model.fixed_outputs or (1 if task_kind == "binary" else n_classes)
    if task_kind == "multiclass" and width != n_classes:
        raise UsageError(f"model {model.name!r} has {width} output(s) but the task has "
                         f"{n_classes} classes: use --model mlp")
    if loss == "bce":
        return Head("sigmoid", width)
    head = model.mse_head if model.mse_head != "identity" else "sigmoid"
    return Head(head, width)


def architecture(model: ModelDef, input_dim: int, head: Head, *, hidden: tuple[int, ...],
                 activation: str, batch_norm: bool) -> Architecture:
    """The layer list of `model` for this input size and head (spec values fill the generic MLP)."""
    sizes = model.hidden if model.hidden is not None else hidden
    act = model.activation if model.activation is not None else activation
    bn = model.batch_norm if model.batch_norm is not None else batch_norm
    layers: list[Layer] = []
    width = input_dim
    for h in sizes:
        layers.append(Linear(width, h))
        layers.append(Activation(act))
        if bn:
            layers.append(BatchNorm(h))
        width = h
    layers.append(Linear(width, head.n_outputs))
    return tuple(layers)


def build_module(arch: Architecture) -> nn.Sequential:
    """The readable PyTorch module for an architecture (used by the reference engine)."""
    from torch import nn

    activations: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    modules: list[nn.Module] = []
    for layer in arch:
        if isinstance(layer, Linear):
            modules.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, Activation):
            modules.append(activations[layer.name]())
        else:
            modules.append(nn.BatchNorm1d(layer.features))
    return nn.Sequential(*modules)


def forward_numpy(arch: Architecture, state: Mapping[str, np.ndarray], x: np.ndarray,
                  head: Head) -> np.ndarray:
    """Head outputs of `build_module(arch)` loaded with `state`, in eval mode (BatchNorm on its
    running statistics), for inputs x [N, D], in NumPy and in the state's dtype.

    The same function as `bench.engines.setup.predict` on that module (a test holds them
    equal), without torch: the report draws decision boundaries from stored parameters with
    it, and never loads torch for them."""
    import numpy as np
    from scipy.special import expit, softmax

    out = x
    for i, layer in enumerate(arch):
        if isinstance(layer, Linear):
            out = out @ state[f"{i}.weight"].T + state[f"{i}.bias"]
        elif isinstance(layer, Activation):
            out = (np.maximum(out, 0) if layer.name == "relu" else np.tanh(out)
                   if layer.name == "tanh" else expit(out))
        else:  # eval-mode BatchNorm1d on its running statistics
            std = np.sqrt(state[f"{i}.running_var"] + BATCH_NORM_EPS)
            out = (out - state[f"{i}.running_mean"]) / std * state[f"{i}.weight"] \
                + state[f"{i}.bias"]
    if head.activation == "sigmoid":
        return expit(out)
    if head.activation == "tanh":
        return np.tanh(out)
    if head.activation == "softmax":
        return softmax(out, axis=-1)
    return out


def parameter_count(arch: Architecture) -> int:
    """Trainable parameters: weights and biases of linear layers, BN scale and shift."""
    total = 0
    for layer in arch:
        if isinstance(layer, Linear):
            total += layer.in_features * layer.out_features + layer.out_features
        elif isinstance(layer, BatchNorm):
            total += 2 * layer.features
    return total


def initial_state(arch: Architecture, *, init: str, init_scale: float, seed: int,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Seeded initial state, keyed like `build_module(arch).state_dict()`.

    Drawn in float64 on a CPU generator and then cast, so every engine, device and dtype starts a
    given seed from the same numbers. Schemes: "default" is PyTorch's nn.Linear distribution
    (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases); "xavier_uniform" draws weights
    with bound sqrt(6 / (fan_in + fan_out)) and zero biases; "normal" is N(0, 0.1^2) for weights
    and biases, as notebook 004 does. `init_scale` multiplies the drawn weights and biases.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    gen = torch.Generator().manual_seed(int(seed))
    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(arch):
        if isinstance(layer, Linear):
            fan_in, fan_out = layer.in_features, layer.out_features
            w_shape, b_shape = (fan_out, fan_in), (fan_out,)
            if init == "default":
                bound = 1.0 / math.sqrt(fan_in)
                w = (torch.rand(w_shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
                b = (torch.rand(b_shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            elif init == "xavier_uniform":
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                w = (torch.rand(w_shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
                b = torch.zeros(b_shape, dtype=torch.float64)
            elif init == "normal":
                w = torch.randn(w_shape, generator=gen, dtype=torch.float64) * 0.1
                b = torch.randn(b_shape, generator=gen, dtype=torch.float64) * 0.1
            else:
                raise UsageError(f"unknown init {init!r}; choose default, xavier_uniform, normal")
            state[f"{i}.weight"] = (w * init_scale).to(dtype)
            state[f"{i}.bias"] = (b * init_scale).to(dtype)
        elif isinstance(layer, BatchNorm):
            state[f"{i}.weight"] = torch.ones(layer.features, dtype=dtype)
            state[f"{i}.bias"] = torch.zeros(layer.features, dtype=dtype)
            state[f"{i}.running_mean"] = torch.zeros(layer.features, dtype=dtype)
            state[f"{i}.running_var"] = torch.ones(layer.features, dtype=dtype)
            state[f"{i}.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)
    return state


# --- networks given as code -----------------------------------------------------------------------

def factory_module(model: ModelDef, input_shape: tuple[int, ...], n_outputs: int, *, seed: int,
                   init_scale: float = 1.0, dtype: torch.dtype | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
    """`model.factory(input_shape, n_outputs)` built deterministically for `seed`.

    The factory runs on the CPU with float64 as the default dtype and torch's global generator
    seeded with `seed` (its state restored afterwards), then the module is cast to `dtype` and
    moved to `device`: like `initial_state`, a seed gives the same initial weights in every
    engine, dtype and device. The module's own initialisation is the "default" init scheme;
    `init_scale` multiplies every parameter (not the buffers). The module outputs raw scores:
    the head belongs to the loss (`output_head`).
    """
    import torch
    from torch import nn

    if model.factory is None:
        raise ValueError(f"model {model.name!r} is a layer list; use build_module")
    dtype = torch.float32 if dtype is None else dtype
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(int(seed))
        torch.set_default_dtype(torch.float64)
        try:
            module = model.factory(tuple(input_shape), int(n_outputs))
        except UsageError:
            raise
        except Exception as exc:  # a plugin's bug: one line naming the model and the error
            raise UsageError(f"model {model.name!r} ({model.origin}) failed to build for input "
                             f"shape {tuple(input_shape)} and {n_outputs} outputs: "
                             f"{type(exc).__name__}: {exc}") from exc
        finally:
            torch.set_default_dtype(previous)
    if not isinstance(module, nn.Module):
        raise UsageError(f"model {model.name!r} ({model.origin}) returned "
                         f"{type(module).__name__}, not a torch.nn.Module; its factory must "
                         "return the network")
    if init_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(init_scale)
    return module.to(device=device, dtype=dtype)



@dataclass(frozen=True)
class ModuleSize:
    """What sizing needs of a network given as code, per member and per example."""

    parameters: int
    activations: int  # output elements of every leaf module for one example
    multiply_adds: int  # of the forward pass for one example (linear and conv layers)
    widest: int  # the largest leaf output for one example


@lru_cache(maxsize=64)
def module_size(model: ModelDef, input_shape: tuple[int, ...], n_outputs: int) -> ModuleSize:
    """Parameters, activations and multiply-adds of `model.factory`'s module, measured by one
    forward pass of one example on the meta device (nothing is allocated or computed; cached,
    since sizing, chunking and `engine = auto` all ask)."""
    import torch
    from torch import nn

    with torch.device("meta"):
        module = model.factory(tuple(input_shape), int(n_outputs)) if model.factory else None
    if not isinstance(module, nn.Module):
        raise UsageError(f"model {model.name!r} ({model.origin}) returned "
                         f"{type(module).__name__}, not a torch.nn.Module")
    outputs: list[int] = []
    macs = 0

    def hook(mod: nn.Module, _inputs: object, out: object) -> None:
        nonlocal macs
        if isinstance(out, torch.Tensor):
            outputs.append(out.numel())
            weight = getattr(mod, "weight", None)
            if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d) and weight is not None:
                macs += out.numel() * (weight.numel() // weight.shape[0])

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        module(torch.zeros((1, *input_shape), device="meta"))
    except Exception:  # a forward the meta device cannot run: size by parameters alone
        outputs, macs = [], 0
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in module.parameters())
    return ModuleSize(params, sum(outputs) or params, macs or params,
                      max(outputs, default=n_outputs))

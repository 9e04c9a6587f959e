"""`RunSpec`: one training run, fully described by plain values and validated at construction.

A RunSpec is frozen and hashable, so runs can be grouped, cached and compared by value. Names
(task, model, loss, optimizer, init, activation) are checked against the registry; every value
is checked against its field's type (a bool is not an integer, a float is not an integer; an
integer is fine for a float field) and for the values that make no sense (lr <= 0, batch size 0,
hidden size 0, a seed outside 0..2**32-1, a non-finite target). Checks that need the loaded data
(batch size above the training set) live in `bench.engines.setup.plan_run`.

What a RunSpec records is what trains: `hidden`, `activation` and `batch_norm` default to None
and are resolved at construction, to the generic MLP's defaults for `mlp` and to the model's own
layers for a fixed-architecture model (`relu_mlp_5`, `linear`, ...). A value given explicitly
that contradicts a fixed model is a UsageError; `from_dict` reading a stored record drops such
values instead, because older versions stored the MLP defaults for every model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.catalog import registry
from bench.errors import UsageError

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda", "auto")
# The engine names a RunSpec accepts; bench.engines.registry maps each to its engine (and
# refuses to load if the two differ): the spec validates at construction and sits below engines.
ENGINES = ("reference", "batched", "notebook", "auto")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("default", "xavier_uniform", "normal")
ARCH_FIELDS = ("hidden", "activation", "batch_norm")  # resolved from the model when None
MLP_DEFAULTS: dict[str, Any] = {"hidden": (20, 20, 20), "activation": "relu", "batch_norm": False}
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers refuse larger seeds
# Largest lr (init scale, eps, decay, penalty) per dtype: 1e-8 of the dtype's largest finite
# value. Above it the optimizer cannot even convert its step (Adam divides lr by 1 - beta1) to
# the parameters' dtype: a traceback rather than a run reported as diverged.
DTYPE_MAX = {"float32": 3.4028234663852886e38 * 1e-8, "float64": 1.7976931348623157e308 * 1e-8}
_BOUNDED = ("lr", "init_scale", "eps", "weight_decay", "l1")


def _check_choice(field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {field_name} {value!r}; choose one of: {', '.join(choices)}")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run (together with its seed)."""

    task: str = "moons"
    model: str = "mlp"
    hidden: tuple[int, ...] | None = None  # None: (20, 20, 20) for mlp, else the model's own
    activation: str | None = None  # None: "relu" for mlp, else the model's own
    batch_norm: bool | None = None  # None: False for mlp, else the model's own
    init: str = "default"
    init_scale: float = 1.0
    loss: str = "mse"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    l1: float = 0.0
    batch_size: int | None = None  # None: full batch (gradient descent)
    epochs: int = 10
    shuffle: bool = True
    dtype: str = "float32"
    seed: int = 0
    data_seed: int = 0
    n_samples: int | None = None  # synthetic tasks only; None: the task's default size
    device: str = "cpu"
    engine: str = "auto"
    target: float | None = None  # validation-metric target for time-to-target
    # A data-file task's sha256 (filled from the file; None for named tasks): every stored run
    # says which contents of the file it trained on.
    task_sha256: str | None = None

    def __post_init__(self) -> None:
        for name, matches in _checkers().items():
            if not matches(getattr(self, name)):
                raise UsageError(f"{name} {type_problem(name, getattr(self, name))}")
        self._resolve_task(registry.get_task(self.task))
        self._resolve_architecture(registry.get_model(self.model))
        registry.get_loss(self.loss)
        registry.get_optimizer(self.optimizer)
        if self.activation is not None:  # None: a model given as code has no such setting
            _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("init", self.init, INITS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("engine", self.engine, ENGINES)
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.hidden is not None and any(h <= 0 for h in self.hidden):
            raise UsageError(f"hidden sizes must be positive integers, got {self.hidden}; "
                             "use e.g. --hidden 20,20")
        _positive("lr", self.lr, "--lr 0.1")
        _positive("epochs", self.epochs, "--epochs 10")
        _positive("init_scale", self.init_scale, "--init-scale 1.0")
        _positive("eps", self.eps, "--eps 1e-8")
        if self.batch_size is not None and self.batch_size <= 0:
            raise UsageError(f"batch size must be positive, got {self.batch_size}; "
                             "use --batch-size N or 'full' for full-batch gradient descent")
        if self.n_samples is not None and self.n_samples < 10:
            raise UsageError(f"n_samples must be at least 10, got {self.n_samples}")
        for name in ("momentum", "weight_decay", "l1"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{name} must be >= 0, got {value}")
        for name in _BOUNDED:
            if getattr(self, name) > DTYPE_MAX[self.dtype]:
                raise UsageError(f"{name} {getattr(self, name):g} is too large for {self.dtype} "
                                 f"arithmetic (at most {DTYPE_MAX[self.dtype]:.2g}); use a "
                                 f"smaller {name}")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_SEED:
                raise UsageError(f"{name} must be an integer from 0 to {MAX_SEED}, got {value}")
        if self.target is not None and not math.isfinite(self.target):
            raise UsageError(f"target must be a finite number, got {self.target}; "
                             "use e.g. --target 0.95")
        if self.momentum >= 1:
            raise UsageError(f"momentum must be below 1, got {self.momentum}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UsageError(f"betas must be two numbers in [0, 1), got {self.betas}; "
                             "use e.g. --betas 0.9,0.999")
        self._check_optimizer_settings()
        if self.nesterov and self.momentum == 0:
            raise UsageError("nesterov needs --optimizer sgd and --momentum above 0")
        if self.loss in ("bce", "ce") and registry.get_task(self.task).kind == "regression":
            raise UsageError(f"loss {self.loss!r} needs a classification task; {self.task!r} is a "
                             "regression task: use --loss mse")

    def ignored_settings(self) -> list[str]:
        """Optimizer hyperparameters set away from their default that this optimizer ignores
        (momentum for Adam, betas for SGD, ...)."""
        used = registry.get_optimizer(self.optimizer).settings
        return [name for name, default in _optional_settings().items()
                if name not in used and getattr(self, name) != default]

    def _check_optimizer_settings(self) -> None:
        """A setting the optimizer ignores is an error, so no record shows an ignored value."""
        ignored = self.ignored_settings()
        if ignored:
            used = registry.get_optimizer(self.optimizer).settings
            shown = ", ".join(f"{name} {_plain(getattr(self, name))}" for name in ignored)
            readers = [n for n, o in registry.optimizers().items() if ignored[0] in o.settings]
            where = ", ".join(f'"{n}"' for n in readers)
            raise UsageError(f"{shown} has no effect with optimizer {self.optimizer!r} (it reads "
                             f"{', '.join(used)}); drop {' and '.join(ignored)}, or in a study "
                             f"search it only where it applies (when = {{ optimizer = [{where}] }})")

    def _resolve_task(self, task: Any) -> None:
        """A data file task: its reference made absolute (`task.name`) and its hash recorded."""
        if task.name != self.task:
            object.__setattr__(self, "task", task.name)
        shape = task.input_shape
        if len(shape) > 1 and registry.get_model(self.model).factory is None:
            raise UsageError(f"model {self.model!r} takes flat inputs, but task "
                             f"{task.display_name!r} has examples shaped "
                             f"{'x'.join(map(str, shape))}; use a model given as code (a "
                             "plugin's, or lenet5 for 28x28 and 8x8 images), or give x as "
                             "[N, features]")
        if task.sha256 is None and self.task_sha256 is not None:
            raise UsageError(f"task_sha256 applies to data file tasks only; {self.task!r} is "
                             "not one: drop task_sha256")
        if self.task_sha256 is None:
            object.__setattr__(self, "task_sha256", task.sha256)

    def _resolve_architecture(self, model: Any) -> None:
        """Fill hidden/activation/batch_norm: MLP defaults, or the fixed model's own layers.

        A model given as code (`ModelDef.factory`) has none of them: they stay None, a value
        given is a UsageError, and so is an `init` scheme other than the module's own."""
        if model.factory is not None:
            given = [name for name in ARCH_FIELDS if getattr(self, name) is not None]
            if given:
                raise UsageError(f"{' and '.join(given)} applies to layer-list models only: "
                                 f"model {model.name!r} is defined in code ({model.origin}); "
                                 f"drop {' and '.join(given)}")
            if self.init != "default":
                raise UsageError(f"init {self.init!r} applies to layer-list models only: model "
                                 f"{model.name!r} initialises itself (init_scale still "
                                 "multiplies its parameters); use init default")
            return
        if model.configurable:
            for name, default in MLP_DEFAULTS.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, default)
            return
        own = {"hidden": tuple(model.hidden), "activation": model.activation,
               "batch_norm": model.batch_norm}
        given = {name: getattr(self, name) for name in ARCH_FIELDS
                 if getattr(self, name) is not None}
        wrong = [name for name, value in given.items()
                 if (tuple(value) if name == "hidden" else value) != own[name]]
        if wrong:
            shown = ", ".join(f"{name} {_plain(given[name])}" for name in wrong)
            raise UsageError(f"{shown} applies to --model mlp only: model {model.name!r} has a "
                             f"fixed architecture ({describe_architecture(**own)}); drop "
                             f"{' and '.join(wrong)}, or choose model mlp")
        for name, value in own.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with some fields changed (validated again).

        Changing the model re-resolves hidden/activation/batch_norm for the new model unless
        they are among the changes, so `replace(model="relu_mlp_5")` of an MLP spec is valid.
        """
        if "model" in changes and changes["model"] != self.model:
            for name in ARCH_FIELDS:
                changes.setdefault(name, None)
        if "task" in changes and changes["task"] != self.task:
            changes.setdefault("task_sha256", None)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False) -> RunSpec:
        """Inverse of `to_dict`; unknown keys are a usage error naming them.

        By default this reads stored records: for a fixed-architecture model their
        hidden/activation/batch_norm are dropped and re-resolved from the model, because records
        written before these were normalised hold the generic MLP's defaults there (what trained
        was always the model's own layers). `strict=True` is for values a user gave: a
        contradicting value is then a UsageError, as in the constructor.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"unknown RunSpec field(s): {', '.join(unknown)}; "
                             f"valid fields: {', '.join(sorted(names))}")
        values = dict(data)
        for key in ("hidden", "betas"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        model = values.get("model", "mlp")
        if not strict and isinstance(model, str) and model in registry.models() and not (
                registry.get_model(model).configurable):
            for key in ARCH_FIELDS:
                values.pop(key, None)
        optimizer = values.get("optimizer", "sgd")
        if not strict and isinstance(optimizer, str) and optimizer in registry.optimizers():
            # older records hold settings the optimizer ignored: read them as they trained
            used = registry.get_optimizer(optimizer).settings
            for key in _optional_settings():
                if key not in used:
                    values.pop(key, None)
        spec = cls(**values)
        if strict and "task_sha256" in data and data["task_sha256"] is not None:
            current = registry.get_task(spec.task).sha256
            if current is not None and current != data["task_sha256"]:
                raise UsageError(f"data file {spec.task} has changed: its sha256 is now "
                                 f"{current[:12]}..., the record says {data['task_sha256'][:12]}"
                                 "...; restore the file, or drop task_sha256 to use it as it is")
        return spec

    @property
    def torch_dtype(self):
        """The torch dtype named by `dtype`."""
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


# Hyperparameters only some optimizers read (`OptimizerDef.settings` says which).
OPTIONAL_SETTINGS = ("momentum", "nesterov", "betas", "eps")


@functools.cache
def _optional_settings() -> dict[str, Any]:
    """Each optional hyperparameter with its default, the value that means "not set"."""
    return {f.name: f.default for f in dataclasses.fields(RunSpec) if f.name in OPTIONAL_SETTINGS}


def describe_architecture(hidden: tuple[int, ...], activation: str, batch_norm: bool) -> str:
    """'hidden 5, relu, no batch norm': a model's layers in words, for messages."""
    sizes = ",".join(map(str, hidden)) if hidden else "none"
    return f"hidden {sizes}, {activation}, {'batch norm' if batch_norm else 'no batch norm'}"


def _plain(value: Any) -> str:
    """A field value as a user writes it: (8, 8) -> 8,8."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


@functools.cache
def field_types() -> dict[str, Any]:
    """RunSpec field name -> its resolved type annotation, in field order."""
    hints = typing.get_type_hints(RunSpec)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunSpec)}


def _checker(annotation: Any) -> Callable[[Any], bool]:
    """A predicate: does a value have the type `annotation` asks for? Built once per field
    (bool is not int, float is not int, an int is fine for a float; lists stand for tuples)."""
    if annotation is type(None):
        return lambda value: value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [_checker(a) for a in args]
        return lambda value: any(check(value) for check in options)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _checker(args[0])
            return lambda value: isinstance(value, (tuple, list)) and all(map(item, value))
        items = [_checker(a) for a in args]
        return lambda value: (isinstance(value, (tuple, list)) and len(value) == len(items)
                              and all(check(v) for check, v in zip(items, value, strict=True)))
    if annotation is bool:
        return lambda value: isinstance(value, bool)
    if annotation is int:
        return lambda value: isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return lambda value: isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return lambda value: isinstance(value, str)
    return lambda value: True


@functools.cache
def _checkers() -> dict[str, Callable[[Any], bool]]:
    return {name: _checker(annotation) for name, annotation in field_types().items()}


def _describe_type(annotation: Any) -> str:
    """An annotation in words: 'an integer', 'a list of integers', 'true or false', ..."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return " or ".join(_describe_type(a) for a in args)
    if typing.get_origin(annotation) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe_type(args[0]).split(' ', 1)[1]}s"
        return f"a list of {len(args)} numbers"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(annotation, str(annotation))


def type_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be RunSpec field `name` by its type ('must be an integer, got 3.0'),
    or None when the type is right. One check shared by RunSpec and the study validator, so a
    study file accepts exactly what RunSpec does (no silent int() truncation, no bool as 1)."""
    if _checkers()[name](value):
        return None
    annotation = field_types()[name]
    if value is None:
        return "must be given (it has no 'none' value)"
    return f"must be {_describe_type(annotation)}, got {value!r}"


def _positive(name: str, value: float, example: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value}; use e.g. {example}")


def resolve_device(device: str) -> str:
    """Map 'auto' to 'cuda' when available else 'cpu'; refuse 'cuda' without CUDA."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but CUDA is not available here; "
                         "use --device cpu or --device auto")
    _check_choice("device", device, DEVICES)
    return device

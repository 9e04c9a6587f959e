"""`StudySpec`: a study file (`studies/*.toml`) parsed and validated before anything runs.

A study names a task and model, fixed RunSpec settings, a search space over RunSpec fields,
the objective(s), the number of trials, seeds per trial, the sampler, the pruner and the device.
Every mistake in the file is one `UsageError` line that names the file and the key, raised by
`load_study_file` before any storage is touched. Values are checked against the RunSpec field's
own type (`bench.spec.type_problem`): a bool is not an integer and a float is not an integer
(`epochs = 3.0`, `hidden = [8.5]` are errors, never truncated); an integer is fine for a float.
The file must be UTF-8 (a leading byte-order mark is accepted and ignored).

Before anything runs, the study's worst case over its space (largest hidden sizes, n_samples,
epochs, batch, with `group` x `seeds` members trained together and every run's record kept) is
sized by `bench.engines.budget`: what cannot fit in this machine's memory is refused, and so is work
above `bench.engines.budget`'s bounds (hours of training) unless `allow_long = true` says it is meant.

File format (every key but `task` is optional)::

    description = "Does Adam beat SGD on moons?"
    name = "moons_adam"         # optional (default: the file name's stem), 1 to 512 characters
    task = "moons"
    model = "mlp"
    trials = 24                 # finished trials wanted (COMPLETE + PRUNED + diverged)
    seeds = 3                   # each trial trains seeds 0..seeds-1; objective = mean over seeds
    device = "cpu"              # cpu, cuda or auto; or search `device` in [space]
    group = 64                  # trials asked from Optuna at once and trained together
    objective = "val_accuracy"  # or a list, e.g. ["val_accuracy", "train_seconds"]
    direction = "maximize"      # optional (derived from the metric); a list for several
    direction_override = false  # true: allow a direction against the metric's own (minimize
                                #   val_accuracy); otherwise that is an error
    allow_long = false          # true: allow work above bench.engines.budget's bounds (hours)
    sampler = { name = "tpe", seed = 0 }      # tpe, random, grid, cmaes, qmc (or just "tpe")
    pruner = { name = "median", warmup_epochs = 2, startup_trials = 5 }  # none, median, hyperband

    [fixed]                     # any RunSpec field
    hidden = [20, 20]
    epochs = 20

    [space]                     # RunSpec fields; int/float type follows the field
    optimizer = ["sgd", "adam"]                       # a list: categorical
    lr = { low = 1e-3, high = 1.0, log = true }       # a range (optional `step`)
    hidden = [[20], [20, 20]]                         # stored as the strings "20" and "20,20"
    batch_size = [32, 100, "full"]                    # "full": full-batch gradient descent
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError
from bench.spec import ARCH_FIELDS, DEVICES, MAX_SEED, RunSpec, field_types, type_problem

if TYPE_CHECKING:
    from bench.engines.budget import Estimate

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
TOP_KEYS = ("description", "name", "task", "model", "trials", "seeds", "device", "group",
            "objective", "direction", "direction_override", "allow_long", "sampler", "pruner",
            "fixed", "space")
SAMPLER_KEYS = ("name", "seed", "startup_trials")
PRUNER_KEYS = ("name", "warmup_epochs", "startup_trials", "reduction_factor")
RANGE_KEYS = ("low", "high", "log", "step")
# Fields a study sets elsewhere: task/model at the top level, seeds by `seeds`, engine by the sweep.
NOT_SETTABLE = ("task", "model", "seed", "engine")
TUPLE_FIELDS = ("hidden", "betas")
TIME_OBJECTIVES = {"train_seconds": "minimize"}
MAX_CHECKED_COMBINATIONS = 512
MAX_NAME_LENGTH = 512  # Optuna's limit for a study name in an RDB storage
MAX_GRID_POINTS = 1_000_000  # Optuna's grid sampler lists every point in memory


@dataclass(frozen=True)
class Param:
    """One searched RunSpec field: a float/int range or a list of categorical choices."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """The Optuna distribution for this parameter."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid_count(self) -> int | None:
        """How many values `grid_values` lists, without listing them (None: continuous)."""
        if self.kind == "categorical":
            return len(self.choices)
        step = self.step or (1 if self.kind == "int" else None)
        if step is None:
            return None
        return math.floor((self.high - self.low) / step + 1e-9) + 1

    def grid_values(self) -> list[Any] | None:
        """Every value a grid sampler visits, or None when the range is continuous."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self.low + i * self.step for i in range(count)]

    def probe_values(self) -> list[Any]:
        """Values that exercise the range for up-front validation (ends, or every choice)."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored in the study's user attributes)."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


def param_to_field(name: str, value: Any) -> Any:
    """A trial's parameter value as the RunSpec field value ("20,20" -> (20, 20))."""
    if name in TUPLE_FIELDS and isinstance(value, str):
        return tuple((int if name == "hidden" else float)(v) for v in value.split(",") if v)
    return value


@dataclass(frozen=True)
class StudySpec:
    """A parsed study file: what to search, how, and how many times."""

    name: str
    path: str
    task: str
    model: str = "mlp"
    description: str = ""
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    space: tuple[Param, ...] = ()
    objectives: tuple[str, ...] = ("val_accuracy",)
    directions: tuple[str, ...] = ("maximize",)
    trials: int = 20
    seeds: int = 3
    device: str = "cpu"
    group: int = 64
    sampler: str = "tpe"
    sampler_seed: int = 0
    sampler_startup_trials: int | None = None
    pruner: str = "none"
    pruner_warmup_epochs: int = 0
    pruner_startup_trials: int = 5
    pruner_reduction_factor: int = 3
    allow_long: bool = False  # work above bench.engines.budget's bounds is meant (not stored: no setting)

    def __hash__(self) -> int:
        return hash((self.name, self.path))

    @property
    def objective(self) -> str:
        """The primary objective metric (the first one)."""
        return self.objectives[0]

    def with_overrides(self, *, trials: int | None = None, seeds: int | None = None,
                       no_limits: bool = False) -> StudySpec:
        """A copy with the command line's --trials / --seeds applied (validated, budget checked
        again); `no_limits` (a --no-limits flag) allows work above bench.engines.budget's bounds."""
        spec = dataclasses.replace(self, allow_long=True) if no_limits else self
        if trials is not None:
            if trials < 1:
                raise UsageError(f"--trials must be at least 1, got {trials}")
            spec = dataclasses.replace(spec, trials=trials)
        if seeds is not None:
            if seeds < 1:
                raise UsageError(f"--seeds must be at least 1, got {seeds}")
            spec = dataclasses.replace(spec, seeds=seeds)
        check_grid_size(spec)
        check_budget(spec)
        return spec

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the search space, by RunSpec field name."""
        return {p.name: p.distribution() for p in self.space}

    def run_spec(self, params: dict[str, Any], seed: int) -> RunSpec:
        """The RunSpec for one trial's parameters and one seed (device not yet resolved)."""
        values = {k: param_to_field(k, v) for k, v in self.fixed.items()}
        values.update({k: param_to_field(k, v) for k, v in params.items()})
        values.setdefault("device", self.device)
        return RunSpec.from_dict({"task": self.task, "model": self.model, **values,
                                  "seed": seed}, strict=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the parsed study (stored as the study's "nnbench_study")."""
        return {
            "name": self.name, "description": self.description, "task": self.task,
            "model": self.model, "fixed": {k: list(v) if isinstance(v, tuple) else v
                                           for k, v in self.fixed.items()},
            "space": {p.name: p.to_dict() for p in self.space},
            "objectives": list(self.objectives), "directions": list(self.directions),
            "trials": self.trials, "seeds": self.seeds, "device": self.device,
            "group": self.group,
            "sampler": {"name": self.sampler, "seed": self.sampler_seed,
                        "startup_trials": self.sampler_startup_trials},
            "pruner": {"name": self.pruner, "warmup_epochs": self.pruner_warmup_epochs,
                       "startup_trials": self.pruner_startup_trials,
                       "reduction_factor": self.pruner_reduction_factor},
        }


# ---------------------------------------------------------------------------------------------
# Parsing


class _Reader:
    """Pulls typed values out of the TOML dict; every error names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, message: str) -> UsageError:
        return UsageError(f"{self.path}: {key}: {message}")

    def unknown(self, table: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(f"{prefix}{key}", f"unknown key; valid keys: {', '.join(allowed)}")

    def integer(self, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"unknown value {value!r}; choose one of: {', '.join(choices)}")
        return value

    def named_table(self, key: str, value: Any, keys: tuple[str, ...],
                    names: tuple[str, ...]) -> dict[str, Any]:
        """`"tpe"` or `{ name = "tpe", ... }` as a dict with a checked "name"."""
        table = {"name": value} if isinstance(value, str) else value
        if not isinstance(table, dict):
            raise self.error(key, f"must be a name or a table, got {value!r}")
        self.unknown(table, keys, f"{key}.")
        table = dict(table)
        table["name"] = self.string(f"{key}.name", table.get("name", names[0]), names)
        return table


def _settable(kinds: dict[str, Any]) -> str:
    return ", ".join(k for k in kinds if k not in NOT_SETTABLE)


def _numeric_kind(annotation: Any) -> str | None:
    """'int' or 'float' for a numeric RunSpec field annotation, else None."""
    args = set(typing.get_args(annotation)) or {annotation}
    if int in args and annotation is not bool:
        return "int"
    if float in args:
        return "float"
    return None


def _field_value(reader: _Reader, key: str, name: str, value: Any) -> Any:
    """A [fixed] value or [space] choice checked against the RunSpec field's type ("full" batch
    is None, lists are tuples); the error names the key."""
    if name == "batch_size" and value == "full":
        return None
    if isinstance(value, list) and name not in TUPLE_FIELDS:
        raise reader.error(key, f"a list is only valid for {', '.join(TUPLE_FIELDS)}, got "
                                f"{value!r}")
    problem = type_problem(name, value)
    if problem:
        if name == "batch_size":
            problem = f"must be an integer or \"full\", got {value!r}"
        raise reader.error(key, problem)
    return tuple(value) if isinstance(value, list) else value


def _choice_value(reader: _Reader, key: str, name: str, value: Any) -> Any:
    """A categorical choice as stored by Optuna (lists become "a,b"; "full" batch is None)."""
    value = _field_value(reader, key, name, value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def _parse_param(reader: _Reader, name: str, raw: Any, kinds: dict[str, Any]) -> Param:
    key = f"space.{name}"
    if name not in kinds:
        raise reader.error(key, f"not a RunSpec field; valid fields: {_settable(kinds)}")
    if name in NOT_SETTABLE:
        raise reader.error(key, f"{name!r} cannot be searched; set it at the top of the study"
                                if name in ("task", "model") else
                                f"{name!r} cannot be searched (seeds come from `seeds`)")
    if isinstance(raw, dict) and "choices" in raw:
        reader.unknown(raw, ("choices",), f"{key}.")
        raw = raw["choices"]
    if isinstance(raw, list):
        if not raw:
            raise reader.error(key, "empty list of choices; give at least one value")
        choices = tuple(_choice_value(reader, key, name, v) for v in raw)
        if len(set(map(repr, choices))) != len(choices):
            raise reader.error(key, f"repeated choices in {raw!r}; list each value once")
        return Param(name, "categorical", choices=choices)
    if not isinstance(raw, dict):
        raise reader.error(key, "must be a list of choices or a table { low = .., high = .. }")
    reader.unknown(raw, RANGE_KEYS, f"{key}.")
    kind = _numeric_kind(kinds[name])
    if kind is None:
        raise reader.error(key, f"{name!r} is not numeric; give a list of choices instead")
    for bound in ("low", "high"):
        if bound not in raw:
            raise reader.error(f"{key}.{bound}", "missing; a range needs low and high")
        value = raw[bound]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise reader.error(f"{key}.{bound}", f"must be a number, got {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise reader.error(f"{key}.{bound}", f"{name} is an integer field, got {value!r}")
    low, high = raw["low"], raw["high"]
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise reader.error(f"{key}.log", f"must be true or false, got {log!r}")
    if low > high:
        raise reader.error(key, f"low {low} is above high {high}; swap them")
    if log and low <= 0:
        raise reader.error(f"{key}.low", f"a log range needs low > 0, got {low}")
    step = raw.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(
                step) or step <= 0:
            raise reader.error(f"{key}.step", f"must be a positive number, got {step!r}")
        if kind == "int" and not isinstance(step, int):
            raise reader.error(f"{key}.step", f"{name} is an integer field, got {step!r}")
        if log:
            raise reader.error(f"{key}.step", "cannot be combined with log = true")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _parse_objectives(reader: _Reader, data: dict[str, Any],
                      kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from bench.results import metric_direction, metric_names

    raw = data.get("objective")
    if raw is None:
        raw = ["val_mse" if kind == "regression" else "val_accuracy"]
    objectives = [raw] if isinstance(raw, str) else raw
    if not isinstance(objectives, list) or not objectives or not all(
            isinstance(o, str) for o in objectives):
        raise reader.error("objective", f"must be a metric name or a list of them, got {raw!r}")
    valid = [f"val_{m}" for m in metric_names(kind)] + ["val_loss", *TIME_OBJECTIVES]
    for name in objectives:
        if name not in valid:
            raise reader.error("objective", f"unknown metric {name!r} for a {kind} task; "
                                            f"choose from: {', '.join(valid)}")
    if len(set(objectives)) != len(objectives):
        raise reader.error("objective", "lists a metric twice")
    override = reader.boolean("direction_override", data.get("direction_override", False))
    raw_dir = data.get("direction")
    if raw_dir is None:
        directions = [TIME_OBJECTIVES.get(o) or metric_direction(o) for o in objectives]
    else:
        directions = [raw_dir] if isinstance(raw_dir, str) else raw_dir
        if not isinstance(directions, list) or len(directions) != len(objectives):
            raise reader.error("direction", f"give one direction per objective "
                                            f"({len(objectives)}), got {raw_dir!r}")
        for d in directions:
            reader.string("direction", d, DIRECTIONS)
        for objective, direction in zip(objectives, directions, strict=True):
            natural = TIME_OBJECTIVES.get(objective) or metric_direction(objective)
            if direction != natural and not override:
                better = "higher" if natural == "maximize" else "lower"
                raise reader.error("direction", f"{direction!r} contradicts {objective}, which "
                                                f"is better {better} ({natural!r}): drop "
                                                "`direction` (it follows the metric), or set "
                                                "direction_override = true if it is meant")
    return tuple(objectives), tuple(directions)


def parse_study(data: dict[str, Any], path: str | Path, *, no_limits: bool = False) -> StudySpec:
    """Validate a study file's TOML dict into a StudySpec; errors name the file and key.
    `no_limits` (a --no-limits flag) allows work above bench.engines.budget's bounds, as
    `allow_long = true` does; what cannot fit in memory is refused either way."""
    from bench.catalog import registry

    path = Path(path)
    reader = _Reader(path)
    reader.unknown(data, TOP_KEYS, "")
    if "task" not in data:
        raise reader.error("task", "missing; name the task, e.g. task = \"moons\"")
    task = reader.string("task", data["task"])
    model = reader.string("model", data.get("model", "mlp"))
    for key, lookup, value in (("task", registry.get_task, task),
                               ("model", registry.get_model, model)):
        try:
            lookup(value)
        except UsageError as exc:
            raise reader.error(key, str(exc)) from None
    task_def = registry.get_task(task)
    name = reader.string("name", data.get("name", path.stem))
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise reader.error("name", f"must be 1 to {MAX_NAME_LENGTH} characters (Optuna's limit "
                                   f"for a study name), got {len(name)}; choose a shorter name")
    description = reader.string("description", data.get("description", ""))
    trials = reader.integer("trials", data.get("trials", 20), 1)
    seeds = reader.integer("seeds", data.get("seeds", 3), 1)
    group = reader.integer("group", data.get("group", 64), 1)
    device = reader.string("device", data.get("device", "cpu"), DEVICES)
    objectives, directions = _parse_objectives(reader, data, task_def.kind)

    sampler = reader.named_table("sampler", data.get("sampler", "tpe"), SAMPLER_KEYS, SAMPLERS)
    sampler_seed = reader.integer("sampler.seed", sampler.get("seed", 0), 0, MAX_SEED)
    startup = sampler.get("startup_trials")
    startup = None if startup is None else reader.integer("sampler.startup_trials", startup, 0)
    pruner = reader.named_table("pruner", data.get("pruner", "none"), PRUNER_KEYS, PRUNERS)
    if pruner["name"] != "none":
        if len(objectives) > 1:
            raise reader.error("pruner", "Optuna cannot prune a multi-objective study; "
                                         "use pruner = \"none\"")
        if objectives[0] in TIME_OBJECTIVES:
            raise reader.error("pruner", f"objective {objectives[0]!r} has no per-epoch curve "
                                         "to prune on; use pruner = \"none\"")

    kinds = field_types()
    fixed_raw = data.get("fixed", {})
    if not isinstance(fixed_raw, dict):
        raise reader.error("fixed", "must be a table of RunSpec fields")
    fixed: dict[str, Any] = {}
    for key, value in fixed_raw.items():
        if key not in kinds:
            raise reader.error(f"fixed.{key}", f"not a RunSpec field; valid fields: "
                                               f"{_settable(kinds)}")
        if key in NOT_SETTABLE:
            raise reader.error(f"fixed.{key}", "set task and model at the top of the study; "
                                               "seeds come from `seeds`, the engine from the sweep")
        fixed[key] = _field_value(reader, f"fixed.{key}", key, value)
    space_raw = data.get("space", {})
    if not isinstance(space_raw, dict):
        raise reader.error("space", "must be a table of RunSpec fields")
    space = tuple(_parse_param(reader, n, raw, kinds) for n, raw in space_raw.items())
    for p in space:
        if p.name in fixed:
            raise reader.error(f"space.{p.name}", "is also set in [fixed]; keep one of them")

    spec = StudySpec(
        name=name, path=str(path), task=task, model=model, description=description,
        fixed=fixed, space=space, objectives=objectives, directions=directions, trials=trials,
        seeds=seeds, device=device, group=group, sampler=sampler["name"],
        sampler_seed=sampler_seed, sampler_startup_trials=startup, pruner=pruner["name"],
        pruner_warmup_epochs=reader.integer("pruner.warmup_epochs",
                                            pruner.get("warmup_epochs", 0), 0),
        pruner_startup_trials=reader.integer("pruner.startup_trials",
                                             pruner.get("startup_trials", 5), 0),
        pruner_reduction_factor=reader.integer("pruner.reduction_factor",
                                               pruner.get("reduction_factor", 3), 2),
        allow_long=reader.boolean("allow_long", data.get("allow_long", False)) or no_limits,
    )
    _check_sampler(reader, spec)
    check_grid_size(spec)
    _check_architecture(reader, spec)
    _check_run_specs(reader, spec)
    check_budget(spec)
    return spec


def _check_sampler(reader: _Reader, spec: StudySpec) -> None:
    if spec.sampler == "grid":
        for p in spec.space:
            if p.grid_count() is None:
                raise reader.error(f"space.{p.name}", "the grid sampler needs a list of choices "
                                                      "or a range with `step`")
        if not spec.space:
            raise reader.error("sampler", "the grid sampler needs a [space] to enumerate")
        if grid_size(spec) > MAX_GRID_POINTS:
            raise reader.error("space", f"the grid has {grid_size(spec):,} points, above "
                                        f"{MAX_GRID_POINTS:,} (Optuna's grid sampler lists "
                                        "every one); use a coarser step or sampler tpe")
    if spec.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise reader.error("sampler", "'cmaes' needs the cmaes package "
                                          "(pip install cmaes); or use tpe") from None
        if len(spec.directions) > 1:
            raise reader.error("sampler", "'cmaes' is single-objective; use tpe for several "
                                          "objectives")


def grid_size(spec: StudySpec) -> int:
    """The number of points of a grid sampler's grid."""
    return math.prod(p.grid_count() or 0 for p in spec.space)


def check_grid_size(spec: StudySpec) -> None:
    """Refuse a grid study that wants more trials than its grid has points."""
    if spec.sampler == "grid" and spec.trials > grid_size(spec):
        raise UsageError(f"{spec.path}: trials: {spec.trials} is above the grid's "
                         f"{grid_size(spec)} points; set trials = {grid_size(spec)} or fewer")


def _check_architecture(reader: _Reader, spec: StudySpec) -> None:
    """hidden/activation/batch_norm in [fixed] or [space] that a fixed model lacks: the key."""
    from bench.catalog import registry

    if registry.get_model(spec.model).configurable:
        return
    given = [(f"fixed.{name}", name, value) for name, value in spec.fixed.items()
             if name in ARCH_FIELDS]
    given += [(f"space.{p.name}", p.name, param_to_field(p.name, choice)) for p in spec.space
              if p.name in ARCH_FIELDS for choice in p.choices]
    for key, name, value in given:
        try:
            RunSpec(task=spec.task, model=spec.model, **{name: value})
        except UsageError as exc:
            raise reader.error(key, str(exc)) from None


def _probe_params(spec: StudySpec) -> Iterator[dict[str, Any]]:
    """Every choice combination, ranges at their ends (at most MAX_CHECKED_COMBINATIONS)."""
    probes = [p.probe_values() for p in spec.space]
    for combo in itertools.islice(itertools.product(*probes), MAX_CHECKED_COMBINATIONS):
        yield {p.name: v for p, v in zip(spec.space, combo, strict=True)}


def _check_run_specs(reader: _Reader, spec: StudySpec) -> None:
    """Build a RunSpec for every choice combination (ranges at their ends): bad names fail here."""
    for params in _probe_params(spec):
        try:
            spec.run_spec(params, seed=0)
        except UsageError as exc:
            where = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "[fixed]"
            raise reader.error("fixed" if not params else "space",
                               f"{exc} (with {where})") from None


def study_estimate(spec: StudySpec) -> Estimate:
    """The study's worst case over its space (ranges at their ends, every choice): all
    trials x seeds runs trained, `group` x `seeds` members at once, every record kept."""
    from bench.engines.budget import estimate

    runs = spec.trials * spec.seeds
    together = min(spec.group, spec.trials) * spec.seeds
    worst: Estimate | None = None
    for params in _probe_params(spec):
        est = estimate(spec.run_spec(params, seed=0), runs=runs, together=together,
                       stored_runs=runs)
        worst = est if worst is None else worst.worst(est)
    assert worst is not None  # _probe_params yields at least the empty combination
    return worst


def check_budget(spec: StudySpec) -> None:
    """Refuse (one-line UsageError) a study that cannot fit in memory, or whose work is above
    bench.engines.budget's bounds unless `allow_long` (study key, or --no-limits via with_overrides)."""
    from bench.engines import budget

    budget.check(study_estimate(spec), what=f"{spec.path}: study {spec.name!r}",
                 allow_long=spec.allow_long,
                 long_hint="allow_long = true in the study (or bench sweep --no-limits)")


def load_study_file(path: str | Path, *, no_limits: bool = False) -> StudySpec:
    """Read and validate one study file (UTF-8; a leading byte-order mark is ignored).
    `no_limits` allows work above bench.engines.budget's bounds (for a --no-limits flag)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"study file {path} not found; give a path to a .toml file or a folder "
                         "of them (e.g. studies/)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the study file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                         f"{exc.start}); save the study file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    return parse_study(data, path, no_limits=no_limits)


def study_paths(args: list[str]) -> list[Path]:
    """Expand study files and folders (their *.toml, sorted) into a list of files."""
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise UsageError(f"no *.toml study files in {p}; give a study file or folder")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise UsageError(f"study file {p} not found; give a path to a .toml file or a "
                             "folder of them (e.g. studies/)")
    return paths

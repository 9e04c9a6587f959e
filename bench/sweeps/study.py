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

The file format (every key, its type and default, conditional spaces, pruners) is documented
once, in docs/STUDIES.md, whose examples the test suite parses and runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.catalog import registry
from bench.catalog.datafile import KINDS, looks_like_path, make_ref, parse_ref
from bench.catalog.plugins import load_plugins, sources_of
from bench.engines import budget
from bench.engines.budget import Estimate, estimate
from bench.errors import UsageError
from bench.results import metric_direction, metric_names
from bench.spec import ARCH_FIELDS, DEVICES, MAX_SEED, RunSpec, field_types
from bench.sweeps.space import (
    NOT_SETTABLE,
    Param,
    Reader,
    field_value,
    param_to_field,
    parse_param,
    settable,
)

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")
DIRECTIONS = ("maximize", "minimize")
TOP_KEYS = ("description", "name", "task", "model", "trials", "seeds", "device", "group",
            "objective", "direction", "direction_override", "allow_long", "sampler", "pruner",
            "fixed", "space", "plugins", "label_column", "task_kind")
SAMPLER_KEYS = ("name", "seed", "startup_trials")
# The pruners each setting is used by (percentile and min_resource have their own checks): a
# setting given for another pruner is an error, so no study file shows a setting with no effect.
PRUNER_KEY_USERS = {"warmup_epochs": ("median", "percentile", "hyperband"),
                    "startup_trials": ("median", "percentile"),
                    "reduction_factor": ("successive_halving", "hyperband")}
PRUNER_KEYS = ("name", "warmup_epochs", "startup_trials", "reduction_factor", "percentile",
               "min_resource")
# Fields a study sets elsewhere: task/model at the top level, seeds by `seeds`, engine by the sweep.
TIME_OBJECTIVES = {"train_seconds": "minimize"}
MAX_CHECKED_COMBINATIONS = 512
CONDITIONAL_SAMPLERS = ("tpe", "random")  # samplers that handle conditional spaces
MAX_NAME_LENGTH = 512  # Optuna's limit for a study name in an RDB storage
MAX_GRID_POINTS = 1_000_000  # Optuna's grid sampler lists every point in memory


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
    pruner_percentile: float = 25.0  # percentile pruner: prune below this percentile
    pruner_min_resource: int | None = None  # successive halving, hyperband: first rung (epochs)
    allow_long: bool = False  # work above bench.engines.budget's bounds is meant (not stored: no setting)
    # The plugins this study uses ({"source", "sha256"}: those it names and those its task or
    # model come from); stored as the study's user attribute "plugins", not in nnbench_study.
    plugins: tuple[dict[str, str], ...] = ()

    def __hash__(self) -> int:
        return hash((self.name, self.path))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling (a `--workers N` process is spawned with the spec) loads the study's
        plugins first, so its task and model exist there too."""
        load_plugins([r["source"] for r in state.get("plugins", ())])
        self.__dict__.update(state)

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

    def _pruner_dict(self) -> dict[str, Any]:
        """The pruner's settings as stored (a key only where it applies, so that studies
        stored before a setting existed still compare equal)."""
        out: dict[str, Any] = {"name": self.pruner, "warmup_epochs": self.pruner_warmup_epochs,
                               "startup_trials": self.pruner_startup_trials,
                               "reduction_factor": self.pruner_reduction_factor}
        if self.pruner == "percentile":
            out["percentile"] = self.pruner_percentile
        if self.pruner_min_resource is not None:
            out["min_resource"] = self.pruner_min_resource
        return out

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial trains: the pruners' maximum resource."""
        searched = [p for p in self.space if p.name == "epochs"]
        if searched:
            p = searched[0]
            return int(max(p.choices) if p.kind == "categorical" else p.high)
        return int(self.fixed.get("epochs", RunSpec.epochs))

    @property
    def conditional(self) -> bool:
        """True when some parameter applies only for some values of another (`when`)."""
        return any(p.when for p in self.space)

    def ask(self, study: Any) -> Any:
        """Ask Optuna for one trial of this space: fixed distributions when every parameter
        always applies; otherwise each parameter in order, only where its condition holds, so
        a trial stores only the parameters that applied."""
        if not self.conditional:
            return study.ask(self.distributions())
        trial = study.ask()
        chosen: dict[str, Any] = {}
        for p in self.space:
            if p.applies(chosen):
                chosen[p.name] = p.suggest(trial)
        return trial

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
            "pruner": self._pruner_dict(),
        }


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_objectives(reader: Reader, data: dict[str, Any],
                      kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
    path = Path(path)
    reader = Reader(path)
    reader.unknown(data, TOP_KEYS, "")
    if "task" not in data:
        raise reader.error("task", "missing; name the task, e.g. task = \"moons\"")
    listed = _load_plugins(reader, data.get("plugins", []), path.parent)
    task = _task_reference(reader, data, path.parent)
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
    unsafe = next((c for c in name if _unsafe_in_a_name(c)), None)
    if unsafe is not None:  # every summary, table and chart title shows it on one line
        raise reader.error("name", f"{name!r} holds a newline, tab or other control character "
                                   f"(U+{ord(unsafe):04X}); use a name on one line")
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
    if startup is not None and sampler["name"] not in ("tpe", "cmaes"):
        raise reader.error("sampler.startup_trials", f"applies to tpe and cmaes only, not "
                                                     f"{sampler['name']!r}; remove it")
    pruner = reader.named_table("pruner", data.get("pruner", "none"), PRUNER_KEYS, PRUNERS)
    for key, users in PRUNER_KEY_USERS.items():
        if key in pruner and pruner["name"] not in users:
            raise reader.error(f"pruner.{key}", f"applies to {' and '.join(users)} only, not "
                                                f"{pruner['name']!r}; remove it")
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
                                               f"{settable(kinds)}")
        if key in NOT_SETTABLE:
            raise reader.error(f"fixed.{key}", "set task and model at the top of the study; "
                                               "seeds come from `seeds`, the engine from the sweep")
        fixed[key] = field_value(reader, f"fixed.{key}", key, value)
    space_raw = data.get("space", {})
    if not isinstance(space_raw, dict):
        raise reader.error("space", "must be a table of RunSpec fields")
    parsed: dict[str, Param] = {}
    for n, raw in space_raw.items():
        parsed[n] = parse_param(reader, n, raw, kinds, parsed)
    space = tuple(parsed.values())
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
        pruner_percentile=_percentile(reader, pruner),
        pruner_min_resource=None if pruner.get("min_resource") is None else reader.integer(
            "pruner.min_resource", pruner["min_resource"], 1),
        allow_long=reader.boolean("allow_long", data.get("allow_long", False)) or no_limits,
        plugins=_plugins_used(listed, task_def.origin, registry.get_model(model).origin),
    )
    _check_sampler(reader, spec)
    _check_pruner(reader, spec)
    check_grid_size(spec)
    _check_architecture(reader, spec)
    _check_run_specs(reader, spec)
    check_budget(spec)
    return spec


def _load_plugins(reader: Reader, raw: Any, base: Path) -> list[dict[str, str]]:
    """Load the study's `plugins` (paths relative to the study file, or module names)."""
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise reader.error("plugins", f"must be a list of .py paths or module names, got {raw!r}")
    try:
        return load_plugins(raw, base=base)
    except UsageError as exc:
        raise reader.error("plugins", str(exc)) from None


def _task_reference(reader: Reader, data: dict[str, Any], base: Path) -> str:
    """`task`: a name, or a data file's path relative to the study file (with `label_column`
    and `task_kind`, which apply to data files only) as its absolute task reference."""
    task = reader.string("task", data["task"])
    label = data.get("label_column")
    kind = data.get("task_kind")
    if label is None and kind is None and not looks_like_path(task):
        return task
    if not looks_like_path(task):
        raise reader.error("label_column" if label is not None else "task_kind",
                           "applies to a data file task (task = \"data.csv\"); drop it")
    label = None if label is None else reader.string("label_column", label)
    kind = None if kind is None else reader.string("task_kind", kind, KINDS)
    try:
        ref = parse_ref(task, base=base)
        return make_ref(ref.path, label or ref.label_column, kind or ref.kind).key()
    except UsageError as exc:
        raise reader.error("task", str(exc)) from None


def _plugins_used(listed: list[dict[str, str]], *origins: str) -> tuple[dict[str, str], ...]:
    """The study's own plugins and those its task or model come from, each once."""
    out = {r["source"]: r for r in [*listed, *sources_of(list(origins))]}
    return tuple(out.values())


def store_plugins(spec: StudySpec, study: Any) -> None:
    """Record the study's plugins on its Optuna study as user attribute "plugins" (a list of
    {"source", "sha256"}), so a report can name what to load; only when there are some."""
    records = [dict(r) for r in spec.plugins]
    if records and study.user_attrs.get("plugins") != records:
        study.set_user_attr("plugins", records)


def _percentile(reader: Reader, pruner: dict[str, Any]) -> float:
    """`pruner.percentile`: a number in (0, 100), only for the percentile pruner."""
    if "percentile" not in pruner:
        return 25.0
    value = pruner["percentile"]
    if pruner["name"] != "percentile":
        raise reader.error("pruner.percentile", f"applies to the percentile pruner only, not "
                                                f"{pruner['name']!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100:
        raise reader.error("pruner.percentile", f"must be a number between 0 and 100 (exclusive), "
                                                f"got {value!r}")
    return float(value)


def _check_pruner(reader: Reader, spec: StudySpec) -> None:
    """Settings that only make sense against the study's epochs."""
    if spec.pruner_min_resource is not None:
        if spec.pruner not in ("successive_halving", "hyperband"):
            raise reader.error("pruner.min_resource", "applies to successive_halving and "
                                                      f"hyperband only, not {spec.pruner!r}")
        if spec.pruner_min_resource > spec.max_epochs:
            raise reader.error("pruner.min_resource", f"{spec.pruner_min_resource} is above "
                                                      f"the study's {spec.max_epochs} epochs")
    if spec.pruner != "none" and spec.pruner_warmup_epochs >= spec.max_epochs:
        raise reader.error("pruner.warmup_epochs", f"{spec.pruner_warmup_epochs} leaves no "
                                                   f"epoch of {spec.max_epochs} to prune at; "
                                                   "use fewer")


def _check_sampler(reader: Reader, spec: StudySpec) -> None:
    conditional = [p.name for p in spec.space if p.when]
    if conditional and spec.sampler not in CONDITIONAL_SAMPLERS:
        raise reader.error(f"space.{conditional[0]}.when",
                           f"the {spec.sampler} sampler cannot search a conditional space; "
                           f"use sampler = \"tpe\" or \"random\"")
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


def _check_architecture(reader: Reader, spec: StudySpec) -> None:
    """hidden/activation/batch_norm in [fixed] or [space] that a fixed model lacks: the key."""
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
    """Every choice combination, ranges at their ends (at most MAX_CHECKED_COMBINATIONS);
    a conditional parameter only where its condition holds."""
    probes = [p.probe_values() for p in spec.space]
    seen = set()
    for combo in itertools.islice(itertools.product(*probes), MAX_CHECKED_COMBINATIONS):
        params: dict[str, Any] = {}
        for p, v in zip(spec.space, combo, strict=True):
            if p.applies(params):
                params[p.name] = v
        key = repr(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            yield params


def _check_run_specs(reader: Reader, spec: StudySpec) -> None:
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
    budget.check(study_estimate(spec), what=f"{spec.path}: study {spec.name!r}",
                 allow_long=spec.allow_long,
                 long_hint="allow_long = true in the study (or bench sweep --no-limits)")


def _unsafe_in_a_name(char: str) -> bool:
    """Whether a study name may not hold `char`: control characters, line and paragraph
    separators, lone surrogates (no file or page can encode them) and invisible format
    characters (bidi overrides reorder the rest of a title; zero-width ones make two names look
    alike), except those emoji need (zero-width joiner and non-joiner, tag characters)."""
    category = unicodedata.category(char)
    if category in ("Cc", "Cs", "Zl", "Zp"):
        return True
    return category == "Cf" and char not in "\u200c\u200d" and not 0xE0020 <= ord(char) <= 0xE007F


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

"""A study file's search space and its typed reading: `Param` (a range or a list of choices
over one RunSpec field), how a trial's value becomes the field's value, and `Reader`, whose every
error names the study file and the key."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.spec import type_problem

RANGE_KEYS = ("low", "high", "log", "step", "when")
CHOICE_KEYS = ("choices", "when")
NOT_SETTABLE = ("task", "model", "seed", "engine")


TUPLE_FIELDS = ("hidden", "betas")


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
    # Conditions, all of which must hold for the parameter to apply: (parent, allowed values).
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def applies(self, params: dict[str, Any]) -> bool:
        """True when every condition holds for the parameters chosen so far."""
        return all(parent in params and params[parent] in values for parent, values in self.when)

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter on an Optuna trial with the public `suggest_*` API."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step,
                                   log=self.log)

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
            out: dict[str, Any] = {"type": "categorical", "choices": list(self.choices)}
        else:
            out = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {parent: list(values) for parent, values in self.when}
        return out


def param_to_field(name: str, value: Any) -> Any:
    """A trial's parameter value as the RunSpec field value ("20,20" -> (20, 20))."""
    if name in TUPLE_FIELDS and isinstance(value, str):
        return tuple((int if name == "hidden" else float)(v) for v in value.split(",") if v)
    return value


class Reader:
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


def settable(kinds: dict[str, Any]) -> str:
    return ", ".join(k for k in kinds if k not in NOT_SETTABLE)


def _numeric_kind(annotation: Any) -> str | None:
    """'int' or 'float' for a numeric RunSpec field annotation, else None."""
    args = set(typing.get_args(annotation)) or {annotation}
    if int in args and annotation is not bool:
        return "int"
    if float in args:
        return "float"
    return None


def field_value(reader: Reader, key: str, name: str, value: Any) -> Any:
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


def _choice_value(reader: Reader, key: str, name: str, value: Any) -> Any:
    """A categorical choice as stored by Optuna (lists become "a,b"; "full" batch is None)."""
    value = field_value(reader, key, name, value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def _parse_when(reader: Reader, key: str, raw: Any, earlier: dict[str, Param]
                ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """`when = { optimizer = "sgd" }` or `{ optimizer = ["adam", "adamw"] }`: the parent must be
    a categorical parameter listed earlier in [space], each value one of its choices."""
    if not isinstance(raw, dict) or not raw:
        raise reader.error(key, "must be a table { parent = value or [values] }, e.g. "
                                "when = { optimizer = \"sgd\" }")
    categorical = [n for n, p in earlier.items() if p.kind == "categorical"]
    out = []
    for parent, values in raw.items():
        if parent not in earlier or earlier[parent].kind != "categorical":
            raise reader.error(f"{key}.{parent}", "unknown parent: it must be a categorical "
                                                  "parameter listed earlier in [space] ("
                                                  f"{', '.join(categorical) or 'none yet'})")
        wanted = values if isinstance(values, list) else [values]
        if not wanted:
            raise reader.error(f"{key}.{parent}", "give at least one value")
        choices = earlier[parent].choices
        stored = []
        for value in wanted:
            try:
                value = _choice_value(reader, f"{key}.{parent}", parent, value)
            except UsageError:
                value = object()  # not a value the parent's type can take
            if value not in choices:
                raise reader.error(f"{key}.{parent}", f"{wanted[len(stored)]!r} is not one of "
                                                      f"{parent}'s choices: "
                                                      f"{', '.join(map(str, choices))}")
            stored.append(value)
        out.append((parent, tuple(stored)))
    return tuple(out)


def parse_param(reader: Reader, name: str, raw: Any, kinds: dict[str, Any],
                earlier: dict[str, Param] | None = None) -> Param:
    """One [space] entry: a list of choices, `{ choices = [...] }` or a range table, each with
    an optional `when` condition on parameters listed before it (`earlier`)."""
    key = f"space.{name}"
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    if isinstance(raw, dict) and "when" in raw:
        raw = dict(raw)
        when = _parse_when(reader, f"{key}.when", raw.pop("when"), earlier or {})
    if name not in kinds:
        raise reader.error(key, f"not a RunSpec field; valid fields: {settable(kinds)}")
    if name in NOT_SETTABLE:
        raise reader.error(key, f"{name!r} cannot be searched; set it at the top of the study"
                                if name in ("task", "model") else
                                f"{name!r} cannot be searched (seeds come from `seeds`)")
    if isinstance(raw, dict) and "choices" in raw:
        reader.unknown(raw, CHOICE_KEYS, f"{key}.")
        raw = raw["choices"]
    if isinstance(raw, list):
        if not raw:
            raise reader.error(key, "empty list of choices; give at least one value")
        choices = tuple(_choice_value(reader, key, name, v) for v in raw)
        if len(set(map(repr, choices))) != len(choices):
            raise reader.error(key, f"repeated choices in {raw!r}; list each value once")
        return Param(name, "categorical", choices=choices, when=when)
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
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
            # Optuna would warn and cut `high` down to the last step (to low itself when the
            # step is wider than the range)
            last = low + math.floor(steps + 1e-9) * step
            raise reader.error(f"{key}.step", f"{step} does not divide high - low = "
                                              f"{high - low:.15g}; set high = {last:.15g} or a step "
                                              "that divides the range")
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)

"""The registry: plain dicts of tasks, models, losses and optimizers, with lookups.

Tasks and models include those plugins registered (`bench.catalog.plugins`); a task may also
be a data file's path (`bench.catalog.datafile`).

A lookup miss raises a `UsageError` that lists the valid names. Heavy modules are imported
lazily so that `bench list` and the timing command stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.catalog.names import lookup

if TYPE_CHECKING:
    from bench.catalog.losses import LossDef
    from bench.catalog.models import ModelDef
    from bench.catalog.optimizers import OptimizerDef
    from bench.catalog.tasks import Task

def _plugins_loaded() -> None:
    """Installed packages' `nnbench.plugins` entry points, loaded on the first lookup."""
    from bench.catalog.plugins import load_entry_points

    load_entry_points()


def tasks() -> dict[str, Task]:
    """All named tasks: the built-ins, then the plugins' (data files are looked up by path)."""
    from bench.catalog.tasks import PLUGIN_TASKS, TASKS, plugin_task

    _plugins_loaded()
    return {**TASKS, **{name: plugin_task(name) for name in list(PLUGIN_TASKS)}}


def models() -> dict[str, ModelDef]:
    """All models by name: the built-ins, then the plugins'."""
    from bench.catalog.models import MODELS
    from bench.catalog.plugins import PLUGIN_MODELS

    _plugins_loaded()
    return {**MODELS, **PLUGIN_MODELS}


def losses() -> dict[str, LossDef]:
    """All losses by name."""
    from bench.catalog.losses import LOSSES

    return LOSSES


def optimizers() -> dict[str, OptimizerDef]:
    """All optimizers by name."""
    from bench.catalog.optimizers import OPTIMIZERS

    return OPTIMIZERS


def get_task(name: str) -> Task:
    """The task called `name` (built-in or a plugin's) or the data file `name` is a path to
    (.csv, .npz; cached per file content), or a UsageError listing the tasks."""
    from bench.catalog.tasks import resolve_task

    _plugins_loaded()
    return resolve_task(name)


def get_model(name: str) -> ModelDef:
    """The model called `name`, or a UsageError listing the models."""
    return lookup("model", models(), name)


def task_display_name(name: str) -> str:
    """The short name of a task for tables: a data file's stem, else the name (needs no file)."""
    from bench.catalog.datafile import display_name

    return display_name(name)


def get_loss(name: str) -> LossDef:
    """The loss called `name`, or a UsageError listing the losses."""
    return lookup("loss", losses(), name, "losses")


def get_optimizer(name: str) -> OptimizerDef:
    """The optimizer called `name`, or a UsageError listing the optimizers."""
    return lookup("optimizer", optimizers(), name)

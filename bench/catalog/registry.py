"""The registry: plain dicts of tasks, models, losses and optimizers, with lookups.

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

def tasks() -> dict[str, Task]:
    """All tasks by name."""
    from bench.catalog.tasks import TASKS

    return TASKS


def models() -> dict[str, ModelDef]:
    """All models by name."""
    from bench.catalog.models import MODELS

    return MODELS


def losses() -> dict[str, LossDef]:
    """All losses by name."""
    from bench.catalog.losses import LOSSES

    return LOSSES


def optimizers() -> dict[str, OptimizerDef]:
    """All optimizers by name."""
    from bench.catalog.optimizers import OPTIMIZERS

    return OPTIMIZERS


def get_task(name: str) -> Task:
    """The task called `name`, or a UsageError listing the tasks."""
    return lookup("task", tasks(), name)


def get_model(name: str) -> ModelDef:
    """The model called `name`, or a UsageError listing the models."""
    return lookup("model", models(), name)


def get_loss(name: str) -> LossDef:
    """The loss called `name`, or a UsageError listing the losses."""
    return lookup("loss", losses(), name, "losses")


def get_optimizer(name: str) -> OptimizerDef:
    """The optimizer called `name`, or a UsageError listing the optimizers."""
    return lookup("optimizer", optimizers(), name)

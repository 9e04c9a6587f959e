"""The network a RunSpec names, resolved without torch: its output head and, for a layer-list
model, its layers. `plan_run` adds what depends on the data and the device; the report reads
networks from stored specs with it and never loads torch for them.
"""

from __future__ import annotations

from bench.catalog import registry
from bench.catalog.models import Architecture, Head, ModelDef, architecture, output_head
from bench.spec import RunSpec


def network_of(spec: RunSpec) -> tuple[Head, Architecture | None, ModelDef]:
    """(head, layers, model entry) of spec's network; the layers are None for a model given
    as code (`ModelDef.factory`). Impossible task, loss and model combinations are
    UsageErrors."""
    task = registry.get_task(spec.task)
    model = registry.get_model(spec.model)
    head = output_head(model, task.kind, task.n_classes, spec.loss)
    arch = None if model.factory is not None else architecture(
        model, task.input_dim, head, hidden=spec.hidden, activation=spec.activation,
        batch_norm=spec.batch_norm)
    return head, arch, model

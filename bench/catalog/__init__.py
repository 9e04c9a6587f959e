"""The catalog: tasks (data), models, losses and optimizers, and their name lookups (`registry`).

Layer: the bottom of nnbench's own layers. It may import `bench.errors` and nothing else of
nnbench; it knows nothing of RunSpec, engines or sweeps (an optimizer is built from plain
hyperparameters).
"""

"""Sweeps: study files (`study`), Optuna storages (`storage`) and the worker loop (`sweep`).

Layer: above engines (it trains through `bench.engines.runner`); it may import engines, spec,
results, catalog and the base modules, never measure, notebooks, report or the CLI.
"""

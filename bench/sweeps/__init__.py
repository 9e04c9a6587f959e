"""Sweeps: study files (`study`), Optuna storages (`storage`) and the worker loop (`sweep`).

Layer: above engines and notebooks (it trains through `bench.engines.registry`); it may import them,
spec, results, catalog and the base modules, never measure, report or the CLI.
"""

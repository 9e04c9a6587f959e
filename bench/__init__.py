"""nnbench: a benchmarking and hyperparameter-sweep harness for small PyTorch networks.

The public surface is re-exported here; the code lives in one module per concern. The Python
API (`run`, `curves`, `sweep`, `load_runs`) is `bench.api`; the plugin decorators
(`register_task`, `register_model`) are `bench.catalog.plugins`. Importing `bench` loads
neither torch, optuna nor pandas: they load when a function needs them.
"""

from bench.api import curves, load_runs, run, sweep
from bench.catalog.plugins import register_model, register_task
from bench.errors import DataUnavailableError, UsageError
from bench.results import RunResult
from bench.spec import RunSpec

__all__ = ["DataUnavailableError", "RunResult", "RunSpec", "UsageError", "curves", "load_runs",
           "register_model", "register_task", "run", "sweep"]
__version__ = "0.1.0"

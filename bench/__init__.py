"""nnbench: a benchmarking and hyperparameter-sweep harness for small PyTorch networks.

The public surface is re-exported here; the code lives in one module per concern.
"""

from bench.errors import DataUnavailableError, UsageError
from bench.results import RunResult
from bench.spec import RunSpec

__all__ = ["DataUnavailableError", "RunResult", "RunSpec", "UsageError"]
__version__ = "0.1.0"

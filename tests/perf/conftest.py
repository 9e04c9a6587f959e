"""pytest-benchmark settings for the perf suite: every run is saved under results/perf/.

Runs accumulate as numbered JSON files in `results/perf/benchmarks/<machine>/`, so two runs can
be compared with `pytest-benchmark --storage file://results/perf/benchmarks compare 0001 0002`
(or `pytest tests/perf --benchmark-compare`). Options given on the command line win: this only
replaces pytest-benchmark's defaults (storage `./.benchmarks`, no autosave).
"""

from __future__ import annotations

import pytest
from pytest_benchmark.utils import get_tag, load_storage

PLUGIN_DEFAULT_STORAGE = "file://./.benchmarks"
STORAGE_DIR = ("results", "perf", "benchmarks")


def pytest_configure(config: pytest.Config) -> None:
    """Default the storage to results/perf/benchmarks and turn autosave on."""
    if config.getoption("benchmark_storage", None) != PLUGIN_DEFAULT_STORAGE:
        return  # chosen on the command line (or the plugin is absent): leave it alone
    if config.option.collectonly or config.getoption("benchmark_skip"):
        return  # nothing will run, so nothing to save
    uri = "file://" + str(config.rootpath.joinpath(*STORAGE_DIR))
    config.option.benchmark_storage = uri
    if not config.option.benchmark_save and not config.option.benchmark_autosave:
        config.option.benchmark_autosave = get_tag()
    # Run from the repository root, this conftest is imported during collection, after the
    # plugin built its session from the options: point that session at the same place.
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        session.storage = load_storage(uri, logger=session.logger,
                                       default_machine_id=session.machine_id,
                                       netrc=config.getoption("benchmark_netrc"))
        session.autosave = config.option.benchmark_autosave

"""The package's shape: folders are layers (import-linter contract), no import cycles at all
(function-level imports counted), and `import bench` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 kept, 0 broken" in done.stdout


def test_no_import_cycle_between_any_two_modules():
    grimp = pytest.importorskip("grimp")
    import networkx as nx

    graph = grimp.build_graph("bench")  # function-level imports included
    edges = nx.DiGraph((m, i) for m in graph.modules
                       for i in graph.find_modules_directly_imported_by(m))
    assert list(nx.simple_cycles(edges)) == []


def test_import_bench_and_help_do_not_load_torch():
    code = ("import sys, bench, bench.cli; bench.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'optuna', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

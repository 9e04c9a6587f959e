"""examples/ runs as a user runs it: the spiral plugin study swept through the Python API, read
back, the best setting retrained, and both seaborn plots written (shortened: 2 trials, 2 seeds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_spiral_example_sweeps_records_its_plugin_and_plots(tmp_path: Path) -> None:
    import optuna

    from bench.sweeps.storage import open_storage

    journal = tmp_path / "spiral.journal"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "spiral_study.py"), "--out", str(tmp_path),
         "--storage", str(journal), "--trials", "2", "--seeds", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial" in done.stdout
    for name in ("spiral_lr.png", "spiral_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    study = optuna.load_study(study_name="spiral", storage=open_storage(str(journal)))
    assert len(study.trials) == 2
    assert study.user_attrs["model"] == "tanh_net"  # the plugin's model, trained
    plugin = (ROOT / "examples" / "spiral_plugin.py").resolve()
    assert [r["source"] for r in study.user_attrs["plugins"]] == [str(plugin)]

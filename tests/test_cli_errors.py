"""How `bench` fails: one line always, the traceback only on request, SIGTERM unwinds, and no
password from the command line is ever printed."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import bench.commands.list as list_command
from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-Pw-77"


def _crash(exc: BaseException):
    def run(args):
        raise exc

    return run


def test_an_unexpected_error_is_one_line_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(list_command, "run", _crash(RuntimeError("boom\nsecond line")))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected RuntimeError: boom" in err and "--debug" in err


def test_a_password_given_on_the_command_line_is_masked_in_any_error(monkeypatch, capsys):
    url = f"postgresql://u:{SECRET}@h/db"
    monkeypatch.setattr(list_command, "run", _crash(RuntimeError(f"cannot reach {url}")))
    monkeypatch.setattr(list_command, "configure", lambda p: p.add_argument("--storage"))
    assert main(["list", "--storage", url]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "cannot reach postgresql://u:***@h/db" in err


def test_debug_prints_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(list_command, "run", _crash(RuntimeError("boom")))
    assert main(["--debug", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("please report it)")
    monkeypatch.setenv("NNBENCH_DEBUG", "1")
    assert main(["list"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_full_disk_or_read_only_folder_is_a_usage_error(monkeypatch, capsys, code, words):
    monkeypatch.setattr(list_command, "run", _crash(OSError(code, words, "results/x.csv")))
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"results/x.csv: {words}" in err


def test_sigterm_unwinds_a_sweep_and_leaves_the_journal_readable(tmp_path):
    study = tmp_path / "long.toml"
    study.write_text(textwrap.dedent("""
        task = "linear"
        trials = 500
        seeds = 1
        group = 1
        sampler = "random"
        [fixed]
        hidden = [4]
        epochs = 300
        batch_size = 10
        [space]
        lr = { low = 1e-3, high = 0.5, log = true }
    """))
    journal = tmp_path / "j.journal"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(study), "--storage",
                             str(journal), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or journal.stat().st_size < 2000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == "bench: stopped by SIGTERM; results already written are kept"
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    trials = optuna.load_study(study_name="long", storage=JournalStorage(
        JournalFileBackend(str(journal)))).get_trials()
    assert trials and all(t.state.name != "RUNNING" for t in trials)  # the trial was failed
    assert not Path(str(journal) + ".lock").exists()

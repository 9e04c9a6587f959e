"""The storage layer: the journal file backend keeps every record readable whatever happens
(torn tails, full disks, stale locks, killed parents), and no URL shows its password."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from bench.cli import main
from bench.errors import UsageError
from bench.sweeps import storage as st

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
task = "linear"
trials = {trials}
seeds = 2
group = 2
sampler = {{ name = "random", seed = 0 }}

[fixed]
hidden = [4]
batch_size = 20
epochs = {epochs}

[space]
lr = {{ low = 1e-3, high = 0.5, log = true }}
"""


def study_file(tmp_path: Path, trials: int = 3, epochs: int = 2) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(textwrap.dedent(STUDY.format(trials=trials, epochs=epochs)))
    return path


def plain_optuna_trials(path: Path, name: str = "small") -> list:
    """The study's trials as Optuna's own JournalFileBackend reads them (a fresh reader)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


# --- torn tails and half-written records -----------------------------------------------------


def test_torn_tail_is_fenced_before_the_next_sweep_appends(tmp_path, capsys):
    journal = tmp_path / "optuna.journal"
    study = study_file(tmp_path, trials=3)
    first = subprocess.run([sys.executable, "-m", "bench", "sweep", str(study), "--storage",
                            str(journal), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)  # another process, as the one a kill -9 stopped
    assert first.returncode == 0, first.stderr
    whole = journal.read_bytes()
    os.truncate(journal, len(whole) - 60)  # as if killed in the middle of the last record
    cut = journal.read_bytes()
    assert not cut.endswith(b"\n")
    study_file(tmp_path, trials=5)
    capsys.readouterr()
    assert main(["sweep", str(study), "--storage", str(journal), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "cut off mid-write" in err and "optuna.journal.torn" in err
    # every byte before the torn record is kept as it was, and the torn bytes are kept aside
    last_newline = cut.rfind(b"\n") + 1
    assert journal.read_bytes()[:last_newline] == cut[:last_newline]
    assert (tmp_path / "optuna.journal.torn").read_bytes() == cut[last_newline:] + b"\n"
    trials = plain_optuna_trials(journal)  # Optuna's own reader: no JSONDecodeError
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    for line in journal.read_bytes().splitlines():
        json.loads(line)  # every line of the file is a whole record


def test_reader_never_sees_a_record_without_its_newline(tmp_path):
    path = tmp_path / "j.journal"
    backend = st.journal_file(str(path))
    backend.append_logs([{"op_code": 0, "n": 1}, {"op_code": 0, "n": 2}])
    with open(path, "ab") as fh:
        fh.write(b'{"op_code":0,"n":3')  # a writer in the middle of its write
    reader = st.journal_file(str(path), readonly=True)
    assert [log["n"] for log in reader.read_logs(0)] == [1, 2]
    with open(path, "ab") as fh:
        fh.write(b"}\n")  # the write completes
    assert [log["n"] for log in reader.read_logs(2)] == [3]
    assert [log["n"] for log in reader.read_logs(0)] == [1, 2, 3]


def test_a_failed_write_is_cut_back_and_nothing_before_it_is_lost(tmp_path, monkeypatch):
    path = tmp_path / "j.journal"
    backend = st.journal_file(str(path))
    backend.append_logs([{"op_code": 0, "n": 1}])
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up halfway through the record
        if len(data) < 200:  # the lock file's "host pid"
            return real_write(fd, data)
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st.os, "write", half_then_full)
    with pytest.raises(OSError):
        backend.append_logs([{"op_code": 0, "n": 2, "pad": "x" * 1000}])
    monkeypatch.setattr(st.os, "write", real_write)
    assert path.read_bytes() == before
    assert not Path(str(path) + ".lock").exists()
    backend.append_logs([{"op_code": 0, "n": 3}])
    assert [log["n"] for log in st.journal_file(str(path)).read_logs(0)] == [1, 3]


def test_full_disk_during_a_sweep_is_one_line_and_keeps_the_journal(tmp_path, monkeypatch,
                                                                     capsys):
    journal = tmp_path / "optuna.journal"
    study = study_file(tmp_path, trials=2)
    assert main(["sweep", str(study), "--storage", str(journal), "--quiet"]) == 0
    before = journal.read_bytes()
    study_file(tmp_path, trials=4)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st.os, "write", full)
    capsys.readouterr()
    assert main(["sweep", str(study), "--storage", str(journal), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    assert journal.read_bytes() == before
    assert sum(t.state.name == "COMPLETE" for t in plain_optuna_trials(journal)) == 2


def test_garbage_in_the_middle_names_the_line(tmp_path):
    path = tmp_path / "j.journal"
    st.journal_file(str(path)).append_logs([{"op_code": 0}])
    with open(path, "ab") as fh:
        fh.write(b"\x00\xffnot json\n")
    st.journal_file(str(path)).append_logs([{"op_code": 0}])
    with pytest.raises(UsageError, match=r"line 2 \(byte \d+\) is not a record"):
        st.journal_file(str(path), readonly=True).read_logs(0)


def test_opening_for_reading_creates_and_repairs_nothing(tmp_path):
    missing = tmp_path / "none.journal"
    with pytest.raises(UsageError, match="no journal storage file"):
        st.open_storage(str(missing), create=False)
    assert not missing.exists()
    path = tmp_path / "j.journal"
    path.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n{"op')
    data = path.read_bytes()
    storage = st.open_storage(str(path), create=False)
    import optuna

    assert optuna.get_all_study_names(storage) == ["s"]
    assert path.read_bytes() == data and not Path(str(path) + ".torn").exists()


def test_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(st.os, "open", refuse)
    with pytest.raises(UsageError, match="Read-only file system; choose a writable --storage"):
        st.open_storage(str(tmp_path / "x.journal"))


# --- the lock --------------------------------------------------------------------------------


def test_a_lock_whose_owner_died_is_taken_over_at_once(tmp_path):
    path = tmp_path / "j.journal"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    Path(str(path) + ".lock").write_text(f"{os.uname().nodename} {dead.pid}")
    lock = st.JournalLock(str(path), grace_seconds=3600)
    began = time.monotonic()
    with lock.held():
        pass
    assert time.monotonic() - began < 1 and lock.taken_over == 1


def test_a_live_owners_lock_is_waited_for_then_taken_over_after_the_grace(tmp_path):
    path = tmp_path / "j.journal"
    Path(str(path) + ".lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # alive
    lock = st.JournalLock(str(path), grace_seconds=1.0)
    began = time.monotonic()
    with lock.held():
        waited = time.monotonic() - began
    assert 0.9 <= waited < 5 and lock.taken_over == 1


def test_old_relative_symlink_lock_does_not_spin(tmp_path):
    """An old Optuna symlink lock made from a relative path never resolves; it must not hang a
    sweep at 100% CPU (the issue's reproduction), but be taken over after the grace period."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "optuna.journal").write_bytes(b"")
    os.symlink("results/optuna.journal", results / "optuna.journal.lock")  # dangling
    old = time.time() - 3600
    os.utime(results / "optuna.journal.lock", (old, old), follow_symlinks=False)
    code = (f"import os; os.chdir({str(tmp_path)!r}); from bench.sweeps import storage as st; "
            "b = st.journal_file('results/optuna.journal'); b.append_logs([{'op_code': 0}]); "
            "print(b.lock.taken_over)")
    began = time.process_time()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    assert time.process_time() - began < 30
    assert not (results / "optuna.journal.lock").exists()


# --- workers die with their parent -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_workers_die_with_their_parent(tmp_path, how):
    study = study_file(tmp_path, trials=400, epochs=400)
    journal = tmp_path / "optuna.journal"
    parent = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(study), "--storage",
                               str(journal), "--workers", "2", "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [p for p in _children(parent.pid)
                   if "nnbench" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                   or "multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes().decode(
                       errors="replace")]
    assert len(workers) >= 2, "workers did not start"
    time.sleep(3)  # let them train
    parent.send_signal(how)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "a worker kept training after its parent died"
    # what they wrote is intact: Optuna's own reader loads the study
    trials = plain_optuna_trials(journal)
    assert all(t.state.name != "RUNNING" or how == signal.SIGKILL for t in trials)


# --- passwords -------------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("postgresql://user:s3cr3t@db.example/nn", "postgresql://user:***@db.example/nn"),
    ("postgresql+psycopg2://u:p%40ss@h:5432/d", "postgresql+psycopg2://u:***@h:5432/d"),
    ("postgresql://user@h/db", "postgresql://user@h/db"),
    # libpq reads these from the query string too
    ("postgresql://127.0.0.1:1/db?password=s3cret", "postgresql://127.0.0.1:1/db?password=***"),
    # the first secret's value and all after it: an unencoded '&' may continue the secret
    ("postgresql://u:x@h/db?sslpassword=zz&sslmode=require", "postgresql://u:***@h/db?sslpassword=***"),
    ("postgresql://u@h/db?sslmode=require&password=Sec&ret=P", "postgresql://u@h/db?sslmode=require&password=***"),
    ("postgresql://u@h/db?dsn=password%3Ds3cret", "postgresql://u@h/db?dsn=***"),
    ("postgresql://u@[::1/db?password=s3cret", "postgresql://***@[::1/db?***"),  # unparsable
    # read otherwise by SQLAlchemy (host "us"; password "pa"): refused, and shown as nothing more
    ("postgresql://us/er:s3cret@h/db", "postgresql://***"),
    ("postgresql://user:pa@ss3cret@h/db", "postgresql://***"),
    ("sqlite:////tmp/a:b@c/x.db", "sqlite:////tmp/a:b@c/x.db"),  # a path, not a user-info
    # SQLAlchemy's password stops at the first '@' even after a '?' (host "2024@h")
    ("postgresql://u:se?cret@2024@h/db", "postgresql://***"),
    ("postgresql://u:pa?ss@h:notaport/db", "postgresql://***"),
    ("postgresql://u:p/w@x@h/db", "postgresql://***"),
    ("postgresql://127.0.0.1:9/db?password=ab@Hunter42", "postgresql://***"),
    ("postgresql://u:pw@127.0.0.1:9/db?x=1\npassword=s3cret", "postgresql://***"),
    ("postgresql:/alice:Secr3tPw@127.0.0.1:9/db", "postgresql:***"),  # no '//': not a path
    ("postgresql//alice:Secr3tPw@127.0.0.1:9/db", "postgresql:***"),
    ("alice:Secr3tPw@127.0.0.1:9/db", "***"),  # no scheme at all
    ("mysql:notes.journal", "mysql:notes.journal"),  # a journal file, named so
    ("postgresql://alice:Secr3tPw/db", "postgresql://alice:***/db"),  # the host left out
    # a password inside a query value that is itself a connection string
    ("mssql+pyodbc:///?odbc_connect=UID%3Du%3BPWD%3DSecr3tPw", "mssql+pyodbc:///?odbc_connect=***"),
    ("postgresql://u@h/db?sslmode=disable;password=Secr3tPw", "postgresql://u@h/db?sslmode=***"),
    ("results/optuna.journal", "results/optuna.journal"),
    (None, "results/optuna.journal"),
])
def test_display_url_masks_the_password(url, shown):
    assert st.display_url(url) == shown


def test_refused_connection_is_named_and_the_password_never_shown(capsys, tmp_path):
    study = study_file(tmp_path)
    url = "postgresql://nn:Pa55-w0rd-XYZ@127.0.0.1:9/nnbench"  # port 9: nothing listens
    assert main(["sweep", str(study), "--storage", url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Pa55-w0rd-XYZ" not in err and "nn:***@127.0.0.1:9" in err
    assert re.search(r"connection refused", err, re.I) and err.count("\n") == 1


@pytest.mark.parametrize("url, secret", [
    ("postgresql://127.0.0.1:9/nnbench?password=s3cret-Q", "s3cret-Q"),
    ("postgresql://nn@127.0.0.1:9/nnbench?sslpassword=zz-Top-9&sslmode=disable", "zz-Top-9"),
    ("postgresql:///nnbench?host=127.0.0.1&port=9&password=pw%40Q-7", "pw@Q-7"),
])
def test_a_password_in_the_query_string_is_never_shown(capsys, tmp_path, url, secret):
    study = study_file(tmp_path)
    assert main(["sweep", str(study), "--storage", url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert secret not in err and "pw%40Q-7" not in err and "***" in err
    assert err.count("\n") == 1


def test_a_short_password_is_masked_as_a_word_only():
    url = "postgresql://u:x@127.0.0.1:9/db"
    text = f"cannot open {url}: fix the host and port (password x was refused)"
    assert st.mask_secret(text, url) == ("cannot open postgresql://u:***@127.0.0.1:9/db: fix the "
                                         "host and port (password *** was refused)")


@pytest.mark.parametrize("url, secret", [
    ("postgresql://u:se?cret@2024@h/db", "se?cret@2024"),
    ("postgresql://u:pa?ss@h:notaport/db", "pa?ss"),
    ("postgresql://us/er:Hunter2pw@h/db", "Hunter2pw"),
    ("postgresql://u@h/db?p%61ssword=hunter22", "hunter22"),  # the key percent-encoded
    ("postgresql://u@h/db?password=Sec&ret=Pass42", "Sec&ret=Pass42"),  # an unencoded '&'
    ("postgresql://u:a+bcde@h/db", "a+bcde"),  # also as a driver would encode it, a%2Bbcde
])
def test_every_reading_of_a_password_is_masked_in_any_message(url, secret):
    from urllib.parse import quote

    text = f"server said: password {secret} ({quote(secret, safe='')}) refused for {url}"
    masked = st.mask_secret(text, url)
    pieces = [p for p in re.split(r"[@?/&=+]", secret) if len(p) >= 4]  # e.g. "2024" of se?cret@2024
    assert secret not in masked and not any(p in masked for p in pieces), masked


def test_a_sqlite_url_with_arguments_names_its_file(tmp_path):
    db = tmp_path / "o.db"
    url = f"sqlite:///{db}?password=s3cret-Q"
    assert st.missing_storage_reason(url) == f"no SQLite storage file at {db}"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    assert st.missing_storage_reason(url) is None
    assert "s3cret-Q" not in st.display_url(url)


@pytest.mark.parametrize("content", [b"my precious notes", b'{"a": 1}', b"# notes\n"])
def test_a_file_of_another_kind_is_never_taken_for_a_journal(tmp_path, capsys, content):
    other = tmp_path / "notes.txt"
    other.write_bytes(content)
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(other), "--quiet"]) == 2
    assert "is not an Optuna journal" in capsys.readouterr().err
    assert other.read_bytes() == content and not (tmp_path / "notes.txt.torn").exists()


def test_a_journal_whose_first_record_was_cut_is_repaired(tmp_path):
    journal = tmp_path / "j.journal"
    journal.write_bytes(b'{"op_co')  # killed within its very first record
    assert main(["sweep", str(study_file(tmp_path)), "--storage", str(journal), "--quiet"]) == 0
    assert (tmp_path / "j.journal.torn").read_bytes() == b'{"op_co\n'


def test_a_file_that_is_not_a_database_says_so(tmp_path):
    path = tmp_path / "x.db"
    path.write_text("not a database " * 100)
    with pytest.raises(UsageError, match="not an SQLite database"):
        st.open_storage(f"sqlite:///{path}")


def test_no_private_optuna_api_in_the_package():
    """The issue: private names can silently change meaning after an Optuna upgrade."""
    pattern = re.compile(r"\._storage\b|\._trial_id\b|\._backend\b|optuna\.\w+(\.\w+)*\._\w+"
                         r"|from optuna[\w.]*\._")
    hits = [f"{p}:{i}" for p in (ROOT / "bench").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_a_journal_left_open_at_interpreter_exit_prints_nothing(tmp_path):
    """A script that keeps a study on a journal file to the end (the Python API, a notebook)
    exits without 'Exception ignored' noise from the backend's file descriptors."""
    import subprocess
    import sys

    script = ("import bench\n"
              "study = bench.sweep({'name': 'exit', 'task': 'moons', 'model': 'mlp', "
              "'trials': 2, 'seeds': 1, 'fixed': {'epochs': 1, 'hidden': [4]}, "
              f"'space': {{'lr': [0.1, 0.2]}}}}, storage={str(tmp_path / 'j')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


def test_an_unforeseen_error_quoting_part_of_the_password_names_only_its_type():
    url = "postgresql://u:abcd{Vault42}efgh@h/db"
    assert st.storage_error_reason(KeyError("Vault42"), url) == (
        "KeyError (its message would show part of the password)")
    assert st.storage_error_reason(KeyError("SCHEMA"), url) == "KeyError: 'SCHEMA'"

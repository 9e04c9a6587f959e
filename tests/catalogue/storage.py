"""Catalogue rows for storages: journal paths that cannot be journals, damaged journals, stale
locks, database URLs that cannot be opened (password never shown), studies that are not ours."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.catalogue import Case

STUDY = """
task = "linear"
trials = 2
seeds = 1
group = 2
sampler = { name = "random", seed = 0 }

[fixed]
hidden = [4]
batch_size = 20
epochs = 2

[space]
lr = { low = 1e-3, high = 0.5, log = true }
"""
SECRET = "Pa55-w0rd-XYZ"
CREATE = {"op_code": 0, "worker_id": "w", "study_name": "other", "directions": [1]}


def _lines(*records: object) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                    for r in records)


def sweep(*extra: str, storage: str = "x.journal") -> tuple[str, ...]:
    return ("sweep", "s.toml", "--storage", storage, "--quiet", *extra)


def masked(name: str, url: str, stderr: str, **more: object) -> Case:
    """A sweep on a storage URL holding SECRET: exit 2, `stderr`, and SECRET never shown."""
    return Case(name, sweep(storage=url), 2, stderr, files={"s.toml": STUDY}, secret=SECRET,
                **more)


def _plain_optuna_study(folder: Path, attrs: dict[str, object], direction: str = "maximize"
                        ) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / "x.journal")))
    study = optuna.create_study(study_name="s", storage=storage, direction=direction)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.enqueue_trial({"x": 1.0})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    study.tell(trial, 0.5)


def _complete_trials(folder: Path, expected: int, journal: str = "x.journal") -> None:
    """Optuna's own reader loads the study, with at least `expected` COMPLETE trials."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / journal)))
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) >= expected


def _torn_journal(folder: Path) -> None:
    from bench.cli import main

    assert main(list(sweep())) == 0
    path = folder / "x.journal"
    os.truncate(path, path.stat().st_size - 40)
    (folder / "s.toml").write_text(STUDY.replace("trials = 2", "trials = 3"))


def _check_torn(folder: Path) -> None:
    assert (folder / "x.journal.torn").exists()
    for line in (folder / "x.journal").read_bytes().splitlines():
        json.loads(line)
    # the cut record's trial ran in this same process, so it may stay RUNNING here; a
    # separate-process rerun fails it and trains a replacement (tests/test_storage.py)
    _complete_trials(folder, 2)


def _stale_symlink_lock(folder: Path) -> None:
    lock = folder / "results" / "optuna.journal.lock"
    lock.parent.mkdir()
    os.symlink("results/optuna.journal", lock)  # relative target: never resolves
    old = time.time() - 3600
    os.utime(lock, (old, old), follow_symlinks=False)


def _dead_owner_lock(folder: Path) -> None:
    (folder / "x.journal.lock").write_text(f"{os.uname().nodename} 999999999")


CASES = [
    Case("storage-is-a-folder", sweep(storage="adir"), 2, r"adir is a folder",
         files={"s.toml": STUDY, "adir/keep.txt": "mine"}),
    Case("storage-empty-string", sweep(storage=""), 2, r"--storage is empty", files={"s.toml": STUDY}),
    Case("storage-dev-null", sweep(storage="/dev/null"), 2, r"not a regular file",
         files={"s.toml": STUDY}),
    Case("storage-unwritable-place", sweep(storage="/sys/nnbench.journal"), 2,
         r"cannot open storage /sys/nnbench.journal: .*(read-only|permission)",
         files={"s.toml": STUDY}),
    Case("storage-parent-is-a-file", sweep(storage="afile/x.journal"), 2,
         r"afile is a file, not a folder", files={"s.toml": STUDY, "afile": "mine"}),
    Case("journal-garbage-in-the-middle", sweep(), 2, r"x.journal: line 2 \(byte \d+\) is not a "
         "record", files={"s.toml": STUDY,
                          "x.journal": _lines(CREATE, b"\x00garbage{", CREATE)}),
    Case("journal-random-bytes", sweep(), 2, r"not an Optuna journal \(its first line is not",
         files={"s.toml": STUDY, "x.journal": bytes(range(256)) * 40 + b"\n"}),
    Case("journal-damaged-after-its-first-record", sweep(), 2, r"line 2 .*is not a record",
         files={"s.toml": STUDY, "x.journal": b'{"op_code": 0, "worker_id": "w"}\n'
                + bytes(range(256)) * 40 + b"\n"}),
    Case("journal-json-but-not-optuna", sweep(), 2, r"not an Optuna journal",
         files={"s.toml": STUDY, "x.journal": _lines({"hello": 1}, [1, 2, 3])}),
    Case("journal-torn-tail-is-repaired", sweep(), 0, r"cut off mid-write",
         files={"s.toml": STUDY}, setup=_torn_journal, may_change=("x.journal", "s.toml"),
         check=_check_torn),
    Case("journal-stale-relative-symlink-lock", ("sweep", "s.toml", "--quiet"), 0,
         files={"s.toml": STUDY}, setup=_stale_symlink_lock,
         absent=("results/optuna.journal.lock",)),
    Case("journal-lock-of-a-dead-process", sweep(), 0, files={"s.toml": STUDY},
         setup=_dead_owner_lock, absent=("x.journal.lock",), may_change=("x.journal.lock",),
         check=lambda f: _complete_trials(f, 2)),
    masked("postgres-refused-password-masked", f"postgresql://nn:{SECRET}@127.0.0.1:9/db",
           r"cannot open storage postgresql://nn:\*\*\*@127.0.0.1:9/db: connection refused"),
    masked("postgres-unknown-host-password-masked",
           f"postgresql://nn:{SECRET}@no-such-host.invalid/db", r"unknown host"),
    masked("unknown-url-scheme-password-masked", f"nosuchdb://nn:{SECRET}@127.0.0.1/db",
           r"cannot open storage"),
    masked("postgres-query-string-password-masked",
           f"postgresql://nn@127.0.0.1:9/db?sslmode=disable&password={SECRET}",
           r"postgresql://nn@127.0.0.1:9/db\?.*password=\*\*\*"),
    masked("postgres-port-not-a-number-password-masked",
           f"postgresql://nn:{SECRET}@127.0.0.1:fivefour/db",
           r"storage URL postgresql://\S*\*\*\*@127.0.0.1:fivefour/db: the port is not a "
           r"number; write host:port with digits, e.g. localhost:5432"),
    # user-info SQLAlchemy reads other than a server would: a '/' in the user name makes it
    # read "us" as the host, a second '@' makes it cut the password short, an '@' in the query
    # makes it read the rest as a password and what follows as the host. Refused before
    # connecting, naming the encoding, and shown as postgresql://*** only
    masked("postgres-slash-in-user-password-masked", f"postgresql://us/er:{SECRET}@127.0.0.1:9/db",
           r"storage URL postgresql://\*\*\*: an '@', '/' or '\?' inside the user name or "
           r"password, or an '@' in the database name or query, must be percent-encoded "
           r"\(%40, %2F, %3F\)"),
    masked("postgres-at-in-password-masked", f"postgresql://nn:ab@{SECRET}@127.0.0.1:9/db",
           r"storage URL postgresql://\*\*\*: .* must be percent-encoded"),
    masked("postgres-at-in-query-password-masked",
           f"postgresql://127.0.0.1:9/db?password=ab@{SECRET}",
           r"storage URL postgresql://\*\*\*: .* must be percent-encoded"),
    masked("postgres-newline-in-url-password-masked",
           f"postgresql://nn@127.0.0.1:9/db?sslmode=disable\npassword={SECRET}",
           r"storage URL postgresql://\*\*\*: holds a newline or other control character"),
    # Optuna fills the URL in with str.format: a brace in a password named part of it
    masked("postgres-braces-in-password-masked", f"postgresql://nn:x{{{SECRET}}}y@127.0.0.1:9/db",
           r"cannot open storage postgresql://nn:\*\*\*@127.0.0.1:9/db: connection refused"),
    masked("postgres-dsn-in-query-masked",
           f"postgresql://nn@127.0.0.1:9/db?dsn=password%3D{SECRET}",
           r"postgresql://nn@127.0.0.1:9/db\?dsn=\*\*\*"),
    # a database URL without its '://', or user:password@host without a scheme, is not a
    # journal path: no folder named after the password
    masked("postgres-scheme-without-slashes", f"postgresql:/nn:{SECRET}@127.0.0.1:9/db",
           r"storage postgresql:\*\*\* is a database URL without its '://'; write it as "
           r"postgresql://user:password@host/db", absent=("postgresql:",)),
    masked("postgres-scheme-without-its-colon", f"postgresql//nn:{SECRET}@127.0.0.1:9/db",
           r"storage postgresql:\*\*\* is a database URL without its '://'",
           absent=("postgresql",)),
    masked("postgres-url-without-a-scheme", f"nn:{SECRET}@127.0.0.1:9/db",
           r"storage \*\*\* reads as user:password@host without a scheme; write a database URL "
           r"as postgresql://user:password@host/db", absent=(f"nn:{SECRET}@127.0.0.1:9",)),
    # the host left out: the password reads as the port
    masked("postgres-url-without-its-host", f"postgresql://nn:{SECRET}/db",
           r"storage URL postgresql://nn:\*\*\*/db: the port is not a number"),
    Case("report-scheme-without-slashes",
         ("report", "--storage", f"postgresql:nn:{SECRET}@127.0.0.1:9/db"), 2,
         r"is a database URL without its '://'", secret=SECRET, absent=("results/report",)),
    Case("report-url-without-a-scheme", ("report", "--storage", f"nn:{SECRET}@127.0.0.1:9/db"),
         2, r"reads as user:password@host without a scheme", secret=SECRET,
         absent=("results/report",)),
    # a journal file whose name starts like a scheme is still a journal file
    Case("journal-named-like-a-scheme", sweep(storage="mysql:notes.journal"), 0,
         files={"s.toml": STUDY}, check=lambda f: _complete_trials(f, 2, "mysql:notes.journal")),
    Case("postgres-ipv6-without-its-bracket",
         sweep(storage="postgresql://nn@[::1/db"), 2,
         r"the IPv6 address has no closing bracket; write it as \[::1\]:5432",
         files={"s.toml": STUDY}),
    # a study in memory is gone when the command ends: nothing to resume or report
    Case("sqlite-in-memory", sweep(storage="sqlite:///:memory:"), 2,
         r"storage sqlite:///:memory: is an in-memory SQLite database, lost when the command "
         r"ends; give a file, e.g. sqlite:///study.db", files={"s.toml": STUDY},
         absent=(":memory:",)),
    Case("sqlite-without-a-path", sweep(storage="sqlite://"), 2,
         r"storage sqlite:// is an in-memory SQLite database", files={"s.toml": STUDY}),
    Case("journal-path-is-a-one-line-notes-file", sweep(storage="notes.txt"), 2,
         r"storage notes.txt is not an Optuna journal \(its first line is not",
         files={"s.toml": STUDY, "notes.txt": b"my own notes, no newline"},
         absent=("notes.txt.torn",)),
    Case("workers-beyond-the-machine", sweep("--workers", "100000"), 2,
         r"--workers must be between 1 and \d+ here \(4 per core\)", files={"s.toml": STUDY},
         absent=("x.journal",)),
    Case("sqlite-file-not-a-database", sweep(storage="sqlite:///x.db"), 2,
         r"not an SQLite database", files={"s.toml": STUDY, "x.db": "hello " * 500}),
    Case("plain-optuna-study-of-the-same-name", sweep(), 2,
         r"study 's' in the storage was not made by nnbench",
         files={"s.toml": STUDY}, setup=lambda f: _plain_optuna_study(f, {})),
    Case("plain-optuna-study-with-nnbench-looking-attrs", sweep(), 2,
         r"study 's' in the storage was not made by nnbench",
         files={"s.toml": STUDY},
         setup=lambda f: _plain_optuna_study(f, {"nnbench_study": ["not", "a", "table"],
                                                 "runs": "x"})),
    Case("workers-zero", sweep("--workers", "0"), 2, r"--workers must be between 1 and",
         files={"s.toml": STUDY}, absent=("x.journal",)),
    Case("threads-zero", sweep("--threads", "0"), 2, r"--threads must be between 1 and",
         files={"s.toml": STUDY}, absent=("x.journal",)),
    Case("trials-zero", sweep("--trials", "0"), 2, r"trials", files={"s.toml": STUDY},
         absent=("x.journal",)),
    Case("changed-study-settings-refused", sweep(), 2, r"made from different settings",
         files={"s.toml": STUDY},
         setup=lambda f: (__import__("bench.cli").cli.main(list(sweep())),
                          (f / "s.toml").write_text(STUDY.replace("epochs = 2", "epochs = 3"))),
         may_change=()),
]

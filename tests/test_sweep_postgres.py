"""Three workers against one real PostgreSQL server on loopback share a study exactly once.

The fixture initdb's a throwaway cluster and starts it on a free port. PostgreSQL refuses to
run as root, so as root the cluster belongs to the `postgres` user (via runuser) and lives in a
directory that user can reach; the test is skipped, with the reason, where no server can start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.sweeps.storage import postgres_driver_url
from bench.sweeps.trials import decode_runs, is_finished

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as non-root")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL server on 127.0.0.1, stopped and deleted afterwards."""
    pytest.importorskip("psycopg2", reason="psycopg2 is needed to talk to PostgreSQL")
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not (initdb.exists() and pg_ctl.exists()):
        pytest.skip(f"PostgreSQL 15 binaries not found under {PG_BIN} (apt-get install "
                    "postgresql-15)")
    if os.geteuid() == 0:
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to own the cluster")
    base = Path(tempfile.mkdtemp(prefix="nnbench-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        init = subprocess.run(_as_owner([str(initdb), "-D", str(data), "-A", "trust", "-U",
                                         "postgres", "--no-sync"]),
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
        start = subprocess.run(_as_owner([
            str(pg_ctl), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start"]), capture_output=True, text=True, timeout=120)
        if start.returncode != 0:
            log = (base / "log").read_text() if (base / "log").exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {log.strip().splitlines()[-1:]}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


STUDY = """
task = "linear"
trials = 9
seeds = 2
group = 2
sampler = { name = "tpe", seed = 0, startup_trials = 4 }

[fixed]
hidden = [4]
batch_size = 20
epochs = 3

[space]
optimizer = ["sgd", "adam"]
lr = { low = 1e-3, high = 0.5, log = true }
"""


def test_three_workers_on_one_postgres_complete_every_trial_once(postgres_url, tmp_path):
    import optuna

    path = tmp_path / "pg_small.toml"
    path.write_text(textwrap.dedent(STUDY))
    cmd = [sys.executable, "-m", "bench", "sweep", str(path), "--storage", postgres_url,
           "--quiet", "--engine", "reference"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # as if on three hosts
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[-1200:] for _, e in outputs)

    study = optuna.load_study(study_name="pg_small", storage=postgres_driver_url(postgres_url))
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 9 and sum(is_finished(t) for t in trials) == 9
    for t in trials:
        if t.state.name == "FAIL":  # a race beyond the target: told before any training
            assert t.user_attrs["failure_reason"].startswith("skipped")
            assert "runs" not in t.user_attrs
        else:
            assert [r["seed"] for r in decode_runs(t.user_attrs["runs"])] == [0, 1]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)  # no trial trained twice
    assert study.user_attrs["objective"] == "val_accuracy"


def test_password_is_masked_in_the_summary_and_a_wrong_user_is_named(postgres_url, tmp_path):
    """The server trusts loopback, so a password in the URL is accepted and ignored: the
    summary line shows the URL with *** in its place. A user the server does not know is
    refused with that reason, and the password is not shown either."""
    path = tmp_path / "pg_secret.toml"
    path.write_text(textwrap.dedent(STUDY).replace("trials = 9", "trials = 2"))
    secret = "Zz-secret-4242"
    url = postgres_url.replace("postgres@", f"postgres:{secret}@")
    cmd = [sys.executable, "-m", "bench", "sweep", str(path), "--storage", url,
           "--engine", "reference"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert secret not in done.stdout + done.stderr
    assert "postgres:***@127.0.0.1" in done.stdout
    wrong = url.replace("postgres:", "nobody:", 1)
    done = subprocess.run([*cmd[:-4], "--storage", wrong], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 2 and secret not in done.stdout + done.stderr
    assert "refused the user name or password" in done.stderr, done.stderr

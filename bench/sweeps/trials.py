"""Trial states as a sweep counts them, and trials whose worker is gone: a finished trial is
COMPLETE, PRUNED or FAIL because it diverged; a RUNNING trial whose worker process died (this
host) or whose heartbeat stopped (RDB storages, any host) is failed so a re-run trains it again."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from bench.sweeps.storage import HEARTBEAT_INTERVAL, pid_alive, quiet_optuna_warnings

ORPHAN_SECONDS = 120  # a RUNNING trial with no worker record this old is failed



DIVERGED_PREFIX = "diverged"


def encode_runs(runs: list[dict[str, Any]]) -> str:
    """A trial's runs as the JSON text kept in its user attribute "runs".

    One string rather than nested lists and dicts: Optuna copies a trial deeply whenever it is
    told or read, and a string is copied in constant time (at 5 seeds, the nested form made
    `study.tell` cost several milliseconds per trial). Any JSON reader gets the same data."""
    import json

    return json.dumps(runs, separators=(",", ":"), allow_nan=True)


def decode_runs(raw: Any) -> Any:
    """The runs kept on a trial: JSON text (this version) decoded, a list (earlier versions) as
    it is; anything else is returned unchanged for the caller to report."""
    import json

    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw



def is_finished(trial: Any) -> bool:
    """COMPLETE, PRUNED, or FAIL because it diverged: the trials that count to the target."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return (trial.state == TrialState.FAIL
            and str(trial.user_attrs.get("failure_reason", "")).startswith(DIVERGED_PREFIX))



def is_running(trial: Any) -> bool:
    """RUNNING: a trial some worker is training (WAITING ones are handed out by `ask`)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.RUNNING



def count_finished(study: Any) -> int:
    """How many of the study's trials count to its target."""
    return sum(is_finished(t) for t in study.get_trials(deepcopy=False))



def _stale_reason(trial: Any, host: str, now: datetime) -> str | None:
    worker = trial.user_attrs.get("worker")
    if worker is None:
        started = trial.datetime_start
        if started is not None and now - started > timedelta(seconds=ORPHAN_SECONDS):
            return f"left RUNNING without a worker record for over {ORPHAN_SECONDS} s"
        return None
    if worker.get("host") == host and worker.get("pid") != os.getpid() and not pid_alive(
            int(worker["pid"])):
        return f"worker pid {worker['pid']} on {host} stopped before finishing it (killed?)"
    return None



def fail_stale_trials(study: Any, storage: Any) -> int:
    """Fail RUNNING trials whose worker is gone; returns how many were failed."""
    import optuna
    from optuna.trial import TrialState

    if isinstance(storage, optuna.storages.RDBStorage):
        with quiet_optuna_warnings():
            optuna.storages.fail_stale_trials(study)  # heartbeats, for workers on any host
    host, now, failed = socket.gethostname(), datetime.now(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, host, now)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial_id(storage, study, trial.number),
                                        "failure_reason", reason)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
        except (RuntimeError, ValueError):  # finished meanwhile by its worker or another one
            continue
    return failed



def trial_id(storage: Any, study: Any, number: int) -> int:
    """The storage's id of trial `number` of `study` (public storage API, no private fields)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)



@contextmanager
def heartbeats(storage: Any, study: Any, numbers: Sequence[int]) -> Iterator[None]:
    """Record Optuna heartbeats for trials `numbers` while the body runs (RDB storages only)."""
    import optuna

    if not isinstance(storage, optuna.storages.RDBStorage) or not numbers:
        yield
        return
    trial_ids = [trial_id(storage, study, n) for n in numbers]
    interval = storage.get_heartbeat_interval() or HEARTBEAT_INTERVAL
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                with suppress(Exception):
                    storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="nnbench-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

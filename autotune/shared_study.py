"""Several search processes on one study: heartbeats, claims, and the ledger they share.

Any number of `autotune search --storage URL --study NAME` processes (one per GPU or machine)
cooperate through Optuna's storage:
- each RUNNING trial carries a heartbeat (database storage); a worker that dies stops beating,
  the next process to ask fails its trial (`optuna.storages.fail_stale_trials`) and Optuna's
  `RetryFailedTrialCallback` puts the same settings back in the queue for another worker;
- before measuring, a process claims the assignment on its trial; the claim holds only if no
  lower-numbered running trial claimed the same settings (else it is a duplicate) and, when the
  study has a trial count, if measured + earlier claims leave a slot: trial numbers come from the
  database, so every process reaches the same verdict and exactly the requested count finishes.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import optuna

log = logging.getLogger(__name__)

CLAIM = "autotune:claim"
#: Which process measures a trial (host:pid), for logs and for whoever looks at the study.
WORKER = "autotune:worker"
#: Seconds between heartbeats, and how long a silent trial lives before it is failed and retried
#: (the environment variables exist for tests that kill a worker and cannot wait long).
HEARTBEAT_S = int(os.environ.get("AUTOTUNE_HEARTBEAT_S", "5"))
GRACE_S = int(os.environ.get("AUTOTUNE_HEARTBEAT_GRACE_S", "20"))


def heartbeat_enabled(storage: Any) -> bool:
    return optuna.storages._heartbeat.is_heartbeat_enabled(storage)  # noqa: SLF001 (no public twin)


class Heartbeat:
    """Records the trial's heartbeat on a thread while it is measured (no-op without support)."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float = HEARTBEAT_S) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if heartbeat_enabled(self._storage):
            self._storage.record_heartbeat(self._trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True, name="autotune-heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            self._storage.record_heartbeat(self._trial_id)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials of dead workers (their settings are queued again by the retry callback)."""
    if heartbeat_enabled(study._storage):  # noqa: SLF001
        optuna.storages.fail_stale_trials(study)


def claim(trial: optuna.trial.Trial, key: str) -> None:
    """Mark the trial as this process's measurement of `key`, with a first heartbeat: Optuna
    fails only trials whose heartbeat went stale, so a process killed between the claim and the
    measurement must already have one, or its claim would hold a slot forever."""
    storage = trial.storage
    if heartbeat_enabled(storage):
        storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
    trial.set_user_attr(CLAIM, key)
    trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")


def claim_verdict(study: optuna.Study, number: int, key: str, measured: int, limit: int | None) -> str | None:
    """None when trial `number` may measure `key`; else why not ("duplicate", "no slot")."""
    running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.number < number and t.user_attrs.get(CLAIM)]
    if any(t.user_attrs[CLAIM] == key for t in running):
        return "duplicate"
    if limit is not None and measured + len(running) >= limit:
        return "no slot"
    return None

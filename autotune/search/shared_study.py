"""Several search processes on one study: heartbeats, claims, and the ledger they share.

Any number of `autotune search --storage URL --study NAME` processes (one per GPU or machine)
cooperate through Optuna's storage:
- each RUNNING trial carries a heartbeat (database storage) from its claim until it is told; a
  worker that dies stops beating, the next process to ask fails its trial
  (`optuna.storages.fail_stale_trials`) and Optuna's `RetryHeartbeatStaleTrialCallback` puts the
  same settings back in the queue for another worker;
- before measuring, a process claims the assignment on its trial (`claim`): the claim holds only
  if no claim ahead of it names the same settings and, when the study has a trial count, if the
  measured trials and the claims ahead leave a slot, so that exactly the requested count finishes
  and none is measured twice.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from autotune.search import clock, ledger

if TYPE_CHECKING:
    from autotune.search.study import Search

log = logging.getLogger(__name__)

#: The settings a trial is about to measure; written before its process looks at other claims.
CLAIM = ledger.ATTR_CLAIM
#: The trial's own number, written once its claim held: it is being measured. (A retry inherits
#: every user attribute of the dead trial it repeats: a mark copied from there names another
#: trial and counts for nothing.)
HOLDS = ledger.ATTR_HOLDS
#: Which process measures a trial (host:pid), for logs and for whoever looks at the study.
WORKER = ledger.ATTR_WORKER
#: Seconds between heartbeats, and how long a silent trial lives before it is failed and retried
#: (the environment variables exist for tests that kill a worker and cannot wait long).
HEARTBEAT_S = int(os.environ.get("AUTOTUNE_HEARTBEAT_S", "5"))
GRACE_S = int(os.environ.get("AUTOTUNE_HEARTBEAT_GRACE_S", "20"))

_STATES = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def heartbeat_enabled(storage: Any) -> bool:
    return optuna.storages._heartbeat.is_heartbeat_enabled(storage)  # noqa: SLF001 (no public twin)


class Heartbeat:
    """Records the trial's heartbeat on a thread while it is claimed and measured (no-op without
    support). The first beat is recorded on entry: Optuna fails only trials whose heartbeat went
    stale, so a trial killed before its first beat would otherwise hold its claim forever."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float | None = None) -> None:
        self._storage, self._trial_id = storage, trial_id
        self._interval = HEARTBEAT_S if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if heartbeat_enabled(self._storage):
            self._storage.record_heartbeat(self._trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True, name="autotune-heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError  # heartbeats exist on RDB storages only

        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except (SQLAlchemyError, OSError) as exc:  # a lost beat (dropped connection) must not end the beating
                log.warning("could not record the heartbeat of trial id %d: %s", self._trial_id, exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials of dead workers (their settings are queued again by the retry callback)."""
    if heartbeat_enabled(study._storage):  # noqa: SLF001
        optuna.storages.fail_stale_trials(study)


def _rank(trial: optuna.trial.FrozenTrial) -> tuple[int, int]:
    """Claims rank by trial number; a retry takes the rank of the trial it repeats (the
    "failed_trial" Optuna's retry callback records, see `RetryHeartbeatStaleTrialCallback.retried_trial_number`)."""
    return trial.system_attrs.get("failed_trial", trial.number), trial.number


def _holds(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(HOLDS) == trial.number


def claim(study: optuna.Study, trial: optuna.trial.Trial, key: str,
          measured: Callable[[list[optuna.trial.FrozenTrial]], set[str]], limit: int | None,
          poll_s: float = 0.2) -> str | None:
    """Claim the settings `key` for `trial` (RUNNING, with a heartbeat): None when the claim holds
    and the trial is to be measured, else why not: "duplicate" (measured, or claimed ahead) or
    "no slot" (`limit` reached by the measured settings, `measured(trials)`, and the claims ahead).

    Every process writes its claim, then reads all trials. Another live claim is ahead of this one
    if it is queued (a retry waiting for a worker), ranks before it, or already holds. A claim that
    ranks after this one and has not decided is waited for when it could change the verdict: it
    either read this claim (and counts it as ahead) or read before it was written, and then may
    hold. Of any two claims, at least one reads the other, so two never hold the same settings or
    the last slot. Waits go from a rank to later ranks only, so they end; a claimant that died
    before deciding is failed once its heartbeat is stale (on a journal file, without heartbeats,
    it is taken as ahead after a while)."""
    trial.set_user_attr(CLAIM, key)
    patience = time.monotonic() + 2 * GRACE_S
    while True:
        trials = study.get_trials(deepcopy=False)
        done = measured(trials)
        mine = next(t for t in trials if t.number == trial.number)
        ahead, undecided = [], []
        for t in trials:
            if (t.number == mine.number or t.state not in _STATES or not t.user_attrs.get(CLAIM)
                    or t.user_attrs[CLAIM] in done):  # measured: counted once, in `done`
                continue
            queued = t.state == optuna.trial.TrialState.WAITING
            is_ahead = queued or _rank(t) < _rank(mine) or _holds(t) or time.monotonic() > patience
            (ahead if is_ahead else undecided).append(t.user_attrs[CLAIM])
        if key in done or key in ahead:
            return "duplicate"
        if limit is not None and len(done) + len(ahead) >= limit:
            return "no slot"
        if key not in undecided and (limit is None or len(done) + len(ahead) + len(undecided) < limit):
            break
        time.sleep(poll_s)
        fail_stale(study)
    trial.set_user_attr(HOLDS, trial.number)
    trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
    return None


def sync(search: Search) -> None:
    """Fail dead workers' trials, then take in what the other processes measured."""
    fail_stale(search.study)
    search.book.take(ledger.records_of(search.study, search.target, search.guard))


def wait_for_others(search: Search, n_trials: int, poll_s: float = 1.0) -> bool:
    """Every slot is taken by running trials: wait until they finish, or one dies and its
    settings come back to the queue (True). False after a trial timeout and then some: on a
    journal file there are no heartbeats, and a dead process's trial stays RUNNING until a
    `--resume`."""
    timeout_s = float(getattr(search.measurer, "timeout_s", search.options.trial_timeout_s))
    give_up = clock.now() + 2 * timeout_s + GRACE_S
    while clock.now() < give_up:
        sync(search)
        running = search.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        waiting = search.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if len(search.book.seen) >= n_trials or waiting or not any(t.user_attrs.get(CLAIM) for t in running):
            return True
        clock.sleep(poll_s)
    log.warning("other processes' trials have been running for too long; stopping this one")
    return False

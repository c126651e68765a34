"""The search loop in three layers, after Optuna's `_optimize.py`: `run` (reference, seeds,
bookkeeping, confirmation), the stop conditions before each proposal (stop.py), and one step:
ask, pass the gates (gates.py), claim, measure (run_trial.py), tell."""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import optuna

from autotune.search import clock, finalists, gates, ledger, run_trial, shared_study
from autotune.search.budget import ConfirmReserve, expected_duration_s
from autotune.search.stop import Progress, StopReason, should_stop
from autotune.search.trials import ProgressFn, TrialRecord

if TYPE_CHECKING:
    from autotune.search.study import Search


@dataclasses.dataclass
class RunState:
    """One call of `run`: its goal, its deadline and its counters."""

    n_trials: int
    deadline: float
    reserve: ConfirmReserve
    on_trial: ProgressFn | None = None
    measured_now: int = 0
    asks: int = 0
    skips: int = 0

    def timeout_s(self) -> float | None:
        return None if math.isinf(self.deadline) else max(0.0, self.deadline - clock.now())


def run(search: Search, n_trials: int, on_trial: ProgressFn | None, time_budget_s: float | None) -> StopReason:
    """Measure up to `n_trials` new distinct assignments, then confirm the winner; fewer if the
    space runs out or, with a time budget, once it is spent. Returns why the loop stopped."""
    start = clock.now()
    deadline = math.inf if time_budget_s is None else start + time_budget_s
    wants_confirmation = search.options.confirm and hasattr(search.measurer, "compare")
    state = RunState(n_trials, deadline, ConfirmReserve(deadline, wants_confirmation, finalists.worker_room(search)),
                     on_trial)
    try:
        _prepare(search, state)
        reason = _loop(search, state)
        if search.options.confirm:
            search.record_decision(finalists.confirm(search, deadline))
    finally:
        search.proposals += state.asks
        search.duration_s += clock.now() - start
        search.study.set_user_attr(ledger.ATTR_DURATION, search.duration_s)
    return reason


def _prepare(search: Search, state: RunState) -> None:
    """Sync a shared study, make the reference, queue the defaults and the planner's seeds."""
    if search.shared:
        shared_study.sync(search)
    if state.n_trials > 0:
        search.ensure_reference(state.timeout_s())
    if not search.book.known:
        search.enqueue(search.space.default())
        for candidate in search.planner_seeds(state.n_trials):
            search.enqueue(candidate)


def _wanted(search: Search, state: RunState) -> bool:
    """Whether more trials are wanted (a shared study counts every process's trials)."""
    done = len(search.book.seen) if search.shared else state.measured_now
    return done < state.n_trials


def _loop(search: Search, state: RunState) -> StopReason:
    space_size = search.space.size()
    while _wanted(search, state):
        if search.shared:
            shared_study.sync(search)
            if not _wanted(search, state):
                break
        pick = functools.partial(finalists.pick, search)
        left = state.deadline - clock.now() - state.reserve.seconds(pick)
        reason = should_stop(Progress(known=search.book.known, space_size=space_size, asks=state.asks,
                                      n_trials=state.n_trials, seconds_left=left, skips=state.skips))
        if reason in (StopReason.TIME_BUDGET, StopReason.NOTHING_FITS) and state.reserve.release(pick):
            state.skips = 0  # the time kept for a runner-up that never came goes to trials
            continue
        if reason is None:
            reason = _step(search, state, left)
        if reason is not None:
            return reason
    return StopReason.TRIALS


def _step(search: Search, state: RunState, left: float) -> StopReason | None:
    """Ask for one proposal and answer it: by a gate, or by measuring it."""
    state.asks += 1
    trial = search.study.ask()
    proposal = gates.Proposal(search.propose(trial), search.planner)
    ctx = gates.GateContext(search.space, search.book, search.target, search.options.prune_margin, left,
                            lambda a: expected_duration_s(search.book, a))
    verdict = gates.check(ctx, proposal)
    if verdict is not None:
        _answer(search, state, trial, proposal, verdict)
        return None
    state.skips = 0
    record, claim = _claim_and_measure(search, state, trial, proposal)
    if claim == "no slot" and not shared_study.wait_for_others(search, state.n_trials):
        return StopReason.OTHER_WORKERS
    if record is not None:  # else not measured here (claimed elsewhere, or lost: see run_trial)
        search.book.seen[proposal.key] = record
        state.measured_now += 1
        if state.on_trial:
            state.on_trial(record, state.measured_now, search.best())
    return None


def _answer(search: Search, state: RunState, trial: optuna.trial.Trial, proposal: gates.Proposal,
            verdict: gates.Verdict) -> None:
    """Store what a gate decided instead of a measurement."""
    if verdict.gate is gates.Gate.INVALID:
        ledger.write_invalid(search.study, trial)
    elif verdict.gate is gates.Gate.DUPLICATE:
        ledger.write_duplicate(search.study, trial, verdict.original)
    elif verdict.gate is gates.Gate.PRUNE:
        search.book.pruned[proposal.key] = run_trial.prune(
            search, trial, proposal.assignment, proposal.prediction, verdict.why)
    else:
        state.skips += 1
        ledger.write_skipped(search.study, trial, verdict.why)


def _claim_and_measure(search: Search, state: RunState, trial: optuna.trial.Trial,
                       proposal: gates.Proposal) -> tuple[TrialRecord | None, str | None]:
    """Claim the settings (a shared study) and measure them, the trial's heartbeat beating from
    the claim until it is told; returns the record and the claim's verdict (None: it held)."""
    record = None
    with shared_study.Heartbeat(search.storage, trial._trial_id):  # noqa: SLF001 (until it is told)
        claim = (shared_study.claim(search.study, trial, proposal.key, ledger.measured_keys, state.n_trials)
                 if search.shared else None)
        if claim is None:
            record = run_trial.measure(search, trial, proposal.assignment, proposal.prediction, state.timeout_s())
        else:
            ledger.write_skipped(search.study, trial, f"claim: {claim}")
    return record, claim

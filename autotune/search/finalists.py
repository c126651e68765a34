"""The confirmation, orchestrated: pick the finalists, plan the rounds for the time left, run the
sessions side by side (confirm.py decides), record the decision or why there was none."""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from autotune.knobs.space import assignment_key
from autotune.measure.measurer import leaves_process_state
from autotune.search import budget, clock
from autotune.search import confirm as confirming
from autotune.search import confirm_plan
from autotune.search.ranking import compile_share_s, cost_s
from autotune.search.run_trial import make_job
from autotune.search.trials import TrialRecord

if TYPE_CHECKING:
    from autotune.search.study import Search

log = logging.getLogger(__name__)

#: A compile again from a warm cache, as a share of the cold one (H100: 11 s of 73-78 s;
#: this CPU: 4.8 s of 47 s), rounded up: what reloading a compiled candidate costs.
WARM_COMPILE_SHARE = 0.25

Sessions = list[dict[int, list[float]]]


@dataclasses.dataclass(frozen=True)
class Decision:
    """The confirmation, or why the winner was not confirmed (both None: nothing to confirm)."""

    confirmation: confirming.Confirmation | None = None
    skipped: str | None = None
    #: Whether the skip is worth a warning (there was a runner-up to confirm).
    warn: bool = True


def candidate(search: Search, record: TrialRecord) -> confirm_plan.Candidate:
    """The record as a confirmation arm; its reload is estimated from the trial, except that
    a compile is paid again only in part (the compile cache is warm by then)."""
    t = record.measurement.phases
    compile_s = t.compile_s or 0.0
    load = t.load_s - compile_s + min(compile_s, _warm_compile_s(search, record))
    return confirm_plan.Candidate(record.number, record.assignment, cost_s(record, search.options.amortize),
                                record.measurement.peak_bytes or 0, load_s=load, spawn_s=budget.spawn_s(search.book),
                                own_worker=leaves_process_state(record.assignment))


def _warm_compile_s(search: Search, record: TrialRecord) -> float:
    """A compile of these settings from a warm cache: a share of the coldest compile of the same
    kind in the search, not of this trial's own (which may have been warm already: a share of
    that would be far too little)."""
    kind = budget.cost_class(record.assignment)
    cold = max((r.measurement.phases.compile_s or 0.0 for r in search.book.seen.values()
                if budget.cost_class(r.assignment) == kind), default=0.0)
    return WARM_COMPILE_SHARE * cold


def worker_room(search: Search) -> int:
    """Bytes one confirmation worker may hold: the ceiling it runs under, as a trial's does."""
    return search.target.max_vram


def memory_room(search: Search) -> int | None:
    """Bytes the confirmation's arms may hold together (they are loaded side by side)."""
    best = search.best()
    total = best.measurement.device_info.total_memory_bytes if best else None
    return int(0.9 * total) if search.target.device == "cuda" and total else None


def pick(search: Search) -> list[confirm_plan.Candidate]:
    feasible = search.book.feasible()
    if not feasible:
        return []
    return confirm_plan.pick_candidates([candidate(search, r) for r in feasible],
                                      within=confirm_plan.window(search.target.device), memory_room=memory_room(search))


def _reference_arm(search: Search, picked: list[confirm_plan.Candidate]) -> confirm_plan.Candidate | None:
    """The defaults, measured beside the finalists when they fit in the memory room."""
    defaults = search.book.seen.get(assignment_key(search.space.default()))
    if defaults is None or not defaults.feasible:
        return None
    arm = candidate(search, defaults)
    room = memory_room(search)
    if room is not None and sum(c.peak_bytes for c in picked) + arm.peak_bytes > room:
        return None  # no room to load the defaults beside the candidates
    return arm


def confirm(search: Search, deadline: float) -> Decision | None:
    """Re-measure the top candidates side by side; None when there is nothing to confirm."""
    compare = getattr(search.measurer, "compare", None)
    if compare is None or not search.book.feasible():
        return None
    picked = pick(search)
    if math.isinf(deadline):
        deadline = clock.now() + search.options.confirm_timeout_s
    device = search.target.device
    plan = confirm_plan.plan(picked, deadline - clock.now(), _reference_arm(search, picked),
                           rounds=confirm_plan.rounds(device), within=confirm_plan.window(device),
                           room=worker_room(search), runs_per_round=confirm_plan.runs_per_round(device))
    if plan.skipped:
        return Decision(skipped=plan.skipped, warn=len(picked) >= 2)
    if plan.dropped:
        log.info("confirming %d candidates (trials %s left out for time)", len(plan.candidates), plan.dropped)
    sessions, notes = _sessions(search, compare, plan, deadline)
    if len(sessions) < confirm_plan.SESSIONS:  # one session: its processes' offsets would decide it
        done = f"{len(sessions)} of {confirm_plan.SESSIONS} sessions completed"
        return Decision(skipped=f"the re-measurement did not complete ({done}): " + ("; ".join(notes) or "no rounds were timed"))
    reference = plan.reference.number if plan.reference is not None else None
    return Decision(confirmation=confirming.decide(plan.candidates, sessions, plan.runs_per_round,
                                                   "; ".join(notes), reference=reference))


def _sessions(search: Search, compare: Callable, plan: confirm_plan.Plan, deadline: float) -> tuple[Sessions, list[str]]:
    """Interleaved sessions, in new workers (shared by the arms that fit in one together) and
    alternating order, until the candidates are decided, the sessions run out or the time does."""
    arms = plan.arms
    amortize = search.options.amortize
    extra = {a.number: compile_share_s(search.book.by_number(a.number), amortize) for a in arms}
    candidates = {c.number for c in plan.candidates}
    sessions: Sessions = []
    notes: list[str] = []
    while arms:
        order = arms if len(sessions) % 2 == 0 else arms[::-1]  # new workers, the other order
        jobs = [make_job(search, a.settings, a.number) for a in order]
        medians, note = compare(jobs, plan.rounds + confirm_plan.WARMUP_ROUNDS, plan.runs_per_round, deadline,
                                groups=confirm_plan.worker_groups(order, plan.room))
        if note:
            notes.append(note)
        # the first rounds of a new worker are its warm-up; an amortized compile adds the same
        # share to every round
        session = {order[i].number: [v + extra[order[i].number] for v in values[confirm_plan.WARMUP_ROUNDS:]]
                   for i, values in medians.items()}
        if sum(1 for n in session if session[n] and n in candidates) < 2:
            break  # cut short (time, a failed load): what was complete decides
        sessions.append(session)
        if len(sessions) >= confirm_plan.max_sessions(search.target.device):
            break
        arms = _still_open(arms, candidates, sessions, plan)
        if arms and confirm_plan.plan_cost_s(arms, 1, plan.rounds, plan.runs_per_round, room=plan.room) > deadline - clock.now():
            notes.append(f"{len(arms)} candidates still undecided after {len(sessions)} sessions: no time for more")
            break
    return sessions, notes


def _still_open(arms: list[confirm_plan.Candidate], candidates: set[int], sessions: Sessions,
                plan: confirm_plan.Plan) -> list[confirm_plan.Candidate]:
    """Later sessions: the candidates still undecided (the reference arm has its two)."""
    still = set(confirming.open_arms([a.number for a in arms if a.number in candidates], sessions))
    if len(sessions) < confirm_plan.SESSIONS and plan.reference is not None:
        still.add(plan.reference.number)
    return [a for a in arms if a.number in still] if len(still & candidates) > 1 else []

"""The time budget: what a trial is expected to cost, and the time kept for the confirmation.

A trial starts only if its expected duration (earlier trials of the same cost class: the same
values of knobs that need a fresh process, e.g. compile) fits in what is left.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from autotune.knobs.space import Assignment
from autotune.search import clock
from autotune.search import confirm_plan
from autotune.search.book import Book

#: What starting a worker is taken to cost before one was timed (a fresh Python importing torch).
DEFAULT_SPAWN_S = 5.0
#: The reserve's plans, largest first, as (arms, sessions): the first that keeps at most
#: `RESERVE_SHARE` of the budget is kept, else the last (two candidates in the two sessions every
#: confirmation runs, the smallest plan). Simulated (decision_quality.py, 200 seeds, winners within
#: 2% of the best measured): the last alone put 94.5% there under 400 s, 87.5% under 800 s and 83.0%
#: under 1200 s; two arms in the three sessions that decide took 800 s to 94.0% and 1200 s to 86.5%;
#: three arms in three took 1200 s to 93.5%. Kept where they take more than half, larger
#: reserves took the time the search needed (400 s: 87.5%).
RESERVE_PLANS = ((3, confirm_plan.DECIDING_SESSIONS), (2, confirm_plan.DECIDING_SESSIONS), (2, confirm_plan.SESSIONS))
RESERVE_SHARE = 0.5


def cost_class(assignment: Assignment) -> tuple[tuple[str, Any], ...]:
    """The values that decide a trial's cost beyond its runs: those of knobs that need a fresh
    process (a compile is paid again by every trial that has one)."""
    from autotune import knobs

    return tuple((k.name, assignment[k.name]) for k in knobs.all_knobs()
                 if assignment.get(k.name) in k.process_state)


def expected_duration_s(book: Book, assignment: Assignment) -> float | None:
    """Median wall time of earlier trials of the same cost class; for a class not seen yet
    that needs a fresh process (another compile mode), the longest trial so far, so a new
    compile does not eat the time kept for the confirmation; None if nothing ran."""
    cls = cost_class(assignment)
    timed = [r for r in book.seen.values() if r.measurement.phases.wall_s is not None]
    walls = [r.measurement.phases.wall_s for r in timed if cost_class(r.assignment) == cls]
    if walls:
        return statistics.median(walls)
    if cls and timed:
        return max(r.measurement.phases.wall_s or 0.0 for r in timed)
    return None


def spawn_s(book: Book) -> float:
    """What starting a worker has cost here (a fresh Python importing torch and diffusers)."""
    spawns = [r.measurement.phases.spawn_s for r in book.seen.values() if r.measurement.phases.spawn_s is not None]
    return max(spawns) if spawns else DEFAULT_SPAWN_S


class ConfirmReserve:
    """Time kept for confirming the winner at the end of a budgeted search: the largest of
    `RESERVE_PLANS` that the budget allows, its candidates at `MIN_ROUNDS` in each session, with
    the margin `confirm_plan.plan` asks of every plan (without it, the time kept never fitted a plan).

    It is kept from the first feasible trial, a runner-up like the best standing in until there
    is one: kept only once a runner-up appeared, it came too late in most searches under a 400 s
    budget, after the compiles had spent the time (benchmarks/decision_quality.py). If no runner-up
    came while it was kept and no trial fits beside it, it is given back (`release`) for trials
    that fit in all the time left; a runner-up among those is confirmed if it still fits. Whether
    the reserve fits is judged once, when it is first wanted (and again after a release): if it
    no longer fits, stopping the search would buy nothing, so the search goes on and the end
    says why."""

    def __init__(self, deadline: float, wanted: bool, room: int | None = None) -> None:
        self.deadline, self.wanted = deadline, wanted
        self.budget_s = deadline - clock.now()
        self.room = room  # what one worker may hold (confirm.worker_groups)
        self._affordable: bool | None = None
        self._released = False

    def seconds(self, finalists: Callable[[], list[confirm_plan.Candidate]]) -> float:
        if math.isinf(self.deadline) or not self.wanted:
            return 0.0
        picked = finalists()
        if not picked or (self._released and len(picked) < 2) or self._affordable is False:
            return 0.0
        kept = [self._kept_s(picked, arms, sessions) for arms, sessions in RESERVE_PLANS]
        reserve = next((k for k in kept if k <= RESERVE_SHARE * self.budget_s), kept[-1])
        if self._affordable is None:
            self._affordable = reserve < self.deadline - clock.now()
        return reserve if self._affordable else 0.0

    def _kept_s(self, picked: list[confirm_plan.Candidate], arms: int, sessions: int) -> float:
        """A plan of `arms` of the finalists (runners-up like the best, until they come)."""
        chosen = (picked + [picked[0]] * arms)[:arms]
        return confirm_plan.PLAN_MARGIN * confirm_plan.plan_cost_s(chosen, sessions, confirm_plan.MIN_ROUNDS, room=self.room)

    def release(self, finalists: Callable[[], list[confirm_plan.Candidate]]) -> bool:
        """Give back a reserve kept for a runner-up that has not come; False if there is none to give."""
        if self._released or not self._affordable or len(finalists()) > 1:
            return False
        self._released, self._affordable = True, None
        return True

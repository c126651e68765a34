"""The time kept for the confirmation is what the confirmation's plan will ask for."""
from __future__ import annotations

import pytest

from autotune.search import budget, clock
from autotune.search import confirm_plan


def _finalists() -> list[confirm_plan.Candidate]:
    return [confirm_plan.Candidate(0, {}, 1.0, 10, load_s=20.0), confirm_plan.Candidate(1, {}, 1.1, 10, load_s=20.0)]


def test_the_reserve_is_a_plan_that_fits_with_its_margin():
    # the largest plan that keeps at most half of the budget: three arms (the best standing in
    # for the runner-up to come) in three sessions under 1000 s, two in three under 600 s, and
    # under 400 s the smallest plan, two in two
    best, second = _finalists()
    for budget_s, arms, sessions in ((1000.0, [best, second, best], 3), (600.0, [best, second], 3),
                                     (400.0, [best, second], 2)):
        reserve = budget.ConfirmReserve(clock.now() + budget_s, wanted=True).seconds(_finalists)
        cost = confirm_plan.plan_cost_s(arms, sessions, confirm_plan.MIN_ROUNDS)
        assert reserve == pytest.approx(confirm_plan.PLAN_MARGIN * cost), budget_s  # its margin, no slack beyond it
    plan = confirm_plan.plan(_finalists(), seconds_left=reserve)  # the smallest plan fits in what was kept
    assert plan.sessions == confirm_plan.SESSIONS and plan.skipped is None and plan.rounds == confirm_plan.MIN_ROUNDS
    assert budget.RESERVE_PLANS[-1] == (2, confirm_plan.SESSIONS)


def test_no_reserve_without_a_budget_a_feasible_trial_or_the_time_for_it():
    assert budget.ConfirmReserve(float("inf"), wanted=True).seconds(_finalists) == 0.0
    assert budget.ConfirmReserve(clock.now() + 1000.0, wanted=False).seconds(_finalists) == 0.0
    assert budget.ConfirmReserve(clock.now() + 1000.0, wanted=True).seconds(lambda: []) == 0.0
    short = budget.ConfirmReserve(clock.now() + 5.0, wanted=True)
    assert short.seconds(_finalists) == 0.0


def test_a_reserve_kept_for_a_runner_up_that_never_came_is_given_back_once():
    reserve = budget.ConfirmReserve(clock.now() + 1000.0, wanted=True)
    alone = lambda: _finalists()[:1]  # noqa: E731
    assert reserve.seconds(alone) > 0  # kept from the first feasible trial
    assert reserve.release(alone) and reserve.seconds(alone) == 0.0
    assert not reserve.release(alone)  # once
    assert reserve.seconds(_finalists) > 0  # a runner-up came after all: kept again while it fits


def test_a_reserve_with_a_runner_up_is_not_given_back():
    reserve = budget.ConfirmReserve(clock.now() + 1000.0, wanted=True)
    assert reserve.seconds(_finalists) > 0 and not reserve.release(_finalists)

"""Confirming the winner: the faster is kept unless a smaller one is shown equivalent, and a
process offset cannot pass for a difference (the plan's sizing: test_confirm_plan.py)."""
from __future__ import annotations

import pytest

from autotune.search import confirm
from autotune.search.confirm import decide, holm
from autotune.search.confirm_plan import Candidate

from search.test_confirm_plan import A, B, C, D, MiB  # the arms both modules compare


def test_a_consistent_difference_is_significant():
    rounds = {1: [1.00, 1.01, 0.99, 1.00, 1.02, 1.00], 2: [1.06, 1.07, 1.05, 1.06, 1.08, 1.05]}
    result = decide([A, B], [rounds, rounds, rounds], runs_per_round=3)
    assert result.winner == 1 and result.runner_up == 2
    assert result.significant and result.p_value == pytest.approx(2 / 2**18)
    assert result.margin == pytest.approx(0.06, abs=0.01)
    assert result.decided_by == "latency" and result.sessions == 3 and result.rounds == 18


def test_a_difference_within_the_noise_keeps_the_faster_not_the_smaller():
    # A is faster in most rounds, B in some: no evidence either way, and no evidence B is within
    # 2% of A either: B's smaller memory does not make it the winner (it stays an alternative)
    s1 = {1: [1.00, 1.05, 0.98, 1.02, 1.00, 1.04], 2: [1.03, 1.00, 1.01, 1.06, 1.03, 1.08]}
    s2 = {1: [1.01, 1.00, 0.99, 1.03, 1.00, 1.02], 2: [1.00, 1.04, 1.03, 1.02, 1.05, 1.01]}
    result = decide([A, B], [s1, s2], runs_per_round=3)
    assert result.winner == 1 and result.decided_by == "latency (not significant)"
    assert not result.significant


def test_a_shown_tie_goes_to_the_smaller_candidate():
    # B within +-0.5% of A in every round of both sessions: equivalent within 2%, and smaller
    s1 = {1: [1.00, 1.05, 0.98, 1.02, 1.00, 1.04], 2: [1.003, 1.052, 0.982, 1.021, 1.004, 1.041]}
    s2 = {1: [1.01, 1.00, 0.99, 1.03, 1.00, 1.02], 2: [1.012, 1.004, 0.991, 1.030, 1.003, 1.021]}
    s3 = {1: [1.02, 0.99, 1.00, 1.01, 1.00, 1.03], 2: [1.021, 0.995, 1.002, 1.012, 1.001, 1.030]}
    result = decide([A, B], [s1, s2, s3], runs_per_round=3)
    assert result.winner == 2 and result.decided_by.startswith("memory (latency equivalent within 2%")


def test_two_sessions_that_agree_by_chance_decide_nothing():
    # B 0.3% and 0.4% slower than A in two sessions: a t interval with one degree of freedom is
    # narrow when the two happen to agree, but two sessions cannot show equivalence, nor end the race
    s1 = {1: [1.0] * 6, 2: [1.003] * 6}
    s2 = {1: [1.0] * 6, 2: [1.004] * 6}
    result = decide([A, B], [s1, s2], runs_per_round=3)
    assert result.winner == 1 and result.decided_by == "latency (not significant)"
    assert confirm.open_arms([1, 2], [s1, s2]) == [1, 2]
    s3 = {1: [1.0] * 6, 2: [1.002] * 6}
    assert confirm.open_arms([1, 2], [s1, s2, s3]) == [1]  # a third agreeing session does


def test_a_process_offset_cannot_pass_for_a_difference():
    # B's worker in the first session ran 6% slow, in every round; in the second B is as fast as
    # A. Every round of one session agrees, but a session is one pair of processes: alone it
    # proves nothing, and with the second session the difference is not significant.
    s1 = {1: [1.00, 1.01, 0.99, 1.00, 1.02, 1.00], 2: [1.06, 1.07, 1.05, 1.06, 1.08, 1.06]}
    s2 = {1: [1.00, 1.01, 0.99, 1.00, 1.02, 1.00], 2: [0.99, 1.02, 0.98, 1.01, 1.01, 1.00]}
    assert not decide([A, B], [s1], runs_per_round=3).significant
    result = decide([A, B], [s1, s2], runs_per_round=3)
    assert result.winner == 1 and not result.significant
    # ...and it cannot make B "equivalent" either: the sessions disagree by 6%
    assert result.decided_by == "latency (not significant)"
    # so the race goes on for both
    assert confirm.open_arms([1, 2], [s1, s2]) == [1, 2]


def test_a_race_drops_a_rival_surely_slower_or_surely_equivalent():
    s1 = {1: [1.0] * 6, 2: [1.10] * 6, 4: [1.003] * 6}
    s2 = {1: [1.0] * 6, 2: [1.12] * 6, 4: [1.001] * 6}
    s3 = {1: [1.0] * 6, 2: [1.11] * 6, 4: [1.002] * 6}
    assert confirm.open_arms([1, 2, 4], [s1]) == [1, 2, 4]  # one session decides nothing
    assert confirm.open_arms([1, 2, 4], [s1, s2]) == [1, 2, 4]  # nor do two
    assert confirm.open_arms([1, 2, 4], [s1, s2, s3]) == [1]


def test_the_search_order_can_be_overturned():
    # B looked slower in the search but is consistently faster side by side.
    rounds = {1: [1.10] * 6, 2: [1.00] * 6}
    result = decide([A, B], [rounds, rounds, rounds], runs_per_round=3)
    assert result.winner == 2 and result.significant and result.decided_by == "latency"


def test_several_comparisons_are_holm_corrected():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # three rivals each slower in 5 of 6 rounds: p=0.22 alone, more after the correction
    fast = [1.0] * 6
    slow = [1.05, 1.05, 1.05, 1.05, 1.05, 0.99]
    result = decide([A, B, D, C], [{1: fast, 2: slow, 4: slow, 3: slow}], runs_per_round=3)
    assert result.winner == 1 and result.p_value == pytest.approx(3 * 7 / 32)


def test_the_reference_arm_gives_the_speed_up_side_by_side():
    defaults = Candidate(9, {"dtype": "fp32"}, latency_s=2.0, peak_bytes=1000 * MiB)
    rounds = {1: [1.0, 1.0, 1.0, 1.0], 2: [1.1, 1.1, 1.1, 1.1], 9: [1.5, 1.5, 1.5, 1.5]}
    result = decide([A, B], [rounds, rounds], runs_per_round=3, reference=defaults.number)
    assert result.winner == 1 and result.reference == 9
    assert result.speedup == pytest.approx(1.5)  # not the search's 2.0 / 1.0
    assert [c.number for c in result.candidates] == [1, 2]  # the reference never wins

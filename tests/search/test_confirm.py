"""Confirming the winner: the faster is kept unless a smaller one is shown equivalent, a process
offset cannot pass for a difference, and the plan fits the time left or is not run."""
from __future__ import annotations

import dataclasses

import pytest

from autotune.search import confirm
from autotune.search.confirm import Candidate, decide, holm, pick_candidates, plan

MiB = 2**20
A = Candidate(1, {"dtype": "fp16"}, latency_s=1.00, peak_bytes=800 * MiB, load_s=20.0)
B = Candidate(2, {"dtype": "bf16"}, latency_s=1.05, peak_bytes=600 * MiB, load_s=20.0)
C = Candidate(3, {"dtype": "fp32"}, latency_s=1.50, peak_bytes=900 * MiB, load_s=20.0)
D = Candidate(4, {"dtype": "fp16", "vae_slicing": True}, latency_s=1.06, peak_bytes=700 * MiB, load_s=20.0)


def test_candidates_are_those_within_the_window_of_the_best():
    assert [c.number for c in pick_candidates([C, B, A])] == [1, 2]
    assert [c.number for c in pick_candidates([C, B, A], within=0.6)] == [1, 2, 3]
    assert [c.number for c in pick_candidates([C, B, A], within=0.6, limit=2)] == [1, 2]
    # wider on a GPU (drift between trials) than on CPU
    assert confirm.window("cuda") == 2 * confirm.window("cpu") == pytest.approx(0.2)
    # the race is shorter on CPU, where each session pays a fresh worker per arm
    assert confirm.max_sessions("cpu") == confirm.DECIDING_SESSIONS < confirm.max_sessions("cuda")
    # on a device with room for only one pipeline at a time, the runner-up is left out
    assert [c.number for c in pick_candidates([A, B], memory_room=1000 * MiB)] == [1]


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


# -- sizing to the time left --------------------------------------------------------------------

def test_a_plan_that_fits_keeps_every_arm():
    reference = Candidate(9, {}, latency_s=2.0, peak_bytes=1000 * MiB, load_s=20.0)
    p = plan([B, A, D], seconds_left=10_000, reference=reference)
    assert [c.number for c in p.candidates] == [1, 2, 4] and p.reference == reference
    assert p.rounds == confirm.ROUNDS and p.sessions == confirm.SESSIONS and p.skipped is None


def test_short_time_drops_the_reference_then_the_slowest_then_rounds():
    reference = Candidate(9, {}, latency_s=2.0, peak_bytes=1000 * MiB, load_s=20.0)
    two = confirm.plan_cost_s([A, B], confirm.SESSIONS, confirm.ROUNDS)
    # a plan fits with a margin (its cost is an estimate)
    p = plan([A, B, D], seconds_left=two * confirm.PLAN_MARGIN + 1, reference=reference)
    assert p.reference is None and [c.number for c in p.candidates] == [1, 2] and p.dropped == [9, 4]
    assert p.rounds == confirm.ROUNDS and p.cost_s == two
    assert plan([A, B], seconds_left=two + 1).rounds < confirm.ROUNDS  # fits, but not with the margin
    fewer = plan([A, B], seconds_left=(two - 10) * confirm.PLAN_MARGIN)
    assert confirm.MIN_ROUNDS <= fewer.rounds < confirm.ROUNDS and fewer.skipped is None


def test_an_underpowered_confirmation_is_skipped_with_its_reason():
    # 2 candidates x 2 sessions x (20 s load + 4 rounds x 3 runs) = ~130 s; 60 s are left
    p = plan([A, B], seconds_left=60)
    assert p.skipped is not None and "no time to confirm" in p.skipped and "60 s were left" in p.skipped
    alone = plan([A], seconds_left=1e6)
    assert alone.skipped is not None and "no other candidate within 20%" in alone.skipped
    # the smallest plan runs where it fits without its margin: cut short, it decides no less
    # than a skip (the search order stands either way)
    least = confirm.plan_cost_s([A, B], confirm.SESSIONS, confirm.MIN_ROUNDS)
    tight = plan([A, B], seconds_left=least + 1)
    assert tight.skipped is None and tight.rounds == confirm.MIN_ROUNDS and tight.cost_s == least
    assert plan([A, B], seconds_left=least - 1).skipped is not None
    assert "within 10%" in plan([A], seconds_left=1e6, within=0.1).skipped


# -- which arms share a worker -------------------------------------------------------------------

def test_arms_share_a_worker_while_they_fit_under_its_ceiling():
    compiled = Candidate(5, {"compile": "full"}, latency_s=0.6, peak_bytes=100 * MiB, own_worker=True)
    assert confirm.worker_groups([A, B, D]) == [[0, 1, 2]]
    # 800 + 600 MiB fit in 1450 MiB, 700 more do not: D starts a second worker
    assert confirm.worker_groups([A, B, D], room=1450 * MiB) == [[0, 1], [2]]
    assert confirm.worker_groups([A, D, B], room=1450 * MiB) == [[0, 2], [1]]  # first fit, in order
    # an arm whose settings leave state in their process is alone, whatever the room
    assert confirm.worker_groups([A, compiled, B]) == [[0, 2], [1]]


def test_a_shared_worker_is_started_once_per_session():
    spawning = [dataclasses.replace(c, spawn_s=7.0) for c in (A, B, D)]
    alone = confirm.plan_cost_s(spawning, sessions=2, rounds=3, room=1 * MiB)  # nothing shares
    shared = confirm.plan_cost_s(spawning, sessions=2, rounds=3)
    assert alone - shared == pytest.approx(2 * 2 * 7.0)  # two starts fewer in each of two sessions
    assert shared == pytest.approx(confirm.plan_cost_s([A, B, D], sessions=2, rounds=3) + 2 * 7.0)
    assert plan(spawning, seconds_left=1e6, room=1500 * MiB).room == 1500 * MiB  # the sessions use it

"""Sizing the confirmation: which candidates are re-measured, which arms share a worker, and a
plan that fits the time left or is not run."""
from __future__ import annotations

import dataclasses

import pytest

from autotune.search import confirm_plan
from autotune.search.confirm_plan import Candidate, pick_candidates, plan

MiB = 2**20
#: Four arms, three within 10% of the fastest (test_confirm.py decides between the same).
A = Candidate(1, {"dtype": "fp16"}, latency_s=1.00, peak_bytes=800 * MiB, load_s=20.0)
B = Candidate(2, {"dtype": "bf16"}, latency_s=1.05, peak_bytes=600 * MiB, load_s=20.0)
C = Candidate(3, {"dtype": "fp32"}, latency_s=1.50, peak_bytes=900 * MiB, load_s=20.0)
D = Candidate(4, {"dtype": "fp16", "vae_slicing": True}, latency_s=1.06, peak_bytes=700 * MiB, load_s=20.0)


def test_candidates_are_those_within_the_window_of_the_best():
    assert [c.number for c in pick_candidates([C, B, A])] == [1, 2]
    assert [c.number for c in pick_candidates([C, B, A], within=0.6)] == [1, 2, 3]
    assert [c.number for c in pick_candidates([C, B, A], within=0.6, limit=2)] == [1, 2]
    # wider on a GPU (drift between trials) than on CPU
    assert confirm_plan.window("cuda") == 2 * confirm_plan.window("cpu") == pytest.approx(0.2)
    # the race is shorter on CPU, where each session pays a fresh worker per arm
    assert confirm_plan.max_sessions("cpu") == confirm_plan.DECIDING_SESSIONS < confirm_plan.max_sessions("cuda")
    # on a device with room for only one pipeline at a time, the runner-up is left out
    assert [c.number for c in pick_candidates([A, B], memory_room=1000 * MiB)] == [1]


# -- sizing to the time left --------------------------------------------------------------------

def test_a_plan_that_fits_keeps_every_arm():
    reference = Candidate(9, {}, latency_s=2.0, peak_bytes=1000 * MiB, load_s=20.0)
    p = plan([B, A, D], seconds_left=10_000, reference=reference)
    assert [c.number for c in p.candidates] == [1, 2, 4] and p.reference == reference
    assert p.rounds == confirm_plan.ROUNDS and p.sessions == confirm_plan.SESSIONS and p.skipped is None


def test_short_time_drops_the_reference_then_the_slowest_then_rounds():
    reference = Candidate(9, {}, latency_s=2.0, peak_bytes=1000 * MiB, load_s=20.0)
    two = confirm_plan.plan_cost_s([A, B], confirm_plan.SESSIONS, confirm_plan.ROUNDS)
    # a plan fits with a margin (its cost is an estimate)
    p = plan([A, B, D], seconds_left=two * confirm_plan.PLAN_MARGIN + 1, reference=reference)
    assert p.reference is None and [c.number for c in p.candidates] == [1, 2] and p.dropped == [9, 4]
    assert p.rounds == confirm_plan.ROUNDS and p.cost_s == two
    assert plan([A, B], seconds_left=two + 1).rounds < confirm_plan.ROUNDS  # fits, but not with the margin
    fewer = plan([A, B], seconds_left=(two - 10) * confirm_plan.PLAN_MARGIN)
    assert confirm_plan.MIN_ROUNDS <= fewer.rounds < confirm_plan.ROUNDS and fewer.skipped is None


def test_an_underpowered_confirmation_is_skipped_with_its_reason():
    # 2 candidates x 2 sessions x (20 s load + 4 rounds x 3 runs) = ~130 s; 60 s are left
    p = plan([A, B], seconds_left=60)
    assert p.skipped is not None and "no time to confirm" in p.skipped and "60 s were left" in p.skipped
    alone = plan([A], seconds_left=1e6)
    assert alone.skipped is not None and "no other candidate within 20%" in alone.skipped
    # the smallest plan runs where it fits without its margin: cut short, it decides no less
    # than a skip (the search order stands either way)
    least = confirm_plan.plan_cost_s([A, B], confirm_plan.SESSIONS, confirm_plan.MIN_ROUNDS)
    tight = plan([A, B], seconds_left=least + 1)
    assert tight.skipped is None and tight.rounds == confirm_plan.MIN_ROUNDS and tight.cost_s == least
    assert plan([A, B], seconds_left=least - 1).skipped is not None
    assert "within 10%" in plan([A], seconds_left=1e6, within=0.1).skipped


# -- which arms share a worker -------------------------------------------------------------------

def test_arms_share_a_worker_while_they_fit_under_its_ceiling():
    compiled = Candidate(5, {"compile": "full"}, latency_s=0.6, peak_bytes=100 * MiB, own_worker=True)
    assert confirm_plan.worker_groups([A, B, D]) == [[0, 1, 2]]
    # 800 + 600 MiB fit in 1450 MiB, 700 more do not: D starts a second worker
    assert confirm_plan.worker_groups([A, B, D], room=1450 * MiB) == [[0, 1], [2]]
    assert confirm_plan.worker_groups([A, D, B], room=1450 * MiB) == [[0, 2], [1]]  # first fit, in order
    # an arm whose settings leave state in their process is alone, whatever the room
    assert confirm_plan.worker_groups([A, compiled, B]) == [[0, 2], [1]]


def test_a_shared_worker_is_started_once_per_session():
    spawning = [dataclasses.replace(c, spawn_s=7.0) for c in (A, B, D)]
    alone = confirm_plan.plan_cost_s(spawning, sessions=2, rounds=3, room=1 * MiB)  # nothing shares
    shared = confirm_plan.plan_cost_s(spawning, sessions=2, rounds=3)
    assert alone - shared == pytest.approx(2 * 2 * 7.0)  # two starts fewer in each of two sessions
    assert shared == pytest.approx(confirm_plan.plan_cost_s([A, B, D], sessions=2, rounds=3) + 2 * 7.0)
    assert plan(spawning, seconds_left=1e6, room=1500 * MiB).room == 1500 * MiB  # the sessions use it

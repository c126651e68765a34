"""Confirming the winner: a difference within the noise is a tie, and ties go to less memory."""
from __future__ import annotations

import pytest

from autotune.confirm import Candidate, decide, pick_candidates

MiB = 2**20
A = Candidate(1, {"dtype": "fp16"}, latency_s=1.00, peak_bytes=800 * MiB)
B = Candidate(2, {"dtype": "bf16"}, latency_s=1.05, peak_bytes=600 * MiB)
C = Candidate(3, {"dtype": "fp32"}, latency_s=1.50, peak_bytes=900 * MiB)


def test_candidates_are_those_within_ten_percent_of_the_best():
    assert [c.number for c in pick_candidates([C, B, A])] == [1, 2]
    # on a device with room for only one pipeline at a time, the runner-up is left out
    assert [c.number for c in pick_candidates([A, B], memory_room=1000 * MiB)] == [1]


def test_a_consistent_difference_is_significant():
    rounds = {1: [1.00, 1.01, 0.99, 1.00, 1.02, 1.00], 2: [1.06, 1.07, 1.05, 1.06, 1.08, 1.05]}
    result = decide([A, B], rounds, runs_per_round=3)
    assert result.winner == 1 and result.runner_up == 2
    assert result.significant and result.p_value == pytest.approx(2 / 64)
    assert result.margin == pytest.approx(0.06, abs=0.01)
    assert result.decided_by == "latency"


def test_a_difference_within_the_noise_is_a_tie_won_by_less_memory():
    # A is faster in four rounds, B in two: no evidence, and B needs 200 MiB less.
    rounds = {1: [1.00, 1.05, 0.98, 1.02, 1.00, 1.04], 2: [1.02, 1.00, 1.01, 1.04, 0.99, 1.05]}
    result = decide([A, B], rounds, runs_per_round=3)
    assert result.winner == 2 and result.decided_by == "memory (latency tie)"
    assert not result.significant


def test_the_search_order_can_be_overturned():
    # B looked slower in the search but is consistently faster side by side.
    rounds = {1: [1.10] * 6, 2: [1.00] * 6}
    result = decide([A, B], rounds, runs_per_round=3)
    assert result.winner == 2 and result.significant and result.decided_by == "latency"

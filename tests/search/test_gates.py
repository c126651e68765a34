"""The gates a proposal passes before it is measured (search/gates.py)."""
from __future__ import annotations

import dataclasses
import math

from helpers.searches import MiB, small_space, target

from autotune.knobs.space import assignment_key
from autotune.measure.measurer import Measurement
from autotune.search import gates
from autotune.search.book import Book
from autotune.search.trials import TrialRecord


@dataclasses.dataclass
class Prediction:
    over_by: bool

    def surely_over(self, ceiling, margin):
        return self.over_by


class Planner:
    def __init__(self, over):
        self.over, self.asked = over, 0

    def predict(self, assignment):
        self.asked += 1
        return Prediction(self.over)


def ctx(book=None, left=math.inf, expected=None):
    return gates.GateContext(small_space(), book or Book(), target(100 * MiB), 0.1, left, lambda a: expected)


def test_a_new_valid_proposal_is_measured():
    assert gates.check(ctx(), gates.Proposal(small_space().default())) is None


def test_an_answered_proposal_points_at_its_original():
    default = small_space().default()
    book = Book()
    book.add(TrialRecord(4, default, Measurement(status="ok", backend="f", device_name="f", peak_metric="f"),
                         "feasible", 0.0))
    verdict = gates.check(ctx(book), gates.Proposal(default))
    assert verdict == gates.Verdict(gates.Gate.DUPLICATE, original=4) and book.answered(assignment_key(default))


def test_the_planner_is_asked_only_past_the_cheaper_gates():
    default = small_space().default()
    planner = Planner(over=True)
    assert gates.check(ctx(), gates.Proposal(default, planner)).gate is gates.Gate.PRUNE and planner.asked == 1
    assert gates.check(ctx(), gates.Proposal({**default, "dtype": "fp99"}, planner)).gate is gates.Gate.INVALID
    assert planner.asked == 1


def test_a_proposal_that_does_not_fit_the_time_left_is_skipped_saying_why():
    verdict = gates.check(ctx(left=10.0, expected=30.0), gates.Proposal(small_space().default()))
    assert verdict.gate is gates.Gate.SKIP and verdict.why == "expected 30 s, 10 s left"
    assert gates.check(ctx(left=40.0, expected=30.0), gates.Proposal(small_space().default())) is None

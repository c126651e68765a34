"""StopReason and the stop conditions of the loop (search/stop.py)."""
from __future__ import annotations

import json

import pytest

from autotune.search import stop
from autotune.search.stop import Progress, StopReason, should_stop


def progress(**kw) -> Progress:
    base = dict(known=0, space_size=10, asks=0, n_trials=5, seconds_left=float("inf"), skips=0)
    return Progress(**{**base, **kw})


def test_nothing_stops_a_fresh_loop():
    assert should_stop(progress()) is None


@pytest.mark.parametrize("kw, reason", [
    (dict(known=10), StopReason.SPACE_EXHAUSTED),
    (dict(asks=stop.max_asks(5)), StopReason.SAMPLER),
    (dict(seconds_left=0.0), StopReason.TIME_BUDGET),
    (dict(skips=stop.MAX_SKIPS), StopReason.NOTHING_FITS),
])
def test_each_condition_names_its_reason(kw, reason):
    assert should_stop(progress(**kw)) is reason


def test_the_space_is_checked_before_the_budget():
    assert should_stop(progress(known=10, seconds_left=0.0)) is StopReason.SPACE_EXHAUSTED


def test_a_spent_budget_is_said_before_proposals_that_do_not_fit():
    assert should_stop(progress(seconds_left=0.0, skips=stop.MAX_SKIPS)) is StopReason.TIME_BUDGET
    assert should_stop(progress(seconds_left=5.0, skips=stop.MAX_SKIPS - 1)) is None


def test_a_reason_is_its_stored_string():
    """Old results stored the plain strings: the enum reads them and writes them back."""
    for reason in StopReason:
        assert StopReason(reason.value) is reason and reason == reason.value and str(reason) == reason.value
    assert json.dumps({"stopped_by": StopReason.TIME_BUDGET}) == '{"stopped_by": "time budget"}'


def test_every_reason_says_what_stopped_the_search():
    for reason in StopReason:
        assert reason.describe()
    assert StopReason.TIME_BUDGET.describe(600) == "the --time-budget of 600 s"

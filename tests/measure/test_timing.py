"""Median intervals, the stopping rule and the sign test: the statistics a ranking rests on."""
from __future__ import annotations

import pytest

from autotune.measure.timing import RACE_MARGIN, StoppingRule, far_behind, median_ci, sign_test_p, timing_stats


def test_no_interval_below_six_runs():
    assert median_ci([1.0] * 5) is None
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)  # n=6: the extremes, 96.9%


def test_interval_narrows_with_runs_and_ignores_one_outlier():
    samples = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00, 50.0, 1.00, 1.01, 0.99, 1.0, 1.0, 1.0]
    low, high = median_ci(samples)
    assert 0.98 <= low <= 1.0 <= high <= 1.02  # the 50 s outlier cannot reach the interval


def test_stats_report_the_relative_half_width():
    stats = timing_stats([1.0, 1.0, 1.0, 1.0, 1.0, 1.1])
    assert stats.median_s == 1.0 and stats.ci_rel_half_width == pytest.approx(0.05)
    assert timing_stats([1.0, 2.0]).ci_rel_half_width is None


def test_stopping_rule_stops_on_precision_time_or_count():
    rule = StoppingRule(min_runs=6, max_runs=20, precision=0.02, time_cap_s=5.0)
    steady = [1.0] * 6
    noisy = [1.0, 1.5, 0.7, 1.2, 0.9, 1.3]
    assert not rule.done(steady[:5], 0.1)          # minimum first
    assert rule.done(steady, 0.1)                  # precise enough
    assert not rule.done(noisy, 0.1)               # keep going
    assert rule.done(noisy, 5.0)                   # out of time
    assert rule.done(noisy * 4, 0.1)               # out of runs (24 >= 20)
    assert not rule.done([9.0, 9.0], 18.0)         # slow runs: past the cap, still a median of 3
    assert rule.done([9.0, 9.0, 9.0], 27.0)
    with pytest.raises(ValueError):
        StoppingRule(min_runs=3, max_runs=2)


def test_sign_test():
    assert sign_test_p([1.1] * 6) == pytest.approx(2 / 64)   # all rounds agree: significant
    assert sign_test_p([1.1] * 5 + [0.9]) > 0.05             # one disagrees at n=6: not
    assert sign_test_p([1.0] * 6) == 1.0                      # ties carry no evidence


def test_a_trial_surely_slower_than_the_incumbent_stops_at_its_minimum_runs():
    noisy = [1.0, 1.4, 1.1, 1.3, 1.05, 1.35]  # ~25% spread: far from a 2% interval
    assert not StoppingRule(min_runs=6).done(noisy, elapsed_s=7.0)
    # the incumbent ran 0.8 s: even this trial's fastest run is > 10% slower, so it is out of the race
    assert StoppingRule(min_runs=6, incumbent_s=0.8).done(noisy, elapsed_s=7.0)
    # a trial that may still be near the top is timed to the precision target
    assert not StoppingRule(min_runs=6, incumbent_s=0.95).done(noisy, elapsed_s=7.0)
    # three runs at 1.25x and more are not yet 1.26x behind (`far_behind(3)`): the trial goes on
    assert not StoppingRule(min_runs=6, incumbent_s=0.8).done(noisy[:3], elapsed_s=3.5)


def test_a_trial_far_behind_the_incumbent_stops_after_one_run():
    rule = StoppingRule(min_runs=6, incumbent_s=0.4)
    assert rule.done([6.1], elapsed_s=6.1)           # 15x the incumbent: one run says enough
    assert not rule.done([0.79], elapsed_s=0.8)       # under 2x: the usual rule
    assert not rule.done([0.9, 0.5], elapsed_s=1.4)  # one run near it keeps the trial going
    assert not StoppingRule(min_runs=6).done([6.1], elapsed_s=6.1)  # no incumbent yet: no race


def test_the_further_behind_the_fewer_runs_a_trial_makes():
    rule = StoppingRule(min_runs=6, incumbent_s=1.0)
    assert far_behind(1) == 2.0 and far_behind(2) == pytest.approx(2 ** 0.5)
    assert rule.done([1.5, 1.45], elapsed_s=3.0)              # two runs both over 1.41x: out
    assert not rule.done([1.5, 1.35], elapsed_s=3.0)          # one under it: a third run
    assert rule.done([1.3, 1.28, 1.27], elapsed_s=4.0)        # three over 1.26x
    assert not rule.done([1.2, 1.18, 1.19, 1.2], elapsed_s=5.0)  # 1.18x after four: not yet (1.19x)
    # the ladder never goes below the racing margin, where the median's interval takes over
    assert far_behind(50) == pytest.approx(1 + RACE_MARGIN)
    assert not rule.done([1.09, 1.2, 1.095, 1.3, 1.1, 1.25, 1.4, 1.15], elapsed_s=9.0)


def test_a_run_longer_than_the_time_cap_still_stops_a_trial_far_behind_at_one_run():
    # a loaded machine: the incumbent ran 18 s, this trial's one run 104 s, past the 10 s cap
    assert StoppingRule(min_runs=6, time_cap_s=10.0, incumbent_s=18.0).done([104.0], elapsed_s=104.0)
    # not far behind: past the cap it still makes its three runs
    assert not StoppingRule(min_runs=6, time_cap_s=10.0, incumbent_s=18.0).done([30.0], elapsed_s=30.0)


def test_the_incumbent_travels_with_the_rule():
    rule = StoppingRule(incumbent_s=0.5)
    assert StoppingRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError):
        StoppingRule(incumbent_s=0.0)

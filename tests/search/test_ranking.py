"""One ranking and one Pareto front (search/ranking.py), used by the search and the report."""
from __future__ import annotations

import dataclasses

from autotune.measure.records import Measurement, Phases
from autotune.search.ranking import cost_s, fastest_feasible, feasible_front, pareto_front
from autotune.search.trials import TrialRecord


def record(number: int, latency: float, peak: int, compile_s: float = 0.0, outcome: str = "feasible") -> TrialRecord:
    m = Measurement(status="ok", backend="fake", device_name="fake", peak_metric="fake", latencies_s=[latency] * 3,
                    peak_bytes=peak, phases=Phases(compile_s=compile_s or None))
    return TrialRecord(number, {"n": number}, m, outcome, 0.0)


def test_amortize_adds_the_compile_share():
    r = record(0, 1.0, 10, compile_s=60.0)
    assert cost_s(r) == 1.0 and cost_s(r, amortize=60) == 2.0


def test_fastest_feasible_ignores_infeasible_and_breaks_ties_by_number():
    records = [record(2, 1.0, 10), record(1, 1.0, 20), record(0, 0.5, 5, outcome="over_ceiling")]
    assert fastest_feasible(records).number == 1


def test_front_keeps_only_undominated_trade_offs_cheapest_first():
    records = [record(0, 1.0, 100), record(1, 2.0, 50), record(2, 3.0, 60), record(3, 4.0, 10)]
    assert [r.number for r in feasible_front(records)] == [0, 1, 3]


def test_front_follows_amortize():
    """A compiled trial fast per image but slow to compile is dominated once its compile counts."""
    compiled, plain = record(0, 1.0, 100, compile_s=100.0), record(1, 1.5, 100)
    assert [r.number for r in feasible_front([compiled, plain])] == [0]
    assert [r.number for r in feasible_front([compiled, plain], amortize=10)] == [1]


def test_front_over_any_items():
    rows = [(0, 1.0, 5), (1, 2.0, 3), (2, 2.5, 4)]
    assert pareto_front(rows, lambda r: r[1], lambda r: r[2], lambda r: r[0]) == [(0, 1.0, 5), (1, 2.0, 3)]


def test_the_report_ranks_and_fronts_like_the_search():
    """The report's best and front follow --amortize, as the profile's winner and alternatives do."""
    from collections import Counter

    from autotune.report.trials import StudyRows, TrialRow

    compiled = TrialRow(0, "feasible", {"compile": "full"}, latency_s=1.0, peak_bytes=100, compile_s=100.0)
    plain = TrialRow(1, "feasible", {"compile": "none"}, latency_s=1.5, peak_bytes=100)
    rows = StudyRows(rows=[compiled, plain], ceiling=200, target={}, min_psnr=None, not_measured=Counter(), space={})
    assert rows.best() is compiled and rows.pareto() == [compiled]
    amortized = dataclasses.replace(rows, amortize=10)
    assert amortized.best() is plain and amortized.pareto() == [plain]

"""One ranking and one Pareto front for everyone: the search, its result, the report.

Trials rank by cost: the median latency plus, with `amortize` (images per process lifetime), the
compile time those images share, so a short job is not handed a long compile for a small gain.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from autotune.search.trials import TrialRecord

T = TypeVar("T")


def compile_share(compile_s: float, amortize: int | None) -> float:
    """A compile time spread over `amortize` images (0 when not amortizing)."""
    return compile_s / amortize if amortize else 0.0


def compile_share_s(record: TrialRecord, amortize: int | None) -> float:
    """The trial's compile time spread over `amortize` images (0 when not amortizing)."""
    return compile_share((record.measurement.phases.compile_s or 0.0), amortize)


def cost_s(record: TrialRecord, amortize: int | None = None) -> float:
    """What ranks trials: the median latency plus the amortized compile."""
    return (record.measurement.latency_median_s or math.inf) + compile_share_s(record, amortize)


def fastest(items: Iterable[T], cost: Callable[[T], float], number: Callable[[T], int]) -> T | None:
    """The cheapest item, the earlier one on a tie (None if there is none)."""
    ranked = list(items)
    return min(ranked, key=lambda i: (cost(i), number(i))) if ranked else None


def pareto_front(items: Iterable[T], cost: Callable[[T], float], peak: Callable[[T], float],
                 number: Callable[[T], int]) -> list[T]:
    """Items no other beats on both cost and peak, cheapest first (of equal ones, the earliest)."""
    ordered: Sequence[T] = sorted(items, key=lambda i: (cost(i), peak(i), number(i)))
    front, lowest = [], math.inf
    for item in ordered:
        if peak(item) < lowest:
            front.append(item)
            lowest = peak(item)
    return front


def fastest_feasible(records: Iterable[TrialRecord], amortize: int | None = None) -> TrialRecord | None:
    return fastest((r for r in records if r.feasible), lambda r: cost_s(r, amortize), lambda r: r.number)


def feasible_front(records: Iterable[TrialRecord], amortize: int | None = None) -> list[TrialRecord]:
    """The feasible trade-offs of a search: its alternatives under lower ceilings."""
    return pareto_front((r for r in records if r.feasible), lambda r: cost_s(r, amortize),
                        lambda r: float(r.measurement.peak_bytes if r.measurement.peak_bytes is not None else math.inf),
                        lambda r: r.number)

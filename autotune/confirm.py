"""Confirming the winner: is the fastest trial really faster, or did noise pick it?

A search measures each candidate once, minutes apart, while clocks, temperature and host load
drift. So the top feasible candidates (within `WITHIN` of the best) are measured again, side by
side: each in a fresh worker of its own, loaded once, then timed in interleaved rounds (A B C,
B C A, ...), so every round compares them under the same conditions. A candidate is slower only
if it lost in (nearly) every round — a sign test on the paired per-round ratios, which no drift
and no outlier can fake. Candidates not significantly slower than the fastest are a tie, and a
tie goes to the one that needs less memory.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from autotune.timing import sign_test_p

#: Candidates whose latency is within this fraction of the best are re-measured.
WITHIN = 0.10
#: At most this many candidates (each holds a loaded pipeline while the rounds run).
MAX_CANDIDATES = 4
#: Six rounds is the fewest for which a sign test can reach p < 0.05 (2/64).
ROUNDS = 6
RUNS_PER_ROUND = 3
SIGNIFICANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Candidate:
    number: int
    settings: dict[str, Any]
    latency_s: float  # as measured in the search
    peak_bytes: int


@dataclasses.dataclass
class Confirmation:
    """What the interleaved re-measurement decided, saved in the profile."""

    rounds: int
    runs_per_round: int
    candidates: list[dict[str, Any]]
    winner: int
    runner_up: int | None
    #: Runner-up's latency over the winner's, minus 1 (median of the per-round ratios).
    margin: float | None
    p_value: float | None
    significant: bool
    decided_by: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confirmation:
        return cls(**data)


def pick_candidates(records: Sequence[Candidate], within: float = WITHIN,
                    limit: int = MAX_CANDIDATES, memory_room: int | None = None) -> list[Candidate]:
    """The fastest candidate and those within `within` of it, fastest first; with
    `memory_room`, only as many as fit on the device together (they are loaded side by side)."""
    ranked = sorted(records, key=lambda c: (c.latency_s, c.number))
    if not ranked:
        return []
    best = ranked[0].latency_s
    picked: list[Candidate] = []
    used = 0
    for candidate in ranked:
        if candidate.latency_s > best * (1 + within) or len(picked) == limit:
            break
        if memory_room is not None and picked and used + candidate.peak_bytes > memory_room:
            continue
        picked.append(candidate)
        used += candidate.peak_bytes
    return picked


def _ratios(slower: Sequence[float], faster: Sequence[float]) -> list[float]:
    return [s / f for s, f in zip(slower, faster) if f > 0]


def decide(candidates: Sequence[Candidate], rounds: dict[int, list[float]], runs_per_round: int,
           note: str = "") -> Confirmation:
    """The winner from per-round block medians (`rounds[number]`, equal lengths)."""
    measured = [c for c in candidates if rounds.get(c.number)]
    if not measured:
        raise ValueError("no candidate was re-measured")
    n_rounds = min(len(rounds[c.number]) for c in measured)
    medians = {c.number: statistics.median(rounds[c.number][:n_rounds]) for c in measured}
    by_speed = sorted(measured, key=lambda c: (medians[c.number], c.number))
    fastest = by_speed[0]

    def slower_than(a: Candidate, b: Candidate) -> tuple[float, float]:
        ratios = _ratios(rounds[a.number][:n_rounds], rounds[b.number][:n_rounds])
        return statistics.median(ratios) - 1, sign_test_p(ratios)

    tied = [fastest] + [c for c in by_speed[1:]
                        if not (slower_than(c, fastest)[1] < SIGNIFICANCE and slower_than(c, fastest)[0] > 0)]
    winner = min(tied, key=lambda c: (c.peak_bytes, medians[c.number], c.number))
    others = [c for c in by_speed if c.number != winner.number]
    runner_up = others[0] if others else None
    margin = p_value = None
    if runner_up is not None:
        margin, p_value = slower_than(runner_up, winner)
    significant = p_value is not None and p_value < SIGNIFICANCE and (margin or 0) > 0
    if runner_up is None:
        decided_by = "only candidate"
    elif winner.number != fastest.number:
        decided_by = "memory (latency tie)"
    else:
        decided_by = "latency" if significant else "latency (not significant)"
    table = [{"number": c.number, "settings": c.settings, "search_latency_s": c.latency_s,
              "confirmed_latency_s": medians[c.number], "peak_bytes": c.peak_bytes,
              "round_medians_s": rounds[c.number][:n_rounds]} for c in by_speed]
    return Confirmation(rounds=n_rounds, runs_per_round=runs_per_round, candidates=table,
                        winner=winner.number, runner_up=runner_up.number if runner_up else None,
                        margin=margin, p_value=p_value, significant=significant,
                        decided_by=decided_by, note=note)

"""Confirming the winner: is the fastest trial really faster, or did noise pick it?

A search measures each candidate once, minutes apart, while clocks, temperature and host load
drift, and a fresh worker reads slow at first. So the top feasible candidates (within `window()` of
the best) are measured again side by side, with the defaults as a reference arm: a *session*
loads the arms in fresh workers, discards each arm's first round (its warm-up), then times
interleaved rounds whose order rotates (A B C, B C A, C A B), so every round compares the arms
under the same conditions and each holds each place equally often. The next session does the
same in new workers, in the reverse order. Arms share a worker while they fit under the ceiling
together (`worker_groups`), but for those whose settings leave state in their process (a
compile): a process that happens to run slow then slows all of its arms alike, and a session
starts one worker, not one per arm.

A session is the unit of evidence: a worker process that happens to run slow shifts all of its
rounds, and a loaded copy of a pipeline may run a little slower or faster than the next one, so
the rounds of one session are not independent. Each arm's log-ratio to another is taken per
session, and differences are judged by a t interval over sessions, Bonferroni-corrected for the
number of rivals. `SESSIONS` sessions always run; then the confirmation is a race
(`open_arms`): a rival leaves once it is surely slower than the leader or surely within
`EQUIVALENCE_MARGIN` of it either way, and further sessions time only the undecided, up to
`MAX_SESSIONS` and while time allows.

The decision keeps the fastest. A candidate that needs less memory wins instead only when it is
shown *equivalent* (its interval within the margin): a difference that is merely not significant
is not a tie. The runner-up's sign-test p-value over the pooled rounds is Holm-corrected over the
comparisons made, and "significant" also needs the session interval above 1. Exits, equivalence
and significance all need `DECIDING_SESSIONS` sessions: two that agree by chance prove nothing.

How many sessions and rounds fit, and which arms share a worker, is sized beforehand
(confirm_plan.py). Fewer than two complete sessions decide nothing: the search order stands, and
the reason is recorded.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import ClassVar

from autotune.knobs.space import Assignment
from autotune.measure.timing import mean_interval, sign_test_p
from autotune.plain_record import PlainRecord
from autotune.search.confirm_plan import DECIDING_SESSIONS, Candidate

SIGNIFICANCE = 0.05
#: A smaller candidate replaces a faster one only if it is shown at most this much slower.
EQUIVALENCE_MARGIN = 0.02


@dataclasses.dataclass(frozen=True)
class ConfirmedCandidate(PlainRecord):
    """One arm of the confirmation as the profile keeps it: its latency in the search and side
    by side, its peak, its ratio to the winner and in how many sessions it was timed."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "number": (int,), "settings": (dict,), "search_latency_s": (float,), "confirmed_latency_s": (float,),
        "peak_bytes": (int,), "vs_winner": (float,), "sessions": (int,), "p_value_holm": (float,),
        "round_medians_s": (list,)}

    number: int | None = None
    settings: Assignment | None = None
    search_latency_s: float | None = None
    confirmed_latency_s: float | None = None
    peak_bytes: int | None = None
    vs_winner: float | None = None
    sessions: int | None = None
    #: Holm-corrected sign-test p-value against the winner (None: the winner itself).
    p_value_holm: float | None = None
    round_medians_s: list[float] | None = None


@dataclasses.dataclass(frozen=True)
class Confirmation(PlainRecord):
    """What the interleaved re-measurement decided, saved in the profile and the study. Read as
    leniently as any profile section (plain_record.py): a field missing stays at its default."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "rounds": (int,), "runs_per_round": (int,), "candidates": (list,), "winner": (int,), "runner_up": (int,),
        "margin": (float,), "p_value": (float,), "significant": (bool,), "decided_by": (str,), "note": (str,),
        "sessions": (int,), "reference": (int,), "speedup": (float,), "speedup_ci": (list,),
        "equivalence_margin": (float,)}
    NESTED: ClassVar[dict[str, type[PlainRecord]]] = {"candidates": ConfirmedCandidate}

    rounds: int = 0  # timed rounds used, over all sessions
    runs_per_round: int = 0
    candidates: tuple[ConfirmedCandidate, ...] = ()
    winner: int | None = None
    runner_up: int | None = None
    #: Runner-up's latency over the winner's, minus 1 (median of the per-round ratios).
    margin: float | None = None
    #: Holm-corrected sign-test p-value of the runner-up against the winner.
    p_value: float | None = None
    significant: bool = False
    decided_by: str = ""
    note: str = ""
    sessions: int = 1
    #: The defaults, measured side by side as a reference arm (None: not measured).
    reference: int | None = None
    #: The reference's latency over the winner's (median of the per-round ratios) and its 95% interval.
    speedup: float | None = None
    speedup_ci: list[float] | None = None
    equivalence_margin: float = EQUIVALENCE_MARGIN

    def candidate(self, number: int | None) -> ConfirmedCandidate | None:
        return next((c for c in self.candidates if c.number == number), None) if number is not None else None

def _ratios(slower: Sequence[float], faster: Sequence[float]) -> list[float]:
    return [s / f for s, f in zip(slower, faster) if f > 0]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order (each compared with the same level)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def session_log_ratios(a: int, b: int, sessions: Sequence[dict[int, list[float]]]) -> list[float]:
    """log(a / b) per session where both were timed: the median of that session's paired
    per-round ratios. A session is one pair of worker processes, so these are independent."""
    out = []
    for session in sessions:
        ratios = _ratios(session.get(a, []), session.get(b, []))
        if ratios:
            out.append(math.log(statistics.median(ratios)))
    return out


def _level(rivals: int) -> float:
    """Two-sided confidence per comparison, Bonferroni over the rivals of the leader."""
    return 1 - 2 * SIGNIFICANCE / max(1, rivals)


def leader(numbers: Sequence[int], sessions: Sequence[dict[int, list[float]]]) -> int:
    """The arm with the lowest mean log-ratio against the first one, over their shared sessions."""
    anchor = numbers[0]

    def score(n: int) -> float:
        logs = session_log_ratios(n, anchor, sessions)
        return statistics.fmean(logs) if logs else 0.0

    return min(numbers, key=lambda n: (score(n), list(numbers).index(n)))


def open_arms(numbers: Sequence[int], sessions: Sequence[dict[int, list[float]]]) -> list[int]:
    """The leader and the rivals not yet decided against it: a rival is out once it is surely
    slower (its interval above 1) or surely within `EQUIVALENCE_MARGIN` either way (any pick is
    then good to the margin). Fewer than `DECIDING_SESSIONS` sessions decide nothing."""
    if len(sessions) < DECIDING_SESSIONS:
        return list(numbers)
    best = leader(numbers, sessions)
    rivals = [n for n in numbers if n != best]
    level = _level(len(rivals))
    bound = math.log(1 + EQUIVALENCE_MARGIN)
    still = [best]
    for n in rivals:
        interval = mean_interval(session_log_ratios(n, best, sessions), level)
        if interval is None:
            still.append(n)
            continue
        _, low, high = interval
        if not (low > 0 or (-bound < low and high < bound)):
            still.append(n)
    return still


def decide(candidates: Sequence[Candidate], sessions: Sequence[dict[int, list[float]]] | dict[int, list[float]],
           runs_per_round: int, note: str = "", reference: int | None = None) -> Confirmation:
    """The winner from per-round block medians: `sessions[s][number]` are one session's timed
    rounds (warm-up rounds already dropped; an arm dropped from later sessions is missing from
    them). A single dict is one session. `reference` names the defaults' arm, measured for the
    speed-up and never a winner unless it is also a candidate."""
    if isinstance(sessions, dict):
        sessions = [sessions]
    usable = [{n: v for n, v in s.items() if v} for s in sessions]
    usable = [s for s in usable if s]
    measured = [c for c in candidates if any(c.number in s for s in usable)]
    if not measured:
        raise ValueError("no candidate was re-measured")
    winner, fastest = _winner(measured, usable)

    def vs_winner(number: int) -> float:
        logs = session_log_ratios(number, winner.number, usable)
        return math.exp(statistics.fmean(logs)) if logs else math.nan

    rest = sorted((c for c in measured if c.number != winner.number), key=lambda c: (vs_winner(c.number), c.number))
    pooled_p = [sign_test_p([r for s in usable for r in _ratios(s.get(c.number, []), s.get(winner.number, []))])
                for c in rest]
    adjusted = dict(zip((c.number for c in rest), holm(pooled_p)))
    runner_up = rest[0] if rest else None
    margin = p_value = None
    significant = False
    if runner_up is not None:
        margin, p_value = vs_winner(runner_up.number) - 1, adjusted[runner_up.number]
        interval = mean_interval(session_log_ratios(runner_up.number, winner.number, usable), _level(len(rest)))
        shared = len(session_log_ratios(runner_up.number, winner.number, usable))
        significant = (p_value < SIGNIFICANCE and interval is not None and interval[1] > 0
                       and shared >= DECIDING_SESSIONS)
    speedup, speedup_ci = _speedup(reference, winner.number, usable)
    table = tuple(ConfirmedCandidate(
        number=c.number, settings=c.settings, search_latency_s=c.latency_s,
        confirmed_latency_s=statistics.median(_pooled(c.number, usable)), peak_bytes=c.peak_bytes,
        vs_winner=vs_winner(c.number) if c.number != winner.number else 1.0,
        sessions=sum(c.number in s for s in usable), p_value_holm=adjusted.get(c.number),
        round_medians_s=_pooled(c.number, usable)) for c in [winner, *rest])
    total_rounds = sum(len(s.get(winner.number, [])) for s in usable)
    return Confirmation(rounds=total_rounds, runs_per_round=runs_per_round, candidates=table,
                        winner=winner.number, runner_up=runner_up.number if runner_up else None,
                        margin=margin, p_value=p_value, significant=significant,
                        decided_by=_decided_by(runner_up is not None, winner is not fastest, significant),
                        note=note, sessions=len(usable), reference=reference,
                        speedup=speedup, speedup_ci=speedup_ci)


def _winner(measured: Sequence[Candidate], usable: Sequence[dict[int, list[float]]]) -> tuple[Candidate, Candidate]:
    """The winner and the fastest: the winner comes from the arms timed in the most sessions
    (the others were decided slower); a smaller arm shown equivalent in latency wins on memory."""
    most = max(sum(c.number in s for s in usable) for c in measured)
    finalists = [c for c in measured if sum(c.number in s for s in usable) == most]
    fastest_number = leader([c.number for c in finalists], usable)
    fastest = next(c for c in finalists if c.number == fastest_number)
    bound = math.log(1 + EQUIVALENCE_MARGIN)
    smaller = [c for c in finalists if c.number != fastest.number and c.peak_bytes < fastest.peak_bytes]
    if most < DECIDING_SESSIONS:
        smaller = []  # too few sessions to show equivalence
    equivalent = []
    for c in smaller:  # shown within the margin either way, at the Bonferroni level over those tested
        interval = mean_interval(session_log_ratios(c.number, fastest.number, usable), _level(len(smaller)))
        if interval is not None and -bound < interval[1] and interval[2] < bound:
            equivalent.append(c)
    winner = min(equivalent, key=lambda c: (c.peak_bytes, c.number)) if equivalent else fastest
    return winner, fastest


def _decided_by(has_runner_up: bool, on_memory: bool, significant: bool) -> str:
    if not has_runner_up:
        return "only candidate"
    if on_memory:
        return f"memory (latency equivalent within {100 * EQUIVALENCE_MARGIN:g}%)"
    return "latency" if significant else "latency (not significant)"


def _speedup(reference: int | None, winner: int,
             usable: Sequence[dict[int, list[float]]]) -> tuple[float | None, list[float] | None]:
    """The defaults' latency over the winner's, side by side, and its 95% interval."""
    if reference is None:
        return None, None
    logs = session_log_ratios(reference, winner, usable)
    if not logs:
        return None, None
    interval = mean_interval(logs)
    return math.exp(statistics.fmean(logs)), [math.exp(interval[1]), math.exp(interval[2])] if interval else None


def _pooled(number: int, usable: Sequence[dict[int, list[float]]]) -> list[float]:
    return [v for s in usable for v in s.get(number, [])]

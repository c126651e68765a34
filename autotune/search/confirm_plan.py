"""Sizing the confirmation: which candidates are re-measured, which share a worker, how many
sessions and rounds fit in the time left (the decision over what they measure is confirm.py).

The rounds are sized to the time left (`plan`): the reference arm, then the slowest candidates
are dropped, then rounds, until two sessions fit with a margin (`PLAN_MARGIN`); two candidates at
`MIN_ROUNDS` run without the margin where that is all that fits, and if even they do not fit, no
confirmation runs, and `Plan.skipped` says why.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from autotune.knobs.space import Assignment
from autotune.measure.timing import RACE_MARGIN

#: Candidates whose latency in the search is within this fraction of the best are re-measured.
#: On a GPU twice the racing margin (timing.RACE_MARGIN): each trial was timed once, minutes
#: apart, so clock drift and a process offset can put the truly fastest 15-20% behind the best
#: measured (benchmarks/results/2026-12-02-decision-quality-simulated.md: with 10%, most misses
#: were a truly fastest trial never re-measured); the race drops the clearly slower.
WITHIN = 2 * RACE_MARGIN
#: ... except where trials drift less: on CPU five separate trials of one setting spread 2.9%
#: (benchmarks/results/2026-11-27-search-cost-cpu-tiny-sd.md), and every session of a
#: confirmation costs a worker start (~6 s of imports here) and a load per arm.
WITHIN_BY_DEVICE = {"cpu": RACE_MARGIN}
#: At most this many candidates (each holds a loaded pipeline while the rounds run).
MAX_CANDIDATES = 8
#: Timed rounds per session, after the discarded warm-up round.
ROUNDS = 6
#: The fewest timed rounds per session a plan may shrink to (2 sessions x 3: a sign test over the
#: 6 pooled rounds can still reach p < 0.05).
MIN_ROUNDS = 3
#: On CPU, where one run barely differs from the next (the block medians of three runs of
#: builtin:tiny-sd-shapes spread 0.5% over a session's rounds here, a session of two arms took
#: 9-11 s, most of the README job's confirmation), a session times three rounds of one run each.
ROUNDS_BY_DEVICE = {"cpu": MIN_ROUNDS}
RUNS_PER_ROUND_BY_DEVICE = {"cpu": 1}
#: Rounds discarded at the start of every worker (its first runs read slow).
WARMUP_ROUNDS = 1
#: Sessions always run: each loads every arm in a fresh worker and times the rounds. A session
#: is the unit of evidence (a process offset is shared by all its rounds).
SESSIONS = 2
#: A rival leaves the race, and a smaller candidate is called equivalent, only on at least this
#: many sessions: two sessions that agree by chance give a t interval (one degree of freedom)
#: narrow enough to pass for a decision.
DECIDING_SESSIONS = 3
#: More sessions run, for the arms still undecided (`open_arms`), while time allows, up to this.
MAX_SESSIONS = 12
#: ... except on CPU, where every session starts a fresh worker (~6 s of imports here) and
#: near-tied fp32 settings keep the race open: the README's job confirming four of them ran past
#: 18 minutes, a worker per arm (benchmarks/results/2026-12-02-readme-job-cpu.md). Three decide,
#: or do not.
MAX_SESSIONS_BY_DEVICE = {"cpu": DECIDING_SESSIONS}
#: A plan must fit this many times over: its cost is estimated from the search's own loads, and
#: a session that outlasts it leaves a single session to decide (simulated, under a 400 s
#: budget: 1 in 20 searches decided on one session, up to 18% off the truly fastest).
PLAN_MARGIN = 1.25
#: Runs per round: the round's block median is what the arms are compared on.
RUNS_PER_ROUND = 3


@dataclasses.dataclass(frozen=True)
class Candidate:
    number: int
    settings: Assignment
    latency_s: float  # as measured in the search
    peak_bytes: int
    #: What loading it cost in the search (build, first run, compile), the worker's start aside.
    load_s: float = 0.0
    #: What starting a worker costs (paid once per worker, however many arms it holds).
    spawn_s: float = 0.0
    #: Its settings leave state in their process (a compile, a process-wide attention backend):
    #: it never shares a worker with another arm.
    own_worker: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the confirmation will measure, sized to the time left; `skipped` says why not."""

    candidates: list[Candidate]
    reference: Candidate | None
    sessions: int
    rounds: int  # timed rounds per session, after the warm-up rounds
    cost_s: float
    dropped: list[int] = dataclasses.field(default_factory=list)
    skipped: str | None = None
    #: The bytes one worker may hold (`worker_groups`); None: no limit.
    room: int | None = None
    runs_per_round: int = RUNS_PER_ROUND

    @property
    def arms(self) -> list[Candidate]:
        return self.candidates + ([self.reference] if self.reference is not None else [])


def max_sessions(device: str) -> int:
    """The most sessions a confirmation runs on `device`."""
    return MAX_SESSIONS_BY_DEVICE.get(device, MAX_SESSIONS)


def rounds(device: str) -> int:
    """Timed rounds per session on `device`, before the plan shrinks them to the time left."""
    return ROUNDS_BY_DEVICE.get(device, ROUNDS)


def runs_per_round(device: str) -> int:
    """Runs per round on `device`."""
    return RUNS_PER_ROUND_BY_DEVICE.get(device, RUNS_PER_ROUND)


def window(device: str) -> float:
    """How far behind the best a candidate may be and still be re-measured, on `device`."""
    return WITHIN_BY_DEVICE.get(device, WITHIN)


def pick_candidates(records: Sequence[Candidate], within: float | None = None,
                    limit: int | None = None, memory_room: int | None = None) -> list[Candidate]:
    """The fastest candidate and those within `within` (`WITHIN`) of it, fastest first, at most
    `limit` (`MAX_CANDIDATES`); with `memory_room`, only as many as fit on the device together
    (they are loaded side by side)."""
    within = WITHIN if within is None else within
    limit = MAX_CANDIDATES if limit is None else limit
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


def worker_groups(arms: Sequence[Candidate], room: int | None = None) -> list[list[int]]:
    """Which arms share a worker in a session (indices into `arms`): all of them, first-fit in
    order, while their peaks together fit in `room` (the ceiling a worker runs under), except an
    `own_worker` arm, which is alone. Arms sharing a process share its speed, so a process that
    happens to run slow slows all of them and their ratio does not move; and a session starts one
    worker instead of one per arm."""
    groups: list[list[int]] = []
    used: list[int] = []
    for i, arm in enumerate(arms):
        fits = [g for g, group in enumerate(groups) if not arms[group[0]].own_worker and not arm.own_worker
                and (room is None or used[g] + arm.peak_bytes <= room)]
        if fits:
            groups[fits[0]].append(i)
            used[fits[0]] += arm.peak_bytes
        else:
            groups.append([i])
            used.append(arm.peak_bytes)
    return groups


def plan_cost_s(arms: Sequence[Candidate], sessions: int, rounds: int,
                runs_per_round: int = RUNS_PER_ROUND, room: int | None = None) -> float:
    """Seconds to start the workers and load every arm `sessions` times and time its rounds
    (warm-up rounds included)."""
    spawns = sum(max(arms[i].spawn_s for i in group) for group in worker_groups(arms, room))
    per_session = spawns + sum(a.load_s + (rounds + WARMUP_ROUNDS) * runs_per_round * a.latency_s for a in arms)
    return sessions * per_session


def plan(candidates: Sequence[Candidate], seconds_left: float, reference: Candidate | None = None,
         sessions: int = SESSIONS, rounds: int = ROUNDS, min_rounds: int = MIN_ROUNDS,
         within: float | None = None, room: int | None = None, runs_per_round: int = RUNS_PER_ROUND) -> Plan:
    """The largest confirmation that fits in `seconds_left`: the reference arm goes first, then
    the slowest candidates (down to two), then rounds (down to `min_rounds`). `within` is the
    window the candidates were picked in (named when there is only one); `room` what one worker
    may hold (`worker_groups`)."""
    min_rounds = min(min_rounds, rounds)
    picked = sorted(candidates, key=lambda c: (c.latency_s, c.number))
    if reference is not None and any(c.number == reference.number for c in picked):
        reference = None  # the defaults are a candidate already
    dropped: list[int] = []
    if len(picked) < 2:
        return Plan(picked, reference, sessions, rounds, 0.0, room=room, runs_per_round=runs_per_round,
                    skipped="no other candidate within "
                    f"{100 * (WITHIN if within is None else within):.0f}% of the winner: nothing to re-measure")
    while True:
        arms = picked + ([reference] if reference is not None else [])
        cost = plan_cost_s(arms, sessions, rounds, runs_per_round, room=room)
        if cost * PLAN_MARGIN <= seconds_left:
            return Plan(picked, reference, sessions, rounds, cost, dropped, room=room, runs_per_round=runs_per_round)
        if reference is not None:
            dropped.append(reference.number)
            reference = None
        elif len(picked) > 2:
            dropped.append(picked.pop().number)
        elif rounds > min_rounds:
            rounds -= 1
        elif cost <= seconds_left:  # no margin left: a cut re-measurement decides nothing, as a skip
            return Plan(picked, None, sessions, rounds, cost, dropped, room=room, runs_per_round=runs_per_round)
        else:
            return Plan(picked, None, sessions, rounds, cost, dropped, room=room, runs_per_round=runs_per_round, skipped=(
                f"no time to confirm: {len(picked)} candidates x {sessions} sessions x {rounds} rounds "
                f"need ~{cost:.0f} s, {max(0.0, seconds_left):.0f} s were left"))

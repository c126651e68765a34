"""The gates a proposal passes before it is measured, each a small function with a verdict.

In order: not a valid combination, already answered (measured or pruned), predicted over the
ceiling (or over --max-ram) by the planner, not expected to fit in the time left. The first gate that answers decides;
a proposal no gate answers is measured.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from autotune.knobs.space import Assignment, SearchSpace, assignment_key
from autotune.search.book import Book
from autotune.planner.prediction import Prediction
from autotune.target import Target

if TYPE_CHECKING:
    from autotune.planner import Planner


class Gate(enum.Enum):
    """What a gate did with a proposal instead of measuring it."""

    INVALID = "invalid"
    DUPLICATE = "duplicate"
    PRUNE = "pruned by the planner"
    SKIP = "skipped (time budget)"


@dataclasses.dataclass(frozen=True)
class Verdict:
    gate: Gate
    #: The trial that already answers a duplicate.
    original: int | None = None
    #: Why a proposal was skipped, as stored on its trial.
    why: str = ""


@dataclasses.dataclass
class Proposal:
    """One sampled assignment; the planner's prediction is made only when a gate asks for it."""

    assignment: Assignment
    planner: Planner | None = None

    @functools.cached_property
    def key(self) -> str:
        return assignment_key(self.assignment)

    @functools.cached_property
    def prediction(self) -> Prediction | None:
        return self.planner.predict(self.assignment) if self.planner is not None else None


@dataclasses.dataclass(frozen=True)
class GateContext:
    space: SearchSpace
    book: Book
    target: Target
    prune_margin: float
    #: Seconds left before the deadline, less the time kept for the confirmation.
    seconds_left: float
    expected_s: Callable[[Assignment], float | None]


def invalid(ctx: GateContext, p: Proposal) -> Verdict | None:
    return None if ctx.space.is_valid(p.assignment) else Verdict(Gate.INVALID)


def duplicate(ctx: GateContext, p: Proposal) -> Verdict | None:
    original = ctx.book.answered(p.key)
    return Verdict(Gate.DUPLICATE, original=original.number) if original is not None else None


def planner_prune(ctx: GateContext, p: Proposal) -> Verdict | None:
    """Its lower bound is over the ceiling, or the host RAM its weights need is over --max-ram,
    by more than the margin: recorded, not run."""
    if p.prediction is None:
        return None
    if p.prediction.surely_over(ctx.target.max_vram, ctx.prune_margin):
        return Verdict(Gate.PRUNE, why="over --max-vram")
    if p.prediction.surely_over_ram(ctx.target.max_ram, ctx.prune_margin):
        return Verdict(Gate.PRUNE, why="over --max-ram")
    return None


def over_budget(ctx: GateContext, p: Proposal) -> Verdict | None:
    expected = ctx.expected_s(p.assignment)
    if expected is not None and expected > ctx.seconds_left:
        return Verdict(Gate.SKIP, why=f"expected {expected:.0f} s, {ctx.seconds_left:.0f} s left")
    return None


GATES = (invalid, duplicate, planner_prune, over_budget)


def check(ctx: GateContext, proposal: Proposal) -> Verdict | None:
    """The first gate's verdict, or None: measure it."""
    for gate in GATES:
        verdict = gate(ctx, proposal)
        if verdict is not None:
            return verdict
    return None

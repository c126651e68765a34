"""Why a search loop ended: one enum, the conditions that end it, and what each means in words.

Adding a reason touches this module (a member, its condition, its words) and its test.
"""
from __future__ import annotations

import dataclasses
import enum


class StopReason(str, enum.Enum):
    """Why the last run stopped (a str: stored, printed and compared as its value)."""

    TRIALS = "trials"
    SPACE_EXHAUSTED = "space exhausted"
    SAMPLER = "sampler"
    TIME_BUDGET = "time budget"
    NOTHING_FITS = "nothing fits the time left"
    OTHER_WORKERS = "other workers"
    EXPORTED = "exported"

    def __str__(self) -> str:
        return self.value

    def describe(self, budget_s: float | None = None) -> str:
        """What stopped the search, for the summary."""
        if self is StopReason.TIME_BUDGET:
            return f"the --time-budget of {budget_s:g} s" if budget_s else "the time budget"
        return _WORDS[self]


#: Proposals in a row that do not fit the time left before the search stops asking.
MAX_SKIPS = 3


_WORDS = {
    StopReason.TRIALS: "the requested number of trials was measured",
    StopReason.SPACE_EXHAUSTED: "every valid combination was measured",
    StopReason.SAMPLER: "the sampler kept proposing measured combinations",
    StopReason.NOTHING_FITS: f"{MAX_SKIPS} proposals in a row were each expected to take longer than the time left",
    StopReason.OTHER_WORKERS: "waiting too long for other processes' trials",
    StopReason.EXPORTED: "reading the stored study back (nothing was measured)",
}


def max_asks(n_trials: int) -> int:
    """Proposals one run may ask for before the sampler is taken to be stuck on measured ones."""
    return max(50, 20 * n_trials)


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the stop conditions look at, before each proposal."""

    known: int          # distinct settings measured or pruned so far (this study)
    space_size: int
    asks: int
    n_trials: int
    seconds_left: float  # before the deadline, less the time kept for the confirmation
    skips: int           # proposals in a row that did not fit the time left


def _space(p: Progress) -> StopReason | None:
    return StopReason.SPACE_EXHAUSTED if p.known >= p.space_size else None


def _sampler(p: Progress) -> StopReason | None:
    return StopReason.SAMPLER if p.asks >= max_asks(p.n_trials) else None


def _budget(p: Progress) -> StopReason | None:
    return StopReason.TIME_BUDGET if p.seconds_left <= 0 else None


def _nothing_fits(p: Progress) -> StopReason | None:
    """Time is left, but no proposal is expected to finish in it."""
    return StopReason.NOTHING_FITS if p.skips >= MAX_SKIPS else None


#: Checked in this order before each proposal; the first that answers ends the loop.
CONDITIONS = (_space, _sampler, _budget, _nothing_fits)


def should_stop(progress: Progress) -> StopReason | None:
    """The first stop condition that holds, or None to go on."""
    for condition in CONDITIONS:
        reason = condition(progress)
        if reason is not None:
            return reason
    return None

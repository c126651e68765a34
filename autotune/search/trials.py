"""What one trial came to: the record of a measured trial, its outcome under the ceiling and the
quality floor, a search's result and its summary for the profile.

How trials rank is ranking.py; how they are stored and read back, ledger.py.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any, Literal


from autotune.measure.measurer import Measurement
from autotune.knobs.space import Assignment
from autotune.planner.prediction import Prediction
from autotune.search import confirm as confirming
from autotune.search.ranking import fastest_feasible
from autotune.search.stop import StopReason
from autotune.search.summary import QualitySummary, ReferenceInfo, RefusedTrial, SearchSummary
from autotune.target import Target

Outcome = Literal["feasible", "over_ceiling", "over_ram", "below_quality", "oom", "failed", "pruned"]
IssueKind = Literal["unjudged", "broken_output", "exact_changed"]


@dataclasses.dataclass(frozen=True)
class QualityIssue:
    """Why the quality guard refused a trial beyond the floor: a lossy trial it could not judge,
    an output that is no image (NaN, flat), or an exact setting that changed the output (a bug in
    that knob, never a trade-off)."""

    kind: IssueKind
    message: str


@dataclasses.dataclass(frozen=True)
class QualityGuard:
    """How a search judges quality: the floors for lossy settings (`min_sqnr` per call, `min_psnr`
    on the final image where there is no per-call number or the error builds up across steps:
    quality.below_floor), the reference the numbers are against (reference.Reference.info(); its
    `problem` says why there is none) and whether lossy settings that could not be judged may
    still be feasible (`--allow-unjudged`). A guard stored before the per-call floor existed has
    `min_sqnr` None: its trials are judged on the final image, as they were."""

    min_psnr: float | None
    reference: ReferenceInfo | None = None
    allow_unjudged: bool = False
    min_sqnr: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reference, Mapping):  # as stored: an empty mapping is no reference
            object.__setattr__(self, "reference", ReferenceInfo.from_dict(self.reference) if self.reference else None)

    @property
    def problem(self) -> str | None:
        return self.reference.problem if self.reference else "no reference was made"

    @property
    def against(self) -> str:
        """What the quality numbers are against, in words."""
        ref = self.reference
        if ref is None or ref.problem:
            return f"nothing: {self.problem}"
        return f"the {ref.reference_dtype} reference (every knob at its exact default, {ref.made})"

    def to_dict(self) -> dict[str, Any]:
        return {"min_psnr": self.min_psnr, "min_sqnr": self.min_sqnr,
                "reference": self.reference.to_dict() if self.reference else None,
                "allow_unjudged": self.allow_unjudged}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityGuard:
        return cls(min_psnr=data.get("min_psnr"), reference=data.get("reference"),
                   allow_unjudged=bool(data.get("allow_unjudged", False)), min_sqnr=data.get("min_sqnr"))

    @property
    def has_floor(self) -> bool:
        return self.min_psnr is not None or self.min_sqnr is not None


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    number: int
    assignment: Assignment
    measurement: Measurement
    outcome: Outcome
    constraint: float
    #: The planner's prediction, when a planner was used.
    prediction: Prediction | None = None
    #: How far under the quality floor (<= 0 passes), see `quality_verdict`.
    quality_constraint: float = 0.0
    #: Why the quality guard refused it beyond the floor (None: no issue).
    quality_issue: QualityIssue | None = None

    @property
    def feasible(self) -> bool:
        return self.outcome == "feasible"


@dataclasses.dataclass
class SearchResult:
    target: Target
    records: list[TrialRecord]
    #: Candidates the planner predicted over the ceiling (never measured).
    pruned: list[TrialRecord]
    pareto: list[TrialRecord]
    study_name: str
    storage: str
    sampler: str
    seed: int
    duration_s: float
    proposals: int
    #: Why the last run stopped.
    stop_reason: StopReason = StopReason.TRIALS
    confirmation: confirming.Confirmation | None = None
    #: Why the winner was not re-measured side by side (None: it was, or there was nothing to do).
    confirmation_skipped: str | None = None
    #: Trials left running by a killed search, closed as failed on resume.
    interrupted: int = 0
    #: Trials copied from earlier searches of the same target under another ceiling.
    reused: int = 0
    #: The quality floor (PSNR, dB) and the settings of the reference output, when judged.
    min_psnr: float | None = None
    reference: Assignment | None = None
    #: The quality guard of the search (None: no quality was judged): the reference's settings,
    #: how it was made, or why there is none.
    guard: QualityGuard | None = None

    #: Images per process lifetime that compile time is spread over when ranking (None: ignore it).
    amortize: int | None = None

    def __post_init__(self) -> None:
        self.stop_reason = StopReason(self.stop_reason)

    @property
    def best(self) -> TrialRecord | None:
        """The confirmed winner when the top candidates were re-measured, else the fastest."""
        if self.confirmation is not None:
            for record in self.records:
                if record.number == self.confirmation.winner:
                    return record
        return fastest_feasible(self.records, self.amortize)

    @property
    def alternatives(self) -> list[TrialRecord]:
        best = self.best
        return [r for r in self.pareto if best is None or r.number != best.number]

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome == outcome for r in self.records)


ProgressFn = Callable[[TrialRecord, int, "TrialRecord | None"], None]


def classify(measurement: Measurement, ceiling: int, max_ram: int | None = None) -> tuple[Outcome, float]:
    """Outcome and constraint value (relative excess over the ceiling; <= 0 is feasible). With
    `max_ram`, a trial whose resident set peaked above it is over the host RAM ceiling (the
    constraint is then its relative excess): the worker's, less the pristine copy of the weights
    the worker keeps for the next trials, which a production process does not have."""
    if measurement.status == "pruned":
        return "pruned", math.nan
    if measurement.status == "failed":
        return "failed", math.nan
    if measurement.status == "oom":
        excess = measurement.memory.oom_excess_bytes
        return "oom", (excess / ceiling) if excess else 1.0
    if measurement.peak_bytes is None or measurement.latency_median_s is None:
        return "failed", math.nan
    constraint = (measurement.peak_bytes - ceiling) / ceiling
    if constraint > 0:
        return "over_ceiling", constraint
    rss = measurement.memory.trial_rss_peak
    if max_ram is not None and rss is not None and rss > max_ram:
        return "over_ram", (rss - max_ram) / max_ram
    return "feasible", constraint


def quality_verdict(assignment: Assignment, measurement: Measurement,
                    guard: QualityGuard | None) -> tuple[float, QualityIssue | None]:
    """The second constraint (<= 0 passes) and the issue that set it, if any.

    Any output must be an image (finite, not one flat colour: quality.broken_output). A setting
    of exact knob values only must also stay where float reordering keeps it
    (quality.exact_problem): failing that is a bug in a knob, never feasible. A lossy one must
    reach its floor (per call, or on the final image if its error builds up across steps: the
    cache); with no numbers against the reference it is not judged, so not feasible,
    unless the guard allows unjudged trials or has no floor. Without a guard nothing is judged."""
    from autotune import knobs
    from autotune.measure import quality as q

    if guard is None:
        return 0.0, None
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    changed = [f"{n}={v}" for n, v in assignment.items() if n in defaults and v != defaults[n]]
    lossy = [f"{n}={v}" for n, v in assignment.items() if n in defaults and knobs.get(n).is_lossy(v)]
    numbers = measurement.quality
    if numbers is None or numbers.psnr_db is None:
        if lossy and guard.has_floor and not guard.allow_unjudged:
            return 1.0, QualityIssue("unjudged", f"{' '.join(lossy)} is lossy and was not judged (quality "
                                             f"against {guard.against}); --allow-unjudged accepts such trials")
        return 0.0, None
    who = " ".join(changed) or "the default settings"
    broken = q.broken_output(numbers)
    if broken and lossy:
        return 1.0, QualityIssue("broken_output", f"{who} broke the output: {broken}")
    if not lossy:
        problem = q.exact_problem(numbers)
        if problem:
            return 1.0, QualityIssue("exact_changed", f"{who} changed the output: {problem}; these settings "
                                     "are declared exact, so this is a bug in the knob (or the device), not a trade-off")
        return 0.0, None
    return q.below_floor(numbers, guard.min_psnr, guard.min_sqnr, end_to_end=judged_end_to_end(assignment)), None


def judged_end_to_end(assignment: Assignment) -> bool:
    """Whether a lossy value of these settings has an error the per-call replay cannot see (the
    cache's builds up across steps), so that the floor judges the final image instead."""
    from autotune import knobs

    return any(k.is_judged_end_to_end(assignment[k.name]) for k in knobs.all_knobs() if k.name in assignment)


def judge(assignment: Assignment, measurement: Measurement, ceiling: int,
          guard: QualityGuard | None, max_ram: int | None = None) -> tuple[Outcome, float, float, QualityIssue | None]:
    """Outcome, memory constraint, quality constraint and quality issue of one measurement."""
    outcome, memory = classify(measurement, ceiling, max_ram)
    quality, issue = (quality_verdict(assignment, measurement, guard)
                      if outcome in ("feasible", "over_ceiling", "over_ram") else (0.0, None))
    if outcome == "feasible" and quality > 0:
        outcome = "below_quality"
    return outcome, memory, quality, issue


def search_summary(result: SearchResult) -> SearchSummary:
    return SearchSummary(
        trials_measured=len(result.records), feasible=result.count("feasible"),
        over_ceiling=result.count("over_ceiling"), over_ram=result.count("over_ram"),
        below_quality=result.count("below_quality"), oom=result.count("oom"), failed=result.count("failed"),
        pruned_by_planner=len(result.pruned), proposals=result.proposals, interrupted=result.interrupted,
        reused=result.reused, stopped_by=result.stop_reason.value,
        median_overhead_s=_median_overhead(result.records), amortize_images=result.amortize,
        quality=quality_summary(result), sampler=result.sampler, seed=result.seed,
        duration_s=round(result.duration_s, 2), study_name=result.study_name, storage=result.storage)


def quality_summary(result: SearchResult) -> QualitySummary | None:
    """The quality guard in a profile: the floor, the reference (settings, dtype, how it was made,
    or why there is none) and every trial it refused for more than the floor."""
    guard = result.guard
    if guard is None:  # an older study: the floor and the reference's settings only
        return (QualitySummary.from_dict({"min_psnr_db": result.min_psnr, "reference": result.reference})
                if result.reference else None)
    ref = guard.reference
    return QualitySummary(
        min_psnr_db=guard.min_psnr, min_sqnr_db=guard.min_sqnr, reference=result.reference, against=guard.against,
        reference_dtype=ref.reference_dtype if ref else None, reference_made=ref.made if ref else None,
        problem=guard.problem, allow_unjudged=guard.allow_unjudged,
        issues=tuple(RefusedTrial(trial=r.number, kind=r.quality_issue.kind, issue=r.quality_issue.message)
                     for r in result.records if r.quality_issue))


def quality_against(result: SearchResult, record: TrialRecord) -> str:
    """What one trial's quality numbers are against, in words, for its profile entry."""
    if result.guard is None:
        return "not judged: the search had no quality guard"
    if not record.measurement.quality:
        return f"not judged: {result.guard.problem or 'no quality numbers were recorded'}"
    return result.guard.against


def _median_overhead(records: list[TrialRecord]) -> float | None:
    values = [r.measurement.overhead_s for r in records if r.measurement.overhead_s is not None]
    return round(statistics.median(values), 3) if values else None

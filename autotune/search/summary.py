"""What a search leaves in its profile, typed: the summary (`SearchSummary`), the quality guard's
part of it (`QualitySummary`, with each refused trial as a `RefusedTrial`), and the reference a
guard judges against (`ReferenceInfo`). Written by search/trials.py; read and written back through
the profile's section codec (plain_record.py), so the YAML keys are the ones always written."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from autotune.knobs import Value
from autotune.plain_record import PlainRecord


@dataclasses.dataclass(frozen=True)
class ReferenceInfo(PlainRecord):
    """The reference outputs are judged against (search/reference.py `Reference.info()`): its
    file's key, dtype, settings, how it was made, or why there is none (`problem`)."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "key": (str,), "reference_dtype": (str,), "settings": (dict,), "made": (str,), "problem": (str,)}

    key: str | None = None
    reference_dtype: str | None = None
    settings: dict[str, Value] | None = None
    made: str | None = None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class RefusedTrial(PlainRecord):
    """A trial the quality guard refused beyond the floor, and why (trials.QualityIssue)."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {"trial": (int,), "kind": (str,), "issue": (str,)}

    trial: int | None = None
    kind: str | None = None
    issue: str | None = None


@dataclasses.dataclass(frozen=True)
class QualitySummary(PlainRecord):
    """The quality guard in a profile: the floor, the reference (its settings, dtype, how it was
    made, or why there is none) and every trial it refused for more than the floor."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "min_psnr_db": (float,), "min_sqnr_db": (float,), "reference": (dict,), "against": (str,),
        "reference_dtype": (str,), "reference_made": (str,), "problem": (str,), "allow_unjudged": (bool,), "issues": (list,)}
    NESTED: ClassVar[dict[str, type[PlainRecord]]] = {"issues": RefusedTrial}

    #: The floor on the final image (settings judged end to end; no per-call number).
    min_psnr_db: float | None = None
    #: The per-call floor for lossy settings (None: a study from before it existed, or off).
    min_sqnr_db: float | None = None
    #: The reference's settings.
    reference: dict[str, Value] | None = None
    against: str | None = None
    reference_dtype: str | None = None
    reference_made: str | None = None
    problem: str | None = None
    allow_unjudged: bool | None = None
    issues: tuple[RefusedTrial, ...] | None = None


@dataclasses.dataclass(frozen=True)
class SearchSummary(PlainRecord):
    """A search in its profile: how many trials came to what, why it stopped, its quality guard,
    the sampler and the study it is stored in (what `autotune report` reopens)."""

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        **{name: (int,) for name in (
            "trials_measured", "feasible", "over_ceiling", "over_ram", "below_quality", "oom", "failed",
            "pruned_by_planner", "proposals", "interrupted", "reused", "amortize_images", "seed")},
        "stopped_by": (str,), "median_overhead_s": (float,), "quality": (dict,), "sampler": (str,),
        "duration_s": (float,), "study_name": (str,), "storage": (str,)}
    NESTED: ClassVar[dict[str, type[PlainRecord]]] = {"quality": QualitySummary}

    trials_measured: int | None = None
    feasible: int | None = None
    over_ceiling: int | None = None
    over_ram: int | None = None
    below_quality: int | None = None
    oom: int | None = None
    failed: int | None = None
    pruned_by_planner: int | None = None
    proposals: int | None = None
    interrupted: int | None = None
    reused: int | None = None
    #: The StopReason's value ("trials", "time budget"...).
    stopped_by: str | None = None
    median_overhead_s: float | None = None
    amortize_images: int | None = None
    quality: QualitySummary | None = None
    sampler: str | None = None
    seed: int | None = None
    duration_s: float | None = None
    study_name: str | None = None
    storage: str | None = None

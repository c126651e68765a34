"""The study storage as autotune uses it: every Optuna attribute key, and the one writer and
reader of trials.

The keys are the strings older searches stored (old storages read as before; Optuna's dashboard
reads them too). A stored trial is read back as a `TrialRecord`, judged under the reader's
ceiling and guard, so one measurement answers several ceilings.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import StudyError
from autotune.knobs.space import Assignment, SearchSpace, assignment_key
from autotune.measure.measurer import Measurement
from autotune.planner.prediction import Prediction
from autotune.search import confirm as confirming
from autotune.search.trials import QualityGuard, SearchResult, TrialRecord, judge
from autotune.target import Target

log = logging.getLogger(__name__)

# -- trial attributes ---------------------------------------------------------------------------
ATTR_MEASUREMENT = "measurement"
ATTR_ASSIGNMENT = "assignment"
ATTR_OUTCOME = "outcome"
ATTR_PREDICTION = "prediction"
ATTR_ERROR = "error"
ATTR_QUALITY_ISSUE = "quality_issue"
ATTR_DUPLICATE = "duplicate_of"
ATTR_INVALID = "invalid"
ATTR_SKIPPED = "skipped"
ATTR_REUSED_FROM = "reused_from"
#: The reference key a trial's quality numbers are against (reference.Reference.key).
ATTR_JUDGED_AGAINST = "autotune:judged_against"
#: Several processes on one study (shared_study.py): the settings a trial is about to measure,
#: the trial's own number once its claim held, and which process measures it (host:pid).
ATTR_CLAIM = "autotune:claim"
ATTR_HOLDS = "autotune:holds"
ATTR_WORKER = "autotune:worker"

# -- study attributes ---------------------------------------------------------------------------
ATTR_TARGET = "target"
ATTR_TARGET_KEY = "target_key"
ATTR_MEASUREMENT_KEY = "measurement_key"
ATTR_SPACE = "space"
ATTR_MIN_PSNR = "autotune:min_psnr"
ATTR_REFERENCE = "autotune:reference"
#: The quality guard a study was searched with (QualityGuard.to_dict()).
ATTR_GUARD = "autotune:quality_guard"
ATTR_DURATION = "autotune:duration_s"
ATTR_CONFIRMATION = "autotune:confirmation"
#: Why the winner was not confirmed.
ATTR_CONFIRMATION_SKIPPED = "autotune:confirmation_skipped"
#: Images the compile time was spread over when ranking (absent in older studies: not amortized).
ATTR_AMORTIZE = "autotune:amortize"

# -- constraints (<= 0 feasible) and objectives ---------------------------------------------------
CONSTRAINT_MEMORY = "memory_over_ceiling"
CONSTRAINT_QUALITY = "quality_below_floor"
OBJECTIVES = ("latency_median_s", "peak_bytes")


def values(measurement: Measurement) -> list[float]:
    """The two objectives of a measurement (infinite where it has none)."""
    latency, peak = measurement.latency_median_s, measurement.peak_bytes
    return [math.inf if latency is None else latency, math.inf if peak is None else float(peak)]


# -- writing trials -------------------------------------------------------------------------------

def _write(trial: optuna.trial.Trial, record: TrialRecord) -> None:
    trial.set_user_attr(ATTR_ASSIGNMENT, record.assignment)
    trial.set_user_attr(ATTR_MEASUREMENT, record.measurement.to_dict())
    trial.set_user_attr(ATTR_OUTCOME, record.outcome)


def write_measured(study: optuna.Study, trial: optuna.trial.Trial, record: TrialRecord,
                   judged_against: str | None) -> None:
    """Store a measured trial and tell it: FAIL when it failed, else COMPLETE with its
    constraints. Raises optuna's UpdateFinishedTrialError when another process failed it first
    (raised before anything is written)."""
    _write(trial, record)
    if judged_against is not None:
        trial.set_user_attr(ATTR_JUDGED_AGAINST, judged_against)
    if record.quality_issue:
        trial.set_user_attr(ATTR_QUALITY_ISSUE, record.quality_issue.message)
    if record.prediction is not None:
        trial.set_user_attr(ATTR_PREDICTION, record.prediction.to_dict())
    if record.outcome == "failed":
        trial.set_user_attr(ATTR_ERROR, record.measurement.error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_constraint(CONSTRAINT_MEMORY, record.constraint)
    trial.set_constraint(CONSTRAINT_QUALITY, record.quality_constraint)
    study.tell(trial, values(record.measurement))


def write_pruned(study: optuna.Study, trial: optuna.trial.Trial, record: TrialRecord) -> None:
    """Store a trial the planner predicted over the ceiling (never run)."""
    _write(trial, record)
    trial.set_user_attr(ATTR_PREDICTION, record.prediction.to_dict() if record.prediction is not None else None)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def write_duplicate(study: optuna.Study, trial: optuna.trial.Trial, original: int) -> None:
    """A proposal already answered: PRUNED with a pointer to the original, so Optuna's tools
    (dashboard, importance, best_trials) do not count it twice."""
    trial.set_user_attr(ATTR_DUPLICATE, original)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def write_invalid(study: optuna.Study, trial: optuna.trial.Trial) -> None:
    trial.set_user_attr(ATTR_INVALID, True)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def write_skipped(study: optuna.Study, trial: optuna.trial.Trial, why: str) -> None:
    trial.set_user_attr(ATTR_SKIPPED, why)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def write_copy(study: optuna.Study, space: SearchSpace, record: TrialRecord, attrs: dict[str, Any],
               reused_from: str) -> int:
    """Add a trial measured by another study (reuse.py), judged here; returns its number."""
    params = {n: record.assignment[n] for n in space.searched_knobs}
    distributions = {n: optuna.distributions.CategoricalDistribution(list(space.choices[n]))
                     for n in space.searched_knobs}
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=distributions, values=values(record.measurement),
        user_attrs={**attrs, ATTR_OUTCOME: record.outcome, ATTR_REUSED_FROM: reused_from},
        constraints={CONSTRAINT_MEMORY: record.constraint, CONSTRAINT_QUALITY: record.quality_constraint}))
    return study.get_trials(deepcopy=False)[-1].number


# -- reading trials -------------------------------------------------------------------------------

def is_measured(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial holds a measurement of its own (not a pointer to another)."""
    return ATTR_MEASUREMENT in trial.user_attrs and ATTR_DUPLICATE not in trial.user_attrs


def not_measured_kind(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a proposal measured nothing ("duplicate", "invalid", "skipped (time budget)"), or None."""
    attrs = trial.user_attrs
    if ATTR_DUPLICATE in attrs:
        return "duplicate"
    if attrs.get(ATTR_INVALID):
        return "invalid"
    if ATTR_SKIPPED in attrs:
        return "skipped (time budget)"
    return None


def measurement_of(trial: optuna.trial.FrozenTrial) -> Measurement | None:
    stored = trial.user_attrs.get(ATTR_MEASUREMENT)
    return Measurement.from_dict(stored) if stored is not None else None


def assignment_of(trial: optuna.trial.FrozenTrial) -> Assignment:
    """The full settings of a trial (older trials without them: their sampled params)."""
    return dict(trial.user_attrs.get(ATTR_ASSIGNMENT) or trial.params)


def prediction_of(trial: optuna.trial.FrozenTrial) -> Prediction | None:
    """The planner's prediction stored with a trial (None: searched without the planner, or a
    stored prediction that cannot be read, which is logged: it informs, it decides nothing)."""
    stored = trial.user_attrs.get(ATTR_PREDICTION)
    if stored is None:
        return None
    try:
        return Prediction.from_dict(stored)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("trial %d: its stored prediction is left out: %s", trial.number, exc)
        return None


def outcome_of(trial: optuna.trial.FrozenTrial) -> str:
    return str(trial.user_attrs.get(ATTR_OUTCOME) or "")


def record_of(trial: optuna.trial.FrozenTrial, target: Target, guard: QualityGuard | None) -> TrialRecord:
    """A stored measured trial, judged under `target`'s ceilings and `guard`."""
    measurement = Measurement.from_dict(trial.user_attrs[ATTR_MEASUREMENT])
    assignment = trial.user_attrs[ATTR_ASSIGNMENT]
    outcome, constraint, quality, issue = judge(assignment, measurement, target.max_vram, guard, target.max_ram)
    return TrialRecord(trial.number, assignment, measurement, outcome, constraint, prediction_of(trial),
                       quality, issue)


def records_of(study: optuna.Study, target: Target, guard: QualityGuard | None) -> list[TrialRecord]:
    """Every measured (or pruned) trial of a study, judged under the target's ceiling."""
    return [record_of(t, target, guard) for t in study.get_trials(deepcopy=False) if is_measured(t)]


def measured_keys(trials: list[optuna.trial.FrozenTrial]) -> set[str]:
    """The settings measured (not pruned) in these trials."""
    return {assignment_key(t.user_attrs[ATTR_ASSIGNMENT]) for t in trials
            if is_measured(t) and t.user_attrs[ATTR_MEASUREMENT].get("status") != "pruned"}


def completed(study: optuna.Study) -> Iterator[optuna.trial.FrozenTrial]:
    """The COMPLETE trials that hold their own measurement (what another search may reuse)."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if is_measured(trial):
            yield trial


# -- study attributes -----------------------------------------------------------------------------

def write_header(study: optuna.Study, target: Target, min_psnr: float | None,
                 reference_dtype: str | None, amortize: int | None) -> None:
    """What the study was searched for (read back by `read_result`, the report, reuse)."""
    study.set_user_attr(ATTR_TARGET_KEY, target.key())
    study.set_user_attr(ATTR_MEASUREMENT_KEY, target.measurement_key())
    study.set_user_attr(ATTR_TARGET, target.to_dict())
    study.set_user_attr(ATTR_MIN_PSNR, min_psnr)
    reference = {"dtype": reference_dtype} if reference_dtype else None  # the knob on purpose: --reference-dtype
    study.set_user_attr(ATTR_REFERENCE, reference)
    study.set_user_attr(ATTR_AMORTIZE, amortize)


def write_guard(study: optuna.Study, guard: QualityGuard | None) -> None:
    study.set_user_attr(ATTR_GUARD, guard.to_dict() if guard is not None else None)


def stored_guard(attrs: dict[str, Any]) -> QualityGuard | None:
    """The quality guard a study was searched with, from its attributes (older studies stored
    only the floor and the reference dtype: their trials are judged as they were)."""
    stored = attrs.get(ATTR_GUARD)
    if stored is not None:
        return QualityGuard.from_dict(stored)
    if attrs.get(ATTR_REFERENCE) is None:
        return None
    return QualityGuard(min_psnr=attrs.get(ATTR_MIN_PSNR), reference=None, allow_unjudged=True)


def stored_confirmation(attrs: dict[str, Any]) -> confirming.Confirmation | None:
    stored = attrs.get(ATTR_CONFIRMATION)
    return confirming.Confirmation.from_dict(stored) if stored else None


def write_confirmation(study: optuna.Study, confirmation: confirming.Confirmation | None,
                       skipped: str | None) -> None:
    """The side-by-side decision, or why there was none."""
    if confirmation is not None:
        study.set_user_attr(ATTR_CONFIRMATION, confirmation.to_dict())
    study.set_user_attr(ATTR_CONFIRMATION_SKIPPED, skipped)


def open_storage(storage: str | Path, *, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """The study storage (storage.py), with heartbeats on databases so that several processes
    can share one study (shared_study.py)."""
    from autotune.search import shared_study
    from autotune.search.storage import open_storage as _open

    return _open(storage, must_exist=must_exist, heartbeat_interval=shared_study.HEARTBEAT_S,
                 grace_period=shared_study.GRACE_S)


def latest_study(storage: optuna.storages.BaseStorage, target_key: str) -> str | None:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)
             if s.user_attrs.get(ATTR_TARGET_KEY) == target_key]
    return sorted(names)[-1] if names else None


def load(storage: str | Path, study_name: str) -> optuna.Study:
    """A stored study by name; says which studies there are when it is not one."""
    study_storage = open_storage(storage, must_exist=True)
    try:
        return optuna.load_study(study_name=study_name, storage=study_storage)
    except KeyError:
        names = optuna.get_all_study_names(study_storage)
        hint = f"; it has {', '.join(names[-3:])}" if names else "; it has no study"
        raise StudyError(f"no study {study_name!r} in {storage}{hint}") from None


def read_result(storage: str | Path, study_name: str) -> SearchResult:
    """A study's result as stored, measuring nothing (`autotune export` of a shared study)."""
    from autotune.search.ranking import feasible_front
    from autotune.search.stop import StopReason

    study = load(storage, study_name)
    attrs = study.user_attrs
    if ATTR_TARGET not in attrs:
        raise StudyError(f"study {study_name!r} was not made by autotune search (it has no target)")
    target = Target.from_dict(dict(attrs[ATTR_TARGET]))
    guard = stored_guard(attrs)
    by_key: dict[str, TrialRecord] = {}
    for record in records_of(study, target, guard):
        by_key.setdefault(assignment_key(record.assignment), record)
    measured = sorted((r for r in by_key.values() if r.outcome != "pruned"), key=lambda r: r.number)
    pruned = sorted((r for r in by_key.values() if r.outcome == "pruned"), key=lambda r: r.number)
    amortize = attrs.get(ATTR_AMORTIZE)
    return SearchResult(
        target=target, records=measured, pruned=pruned, pareto=feasible_front(measured, amortize),
        study_name=study_name, storage=str(storage), sampler="TPESampler", seed=0,
        duration_s=float(attrs.get(ATTR_DURATION, 0.0)), proposals=len(study.get_trials(deepcopy=False)),
        stop_reason=StopReason.EXPORTED, confirmation=stored_confirmation(attrs),
        min_psnr=attrs.get(ATTR_MIN_PSNR), reference=attrs.get(ATTR_REFERENCE), guard=guard, amortize=amortize,
    )

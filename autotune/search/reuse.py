"""Reuse of earlier measurements: trials of other searches of the same model, size, batch and
device (another ceiling) are copied into a new study and judged under its ceiling: a trial
measured under 8GB with a 5GB peak is a feasible 6GB trial."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import optuna

from autotune.knobs.space import assignment_key
from autotune.measure.measurer import Measurement
from autotune.search import ledger
from autotune.search.trials import TrialRecord, judge

if TYPE_CHECKING:
    from autotune.search.study import Search

log = logging.getLogger(__name__)


def _usable(search: Search, trial: optuna.trial.FrozenTrial, measurement: Measurement, old_ceiling: int,
            here: str | None) -> bool:
    """An out-of-memory result is reused only from a ceiling at least as high as this one;
    failed trials are measured again, and so are trials measured on another device or judged
    against another reference."""
    assignment = trial.user_attrs[ledger.ATTR_ASSIGNMENT]
    return (assignment_key(assignment) not in search.book.seen and search.space.is_valid(assignment)
            and measurement.status in ("ok", "oom")
            and (here is None or measurement.device_name in (here, "fake"))
            and not (measurement.status == "oom" and old_ceiling < search.target.max_vram)
            and judged_here(search, trial, measurement))


def judged_here(search: Search, trial: optuna.trial.FrozenTrial, measurement: Measurement) -> bool:
    """Whether an earlier trial can be stored here as it is: its quality numbers are against
    this search's reference (or it ran out of memory, or nothing is judged). Any other is
    measured again, so every trial this search stores is judged against its reference."""
    if search.reference is None or measurement.status == "oom":
        return True
    return bool(measurement.quality) and trial.user_attrs.get(ledger.ATTR_JUDGED_AGAINST) == search.reference.key


def _copy(search: Search, trial: optuna.trial.FrozenTrial, measurement: Measurement, study_name: str) -> TrialRecord:
    assignment = trial.user_attrs[ledger.ATTR_ASSIGNMENT]
    t = search.target
    outcome, constraint, quality, issue = judge(assignment, measurement, t.max_vram, search.guard, t.max_ram)
    record = TrialRecord(-1, assignment, measurement, outcome, constraint, ledger.prediction_of(trial), quality, issue)
    number = ledger.write_copy(search.study, search.space, record, dict(trial.user_attrs),
                               f"{study_name}#{trial.number}")
    return TrialRecord(number, assignment, measurement, outcome, constraint, record.prediction, quality, issue)


def reuse_earlier(search: Search, storage: optuna.storages.BaseStorage, here: str | None) -> int:
    """Copy the usable trials of earlier searches of this measurement key; returns how many."""
    key = search.target.measurement_key()
    reused = 0
    for summary in optuna.get_all_study_summaries(storage):
        attrs = summary.user_attrs
        if summary.study_name == search.study_name or attrs.get(ledger.ATTR_MEASUREMENT_KEY) != key:
            continue
        if search.reference is None and attrs.get(ledger.ATTR_REFERENCE) is not None:
            continue  # judged trials are not mixed into a search without the guard
        old_ceiling = (attrs.get(ledger.ATTR_TARGET) or {}).get("max_vram", 0)
        earlier = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in ledger.completed(earlier):
            measurement = Measurement.from_dict(trial.user_attrs[ledger.ATTR_MEASUREMENT])
            if _usable(search, trial, measurement, old_ceiling, here):
                search.book.add(_copy(search, trial, measurement, summary.study_name))
                reused += 1
    if reused:
        log.info("reused %d trial(s) measured by earlier searches of this target", reused)
    return reused

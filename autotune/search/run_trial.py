"""One trial: measure the settings (racing the incumbent), judge them, store and tell the trial."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import optuna

from autotune.knobs.space import Assignment
from autotune.measure.measurer import Measurement, TrialJob
from autotune.planner.prediction import Prediction
from autotune.search import ledger, shared_study
from autotune.search.trials import TrialRecord, judge

if TYPE_CHECKING:
    from autotune.search.study import Search

log = logging.getLogger(__name__)


def make_job(search: Search, assignment: Assignment, number: int, incumbent_s: float | None = None) -> TrialJob:
    """The measurer's job for these settings, with this search's stopping rule and reference."""
    o, ref = search.options, search.reference
    reference = str(ref.path) if ref is not None and ref.exists else None
    return TrialJob(search.target, assignment, warmup=o.warmup, runs=o.runs, seed=o.seed, number=number,
                    precision=o.precision, time_cap_s=o.time_cap_s, reference=reference, incumbent_s=incumbent_s)


def measure(search: Search, trial: optuna.trial.Trial, assignment: Assignment, prediction: Prediction | None = None,
            timeout_s: float | None = None) -> TrialRecord | None:
    """Measure and store one trial; None when another process failed it meanwhile (its settings
    are back in the queue, this measurement is dropped)."""
    incumbent = search.best()  # racing: a trial surely slower than the best stops at its minimum runs
    job = make_job(search, assignment, trial.number, incumbent.measurement.latency_median_s if incumbent else None)
    log.info("trial %d: %s", trial.number, assignment)
    measurement = search.measurer(job, timeout_s=timeout_s)
    target = search.target
    outcome, constraint, quality, issue = judge(assignment, measurement, target.max_vram, search.guard, target.max_ram)
    if issue:
        log.warning("trial %d refused by the quality guard: %s", trial.number, issue.message)
    record = TrialRecord(trial.number, assignment, measurement, outcome, constraint, prediction, quality, issue)
    ref = search.reference
    judged = ref.key if job.reference is not None and measurement.quality and ref is not None else None
    try:
        ledger.write_measured(search.study, trial, record, judged)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %d was failed by another process while it was measured here (no heartbeat for "
                    "%d s): its settings are queued again and this measurement is dropped",
                    trial.number, shared_study.GRACE_S)
        return None
    return record


def prune(search: Search, trial: optuna.trial.Trial, assignment: Assignment, prediction: Prediction,
          why: str = "over --max-vram") -> TrialRecord:
    """A trial the planner predicted over a ceiling (`why` names it): recorded with the
    prediction, not run."""
    measurement = Measurement(status="pruned", backend="planner", device_name="-",
                              peak_metric=prediction.metric, error=f"pruned by the planner: {why}")
    record = TrialRecord(trial.number, assignment, measurement, "pruned", math.nan, prediction)
    ledger.write_pruned(search.study, trial, record)
    log.info("trial %d pruned %s: predicted %d bytes on the device (ceiling %d), %s in host RAM (--max-ram %s)",
             trial.number, why, prediction.total_bytes, search.target.max_vram, prediction.host_bytes,
             search.target.max_ram)
    return record

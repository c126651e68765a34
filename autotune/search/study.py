"""The search: Optuna ask/tell over the knob space, one measurement per distinct assignment.

Two objectives, latency and peak memory, both minimised, with the ceiling as a constraint
(`trial.set_constraint`, <= 0 feasible). The winner is the fastest feasible trial (ranking.py);
the feasible Pareto front gives the alternatives, so one search also answers lower ceilings.
Over the ceiling and out-of-memory are COMPLETE trials with a violated constraint (Optuna learns
constraints from COMPLETE trials only); crashes and timeouts are FAIL. Storage is any Optuna
storage: a journal file in the run directory by default, or a database URL. Every trial is in
the storage as soon as it is told, so a killed search loses nothing it finished.

`Search` is thin: the loop and its gates are loop.py, gates.py and stop.py; one trial,
run_trial.py; the time budget, budget.py; reuse of earlier trials, reuse.py; the confirmation,
finalists.py; what is stored, ledger.py; several processes on one study, shared_study.py.
"""
from __future__ import annotations

import datetime as dt
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna

from autotune import hardware
from autotune.errors import StudyError
from autotune.knobs.space import Assignment, SearchSpace, assignment_key, canonical
from autotune.measure.measurer import Measurer
from autotune.search import budget, finalists, ledger, loop, reuse
from autotune.search import reference as references
from autotune.search.book import Book
from autotune.search.options import SearchOptions
from autotune.search.ranking import feasible_front
from autotune.search.stop import StopReason
from autotune.search.ledger import open_storage
from autotune.search.trials import ProgressFn, QualityGuard, SearchResult, TrialRecord
from autotune.target import Target

log = logging.getLogger(__name__)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress replaces its per-trial INFO lines


class Search:
    """One study for one target. Build, then `run(n)`; `run` may be called again to add trials.

    `options` holds every default (options.py); keyword `overrides` replace single options
    (`Search(..., confirm=False)`) and are validated with them."""

    def __init__(self, target: Target, space: SearchSpace, measurer: Measurer, *, storage: str | Path,
                 options: SearchOptions | None = None, planner: Any = None, reference_dir: Path | None = None,
                 study_name: str | None = None, resume: bool = False, **overrides: Any) -> None:
        self.target, self.space, self.measurer, self.planner = target, space, measurer, planner
        self.options = (options or SearchOptions()).replace(**overrides) if overrides else (options or SearchOptions())
        self.storage_name = str(storage)
        self.storage = open_storage(storage, must_exist=resume)
        self.sampler = optuna.samplers.TPESampler(seed=self.options.seed, n_startup_trials=5)
        #: A named study is shared: other processes may measure in it at the same time, and its
        #: trial count is the study's total (shared_study.py).
        self.shared = study_name is not None
        self.study_name = _study_name(self.storage, self.storage_name, target, study_name, resume)
        #: The reference output of this target (reference.py), shared by every search of it in
        #: this run directory whatever the ceiling; None: quality is not judged.
        self.reference = references.locate(reference_dir, target, space.default(), self.options.reference_dtype,
                                           self.options.seed, hardware.device_name(target.device)) if reference_dir else None
        self._reference_checked = False
        self.study = _open_study(self.study_name, self.storage, self.sampler)
        _check_same_space(self.study, space, resume or self.shared)
        _check_same_target(self.study, self.study_name, target)
        ledger.write_header(self.study, target, self.options.min_psnr,
                            self.options.reference_dtype if reference_dir else None, self.options.amortize)
        ledger.write_guard(self.study, self.guard)
        self.interrupted = _fail_interrupted(self.study) if resume else 0
        self.book = Book()
        self.book.take(ledger.records_of(self.study, target, self.guard))
        #: Trials copied from earlier searches of the same measurement key (another ceiling).
        fresh = not self.study.get_trials(deepcopy=False)  # a shared study is seeded once, by its creator
        self.reused = (reuse.reuse_earlier(self, self.storage, hardware.device_name(target.device))
                       if self.options.reuse and not resume and fresh else 0)
        self.proposals = 0
        self.duration_s = float(self.study.user_attrs.get(ledger.ATTR_DURATION, 0.0))  # over resumed runs
        self.stop_reason = StopReason.TRIALS
        #: Why the winner was not re-measured, when it was not (printed by the CLI).
        self.confirmation_skipped: str | None = self.study.user_attrs.get(ledger.ATTR_CONFIRMATION_SKIPPED)
        self.confirmation = ledger.stored_confirmation(self.study.user_attrs)

    # -- what it knows ---------------------------------------------------------------------------

    @property
    def measured(self) -> list[TrialRecord]:
        return self.book.measured

    def best(self) -> TrialRecord | None:
        return self.book.best(self.options.amortize)

    def expected_duration_s(self, assignment: Assignment) -> float | None:
        return budget.expected_duration_s(self.book, assignment)

    @property
    def guard(self) -> QualityGuard | None:
        """How this search judges quality (None: it does not)."""
        if self.reference is None:
            return None
        o = self.options
        return QualityGuard(o.min_psnr, self.reference.info(), o.allow_unjudged, min_sqnr=o.min_sqnr)

    @property
    def reference_path(self) -> Path | None:
        return self.reference.path if self.reference is not None else None

    @property
    def has_reference(self) -> bool:
        return self.reference is not None and self.reference.exists

    def reference_assignment(self) -> Assignment:
        """The exact settings the quality reference is made with: every knob at its (exact)
        default, in the reference dtype (with offload where it did not fit the device)."""
        if self.reference is not None:
            return self.reference.settings
        return references.reference_settings(self.space.default(), self.options.reference_dtype)

    # -- the loop (loop.py) ---------------------------------------------------------------------

    def run(self, n_trials: int | None = None, on_trial: ProgressFn | None = None,
            time_budget_s: float | None = None) -> SearchResult:
        """Measure up to `n_trials` (default: the options') new distinct assignments, then confirm
        the winner; fewer if the space runs out or, with a time budget, once it is spent."""
        trials = self.options.trials if n_trials is None else n_trials
        self.stop_reason = loop.run(self, trials, on_trial, time_budget_s)
        return self.result()

    def enqueue(self, assignment: Assignment) -> None:
        if assignment_key(self.space.complete(assignment)) not in self.book.seen:
            params = {k: v for k, v in assignment.items() if k in self.space.searched_knobs}
            self.study.enqueue_trial(params, skip_if_exists=True)

    def propose(self, trial: optuna.trial.Trial) -> Assignment:
        params = {name: trial.suggest_categorical(name, list(self.space.choices[name]))
                  for name in self.space.searched_knobs}
        fixed = {name: values[0] for name, values in self.space.choices.items() if len(values) == 1}
        return canonical({**fixed, **params})

    def planner_seeds(self, n_trials: int) -> list[Assignment]:
        """Predicted-feasible candidates, likely-fastest first, measured before the sampler's picks."""
        if self.planner is None:
            return []
        from autotune.planner.seeding import seed_order

        feasible = [a for a in self.space if self.planner.predict(a).over(self.target.max_vram) <= 0]
        return seed_order(feasible, self.target.device, k=min(8, max(1, n_trials // 2)))

    def ensure_reference(self, timeout_s: float | None) -> None:
        """Make this target's reference if no search made it yet (reference.py), once per run:
        without the ceiling, so the guard judges at every ceiling; say so when it cannot."""
        if self.reference is None or self._reference_checked:
            return
        self._reference_checked = True
        from autotune import knobs

        can_offload = (self.target.device == "cuda" and knobs.get(references.OFFLOAD_KNOB).reason_unavailable(
            references.FALLBACK_OFFLOAD, self.space.ctx) is None)
        self.reference = references.make(self.reference, self.target, self.measurer, warmup=self.options.warmup,
                                         seed=self.options.seed, can_offload=can_offload, timeout_s=timeout_s)
        ledger.write_guard(self.study, self.guard)
        if self.reference.problem:
            log.warning("no quality reference (%s): lossy trials are not judged, so not feasible%s",
                        self.reference.problem,
                        "" if self.options.allow_unjudged else " (--allow-unjudged accepts them)")

    def record_decision(self, decision: finalists.Decision | None) -> None:
        """Keep (and store) the confirmation, or why the winner was not confirmed."""
        if decision is None:
            return
        if decision.confirmation is None:
            (log.warning if decision.warn else log.info)("the winner was not confirmed: %s", decision.skipped)
        else:
            self.confirmation = decision.confirmation
        self.confirmation_skipped = decision.skipped
        ledger.write_confirmation(self.study, decision.confirmation, decision.skipped)

    def result(self) -> SearchResult:
        o = self.options
        return SearchResult(
            target=self.target, records=self.measured, pruned=self.book.pruned_records,
            pareto=feasible_front(self.book.seen.values(), o.amortize),
            study_name=self.study_name, storage=self.storage_name, sampler=type(self.sampler).__name__,
            seed=o.seed, duration_s=self.duration_s, proposals=self.proposals, stop_reason=self.stop_reason,
            confirmation=self.confirmation, confirmation_skipped=self.confirmation_skipped,
            interrupted=self.interrupted, reused=self.reused, min_psnr=o.min_psnr, amortize=o.amortize,
            reference=self.reference_assignment() if self.has_reference else None, guard=self.guard,
        )


# -- opening a study ------------------------------------------------------------------------------

def _study_name(storage: optuna.storages.BaseStorage, storage_name: str, target: Target, name: str | None,
                resume: bool) -> str:
    """The given name, the latest study of this target (resume), or a new stamped one."""
    name = name or (ledger.latest_study(storage, target.key()) if resume else None)
    if resume and name is None:
        raise StudyError(f"nothing to resume for this target in {storage_name}; run without --resume to start")
    if name is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"{target.key()}-{stamp}"
    return name


def _open_study(name: str, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                directions=["minimize", "minimize"], load_if_exists=True)
    with warnings.catch_warnings():  # stable in practice; Optuna still flags it experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(ledger.OBJECTIVES))
    return study


def _check_same_target(study: optuna.Study, name: str, target: Target) -> None:
    stored = study.user_attrs.get(ledger.ATTR_TARGET)
    if stored is not None and stored != target.to_dict():
        raise StudyError(f"study {name!r} was started for another target ({stored.get('model')} "
                         f"{stored.get('width')}x{stored.get('height')} batch {stored.get('batch')}, ceiling "
                         f"{stored.get('max_vram')} bytes); use the same flags or another --study")


def _check_same_space(study: optuna.Study, space: SearchSpace, resume: bool) -> None:
    """Optuna cannot change a parameter's choices within a study: a resumed search must search
    the same space, or it fails half-way through its first trial."""
    choices = {name: list(values) for name, values in space.choices.items()}
    stored = study.user_attrs.get(ledger.ATTR_SPACE)
    if resume and stored is not None and stored != choices:
        changed = sorted(k for k in choices if stored.get(k) != choices[k])
        raise StudyError(
            f"the search to resume used other choices for {', '.join(changed)}; resume with the "
            "same --include/--exclude, or start a new search without --resume"
        )
    study.set_user_attr(ledger.ATTR_SPACE, choices)


def _fail_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a crashed or killed search are closed as FAIL on resume. (Only on
    resume: several workers sharing one storage need Optuna's heartbeats instead.)"""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if ledger.ATTR_MEASUREMENT not in trial.user_attrs and trial.params:  # measure it again first
            study.enqueue_trial(trial.params, skip_if_exists=False)
        log.warning("trial %d was interrupted; recorded as failed and queued again", trial.number)
    return len(running)

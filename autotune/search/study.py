"""The search: Optuna ask/tell over the knob space, one measurement per distinct assignment.

Two objectives, latency and peak memory, both minimised, with the ceiling as a constraint
(`trial.set_constraint`, <= 0 feasible). The winner is the fastest feasible trial; the feasible
Pareto front (Optuna's `best_trials`) gives the alternatives, so one search also answers lower
ceilings. Over the ceiling and out-of-memory are COMPLETE trials with a violated constraint
(Optuna learns constraints from COMPLETE trials only); crashes and timeouts are FAIL.
Storage is any Optuna storage: a journal file in the run directory by default, or a database URL.

With a time budget the search is a wall: a trial starts only if its expected duration (earlier
trials of the same cost class: the same values of knobs that need a fresh process, e.g. compile)
fits in what is left, a trial still running at the deadline is stopped and recorded, and time is
kept for confirming the winner (confirm.py) at the end. Every trial is in the storage as soon as
it is told, so a killed search loses nothing it finished.

What a trial came to (records, outcomes, ranking, a stored study read back) is trials.py;
several processes on one study, shared_study.py.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from autotune import hardware
from autotune.search import confirm as confirming
from autotune.search import reference as references
from autotune.search import shared_study
from autotune.errors import StudyError
from autotune.measure.measurer import Measurement, Measurer, TrialJob
from autotune.planner.calibration import DEFAULT_PRUNE_MARGIN
from autotune.knobs.space import Assignment, SearchSpace, assignment_key, canonical
from autotune.target import Target
from autotune.search.trials import (
    ATTR_ASSIGNMENT,
    ATTR_CONFIRMATION,
    ATTR_DUPLICATE,
    ATTR_DURATION,
    ATTR_GUARD,
    ATTR_JUDGED_AGAINST,
    ATTR_MEASUREMENT,
    ATTR_SKIPPED,
    OBJECTIVES,
    ProgressFn,
    QualityGuard,
    SearchResult,
    TrialRecord,
    compile_share_s,
    cost_s,
    fastest_feasible,
    judge,
    open_storage,
    records_of,
)

log = logging.getLogger(__name__)

#: Proposals in a row that do not fit the time left before the search stops asking.
_MAX_SKIPS = 3
#: A search without a time budget still bounds the confirmation rounds.
_CONFIRM_TIMEOUT_S = 3600.0
#: A compile again from a warm cache, as a share of the cold one (H100: 11 s of 73-78 s;
#: this CPU: 4.8 s of 47 s), rounded up: what reloading a compiled candidate costs.
_WARM_COMPILE_SHARE = 0.25
#: Why the winner was not confirmed (a study attribute, beside trials.ATTR_CONFIRMATION).
ATTR_CONFIRMATION_SKIPPED = "autotune:confirmation_skipped"


def _latest_study(storage: optuna.storages.BaseStorage, target_key: str) -> str | None:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)
             if s.user_attrs.get("target_key") == target_key]
    return sorted(names)[-1] if names else None


optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress replaces its per-trial INFO lines


class Search:
    """One study for one target. Build, then `run(n)`; `run` may be called again to add trials."""

    def __init__(self, target: Target, space: SearchSpace, measurer: Measurer, *,
                 storage: str | Path, seed: int = 0, resume: bool = False,
                 warmup: int = 1, runs: int = 6, planner: Any = None,
                 prune_margin: float = DEFAULT_PRUNE_MARGIN, precision: float = 0.02,
                 time_cap_s: float = 10.0, confirm: bool = True,
                 min_psnr: float | None = None, reference_dir: Path | None = None,
                 reference_dtype: str = "fp32", amortize: int | None = None, reuse: bool = True,
                 study_name: str | None = None, allow_unjudged: bool = False) -> None:
        self.target, self.space, self.measurer = target, space, measurer
        self.min_psnr, self.reference_dtype = min_psnr, reference_dtype
        self.amortize = amortize
        self.planner, self.prune_margin = planner, prune_margin
        self.seed, self.warmup, self.runs = seed, warmup, runs
        self.precision, self.time_cap_s, self.confirm = precision, time_cap_s, confirm
        self.storage_name = str(storage)
        self._storage = open_storage(storage, must_exist=resume)
        self.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
        #: A named study is shared: other processes may measure in it at the same time, and its
        #: trial count is the study's total (shared_study.py).
        self.shared = study_name is not None
        name = study_name or (_latest_study(self._storage, target.key()) if resume else None)
        if resume and name is None:
            raise StudyError(
                f"nothing to resume for this target in {self.storage_name}; run without --resume to start"
            )
        if name is None:
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            name = f"{target.key()}-{stamp}"
        self.study_name = name
        #: The reference output of this target (reference.py), shared by every search of it in
        #: this run directory whatever the ceiling; None: quality is not judged.
        self.reference = references.locate(reference_dir, target, space.default(), reference_dtype, seed,
                                           hardware.device_name(target.device)) if reference_dir is not None else None
        self.allow_unjudged = allow_unjudged
        self._reference_checked = False
        self.study = optuna.create_study(
            study_name=name, storage=self._storage, sampler=self.sampler,
            directions=["minimize", "minimize"], load_if_exists=True,
        )
        with warnings.catch_warnings():  # stable in practice; Optuna still flags it experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(list(OBJECTIVES))
        self._check_same_space(resume or self.shared)
        self._check_same_target()
        self.study.set_user_attr("target_key", target.key())
        self.study.set_user_attr("measurement_key", target.measurement_key())
        self.study.set_user_attr("target", target.to_dict())
        self.study.set_user_attr("autotune:min_psnr", min_psnr)
        reference = {"dtype": reference_dtype}  # the knob on purpose: --reference-dtype
        self.study.set_user_attr("autotune:reference", reference if reference_dir else None)
        self._store_guard()
        self.interrupted = self._fail_interrupted() if resume else 0
        self._seen: dict[str, TrialRecord] = {}
        self._pruned: dict[str, TrialRecord] = {}
        for record in self._records_from_storage():
            book = self._pruned if record.outcome == "pruned" else self._seen
            book.setdefault(assignment_key(record.assignment), record)
        #: Trials copied from earlier searches of the same measurement key (another ceiling).
        fresh = not self.study.get_trials(deepcopy=False)  # a shared study is seeded once, by its creator
        self.reused = self._reuse_earlier_measurements() if reuse and not resume and fresh else 0
        self.proposals = 0
        self.duration_s = float(self.study.user_attrs.get(ATTR_DURATION, 0.0))  # over resumed runs
        self.stop_reason = "trials"
        #: Why the winner was not re-measured, when it was not (printed by the CLI).
        self.confirmation_skipped: str | None = self.study.user_attrs.get(ATTR_CONFIRMATION_SKIPPED)
        stored = self.study.user_attrs.get(ATTR_CONFIRMATION)
        self.confirmation = confirming.Confirmation.from_dict(stored) if stored else None

    # -- bookkeeping ---------------------------------------------------------------------------

    def _check_same_target(self) -> None:
        stored = self.study.user_attrs.get("target")
        if stored is not None and stored != self.target.to_dict():
            raise StudyError(f"study {self.study_name!r} was started for another target ({stored.get('model')} "
                             f"{stored.get('width')}x{stored.get('height')} batch {stored.get('batch')}, ceiling "
                             f"{stored.get('max_vram')} bytes); use the same flags or another --study")

    def _check_same_space(self, resume: bool) -> None:
        """Optuna cannot change a parameter's choices within a study: a resumed search must search
        the same space, or it fails half-way through its first trial."""
        choices = {name: list(values) for name, values in self.space.choices.items()}
        stored = self.study.user_attrs.get("space")
        if resume and stored is not None and stored != choices:
            changed = sorted(k for k in choices if stored.get(k) != choices[k])
            raise StudyError(
                f"the search to resume used other choices for {', '.join(changed)}; resume with the "
                "same --include/--exclude, or start a new search without --resume"
            )
        self.study.set_user_attr("space", choices)

    def _reuse_earlier_measurements(self) -> int:
        """Copy the trials of earlier searches with the same model, size, batch and device (and
        another ceiling) into this study, judged under this ceiling: a trial measured under 8GB
        with a 5GB peak is a feasible 6GB trial. An out-of-memory result is reused only from a
        ceiling at least as high as this one; failed trials are measured again."""
        key, ceiling = self.target.measurement_key(), self.target.max_vram
        here = hardware.device_name(self.target.device)
        reused = 0
        for summary in optuna.get_all_study_summaries(self._storage):
            attrs = summary.user_attrs
            if summary.study_name == self.study_name or attrs.get("measurement_key") != key:
                continue
            if self.reference is None and attrs.get("autotune:reference") is not None:
                continue  # judged trials are not mixed into a search without the guard
            old_ceiling = (attrs.get("target") or {}).get("max_vram", 0)
            earlier = optuna.load_study(study_name=summary.study_name, storage=self._storage)
            for trial in earlier.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if ATTR_MEASUREMENT not in trial.user_attrs or ATTR_DUPLICATE in trial.user_attrs:
                    continue
                assignment = trial.user_attrs[ATTR_ASSIGNMENT]
                measurement = Measurement.from_dict(trial.user_attrs[ATTR_MEASUREMENT])
                akey = assignment_key(assignment)
                if (akey in self._seen or not self.space.is_valid(assignment)
                        or measurement.status not in ("ok", "oom")
                        or (here is not None and measurement.device_name not in (here, "fake"))
                        or (measurement.status == "oom" and old_ceiling < ceiling)
                        or not self._judged_here(trial, measurement)):
                    continue
                self._seen[akey] = self._copy_trial(assignment, measurement, trial, summary.study_name)
                reused += 1
        if reused:
            log.info("reused %d trial(s) measured by earlier searches of this target", reused)
        return reused

    def _judged_here(self, trial: optuna.trial.FrozenTrial, measurement: Measurement) -> bool:
        """Whether an earlier trial can be stored here as it is: its quality numbers are against
        this search's reference (or it ran out of memory, or nothing is judged). Any other is
        measured again, so every trial this search stores is judged against its reference."""
        if self.reference is None or measurement.status == "oom":
            return True
        return bool(measurement.quality) and trial.user_attrs.get(ATTR_JUDGED_AGAINST) == self.reference.key

    def _copy_trial(self, assignment: Assignment, measurement: Measurement, trial: optuna.trial.FrozenTrial,
                    study_name: str) -> TrialRecord:
        outcome, constraint, quality, issue = judge(assignment, measurement, self.target.max_vram, self.guard, self.target.max_ram)
        params = {n: assignment[n] for n in self.space.searched_knobs}
        distributions = {n: optuna.distributions.CategoricalDistribution(list(self.space.choices[n]))
                         for n in self.space.searched_knobs}
        attrs = {**trial.user_attrs, "outcome": outcome, "reused_from": f"{study_name}#{trial.number}"}
        self.study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, values=self._values(measurement), user_attrs=attrs,
            constraints={"memory_over_ceiling": constraint, "quality_below_floor": quality}))
        number = self.study.get_trials(deepcopy=False)[-1].number
        return TrialRecord(number, assignment, measurement, outcome, constraint, trial.user_attrs.get("prediction"),
                           quality, issue)

    def _fail_interrupted(self) -> int:
        """Trials left RUNNING by a crashed or killed search are closed as FAIL on resume. (Only on
        resume: several workers sharing one storage will need Optuna's heartbeats instead.)"""
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            if ATTR_MEASUREMENT not in trial.user_attrs and trial.params:  # measure it again first
                self.study.enqueue_trial(trial.params, skip_if_exists=False)
            log.warning("trial %d was interrupted; recorded as failed and queued again", trial.number)
        return len(running)

    def _records_from_storage(self) -> list[TrialRecord]:
        return records_of(self.study, self.target, self.guard)

    @property
    def measured(self) -> list[TrialRecord]:
        return sorted(self._seen.values(), key=lambda r: r.number)

    def best(self) -> TrialRecord | None:
        return fastest_feasible(self._seen.values(), self.amortize)

    # -- the loop ------------------------------------------------------------------------------

    def enqueue(self, assignment: Assignment) -> None:
        if assignment_key(self.space.complete(assignment)) not in self._seen:
            params = {k: v for k, v in assignment.items() if k in self.space.searched_knobs}
            self.study.enqueue_trial(params, skip_if_exists=True)

    def _propose(self, trial: optuna.trial.Trial) -> Assignment:
        params = {name: trial.suggest_categorical(name, list(self.space.choices[name]))
                  for name in self.space.searched_knobs}
        fixed = {name: values[0] for name, values in self.space.choices.items() if len(values) == 1}
        return canonical({**fixed, **params})

    def run(self, n_trials: int, on_trial: ProgressFn | None = None,
            time_budget_s: float | None = None) -> SearchResult:
        """Measure up to `n_trials` new distinct assignments, then confirm the winner; fewer if
        the space runs out or, with a time budget, once it is spent (see the module doc)."""
        start = time.monotonic()
        deadline = math.inf if time_budget_s is None else start + time_budget_s
        self._reserve_affordable: bool | None = None  # decided once there is a runner-up
        if self.shared:
            self._sync()
        if n_trials > 0:
            self._ensure_reference(None if math.isinf(deadline) else deadline - time.monotonic())
        if not self._seen and not self._pruned:
            self.enqueue(self.space.default())
            for candidate in self._planner_seeds(n_trials):
                self.enqueue(candidate)
        space_size = self.space.size()
        measured_now, asks, skips = 0, 0, 0
        max_asks = max(50, 20 * n_trials)
        self.stop_reason = "trials"
        try:
            while (len(self._seen) < n_trials) if self.shared else (measured_now < n_trials):
                if self.shared:
                    self._sync()
                    if len(self._seen) >= n_trials:
                        break
                if len(self._seen) + len(self._pruned) >= space_size:
                    self.stop_reason = "space exhausted"
                    break
                if asks >= max_asks:
                    self.stop_reason = "sampler"
                    break
                left = deadline - time.monotonic() - self._confirm_reserve(deadline)
                if left <= 0 or skips >= _MAX_SKIPS:
                    self.stop_reason = "time budget"
                    break
                asks += 1
                trial = self.study.ask()
                assignment = self._propose(trial)
                if not self.space.is_valid(assignment):
                    trial.set_user_attr("invalid", True)
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    continue
                key = assignment_key(assignment)
                if key in self._seen or key in self._pruned:
                    self._tell_duplicate(trial, (self._seen.get(key) or self._pruned[key]).number)
                    continue
                prediction = self.planner.predict(assignment) if self.planner else None
                if prediction is not None and prediction.surely_over(self.target.max_vram, self.prune_margin):
                    self._pruned[key] = self._prune(trial, assignment, prediction)
                    continue
                expected = self.expected_duration_s(assignment)
                if expected is not None and expected > left:
                    skips += 1
                    trial.set_user_attr(ATTR_SKIPPED, f"expected {expected:.0f} s, {left:.0f} s left")
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    continue
                skips = 0
                record: TrialRecord | None = None
                with shared_study.Heartbeat(self._storage, trial._trial_id):  # noqa: SLF001 (until it is told)
                    verdict = shared_study.claim(self.study, trial, key, self._measured_keys,
                                                 n_trials) if self.shared else None
                    if verdict is None:
                        timeout = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
                        record = self._measure(trial, assignment, prediction, timeout)
                    else:
                        trial.set_user_attr(ATTR_SKIPPED, f"claim: {verdict}")
                        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                if verdict == "no slot" and not self._wait_for_others(n_trials):
                    self.stop_reason = "other workers"
                    break
                if record is None:  # not measured here (claimed elsewhere, or lost: see _measure)
                    continue
                self._seen[key] = record
                measured_now += 1
                if on_trial:
                    on_trial(record, measured_now, self.best())
            if self.confirm:
                self._confirm(deadline)
        finally:
            self.proposals += asks
            self.duration_s += time.monotonic() - start
            self.study.set_user_attr(ATTR_DURATION, self.duration_s)
        return self.result()

    # -- several processes, one study -----------------------------------------------------------

    def _sync(self) -> None:
        """Fail dead workers' trials, then take in what the other processes measured."""
        shared_study.fail_stale(self.study)
        for record in self._records_from_storage():
            book = self._pruned if record.outcome == "pruned" else self._seen
            book.setdefault(assignment_key(record.assignment), record)

    @staticmethod
    def _measured_keys(trials: list[optuna.trial.FrozenTrial]) -> set[str]:
        """The settings measured in these trials (what `_seen` holds once synced)."""
        return {assignment_key(t.user_attrs[ATTR_ASSIGNMENT]) for t in trials
                if ATTR_MEASUREMENT in t.user_attrs and ATTR_DUPLICATE not in t.user_attrs
                and t.user_attrs[ATTR_MEASUREMENT].get("status") != "pruned"}

    def _wait_for_others(self, n_trials: int, poll_s: float = 1.0) -> bool:
        """Every slot is taken by running trials: wait until they finish, or one dies and its
        settings come back to the queue (True). False after a trial timeout and then some: on a
        journal file there are no heartbeats, and a dead process's trial stays RUNNING until a
        `--resume`."""
        give_up = time.monotonic() + 2 * float(getattr(self.measurer, "timeout_s", 600.0)) + shared_study.GRACE_S
        while time.monotonic() < give_up:
            self._sync()
            running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            waiting = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
            if len(self._seen) >= n_trials or waiting or not any(t.user_attrs.get(shared_study.CLAIM) for t in running):
                return True
            time.sleep(poll_s)
        log.warning("other processes' trials have been running for too long; stopping this one")
        return False

    # -- the time budget -----------------------------------------------------------------------

    def expected_duration_s(self, assignment: Assignment) -> float | None:
        """Median wall time of earlier trials of the same cost class; for a class not seen yet
        that needs a fresh process (another compile mode), the longest trial so far, so a new
        compile does not eat the time kept for the confirmation; None if nothing ran."""
        cls = cost_class(assignment)
        timed = [r for r in self._seen.values() if r.measurement.phases.wall_s is not None]
        walls = [r.measurement.phases.wall_s for r in timed if cost_class(r.assignment) == cls]
        if walls:
            return statistics.median(walls)
        if cls and timed:
            return max(r.measurement.phases.wall_s for r in timed)
        return None

    def _confirm_reserve(self, deadline: float) -> float:
        """Time kept for confirming the winner at the end of a budgeted search: the smallest plan
        (two candidates, `MIN_ROUNDS` in each session), once there is a runner-up to confirm."""
        if math.isinf(deadline) or not self.confirm or not hasattr(self.measurer, "compare"):
            return 0.0
        picked = self._confirm_candidates()
        if len(picked) < 2 or self._reserve_affordable is False:
            return 0.0
        reserve = confirming.plan_cost_s(picked[:2], confirming.SESSIONS, confirming.MIN_ROUNDS)
        if self._reserve_affordable is None:
            # the first time there is a runner-up: if its confirmation no longer fits, stopping
            # the search would buy nothing, so the search goes on and the end says why
            self._reserve_affordable = reserve < deadline - time.monotonic()
        return reserve if self._reserve_affordable else 0.0

    def _spawn_s(self) -> float:
        """What starting a worker has cost here (a fresh Python importing torch and diffusers)."""
        spawns = [r.measurement.phases.spawn_s for r in self._seen.values() if r.measurement.phases.spawn_s is not None]
        return max(spawns) if spawns else 5.0

    def _candidate(self, record: TrialRecord) -> confirming.Candidate:
        """The record as a confirmation arm; its reload is estimated from the trial, except that
        a compile is paid again only in part (the compile cache is warm by then)."""
        t = record.measurement.phases
        load = self._spawn_s() + sum(v or 0.0 for v in (t.load_weights_s, t.build_s, t.apply_s, t.first_run_s))
        load -= (1 - _WARM_COMPILE_SHARE) * (t.compile_s or 0.0)
        return confirming.Candidate(record.number, record.assignment, cost_s(record, self.amortize),
                                    record.measurement.peak_bytes or 0, load_s=load)

    def _confirm_candidates(self) -> list[confirming.Candidate]:
        feasible = [r for r in self._seen.values() if r.feasible]
        if not feasible:
            return []
        return confirming.pick_candidates([self._candidate(r) for r in feasible], memory_room=self._memory_room())

    def _memory_room(self) -> int | None:
        """Bytes the confirmation's arms may hold together (they are loaded side by side)."""
        best = self.best()
        total = best.measurement.device_info.total_memory_bytes if best else None
        return int(0.9 * total) if self.target.device == "cuda" and total else None

    def _skip_confirmation(self, reason: str, warn: bool = True) -> None:
        """No confirmation: say why, in the log and in the study (the CLI prints it)."""
        self.confirmation_skipped = reason
        self.study.set_user_attr(ATTR_CONFIRMATION_SKIPPED, reason)
        (log.warning if warn else log.info)("the winner was not confirmed: %s", reason)

    def _confirm(self, deadline: float) -> None:
        """Re-measure the top candidates side by side (confirm.py) and record the decision."""
        compare = getattr(self.measurer, "compare", None)
        if compare is None or not any(r.feasible for r in self._seen.values()):
            return
        picked = self._confirm_candidates()
        defaults = self._seen.get(assignment_key(self.space.default()))
        reference = self._candidate(defaults) if defaults is not None and defaults.feasible else None
        room = self._memory_room()
        if reference is not None and room is not None and sum(c.peak_bytes for c in picked) + reference.peak_bytes > room:
            reference = None  # no room to load the defaults beside the candidates
        if math.isinf(deadline):
            deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
        plan = confirming.plan(picked, deadline - time.monotonic(), reference)
        if plan.skipped:
            self._skip_confirmation(plan.skipped, warn=len(picked) >= 2)
            return
        if plan.dropped:
            log.info("confirming %d candidates (trials %s left out for time)", len(plan.candidates), plan.dropped)
        arms = plan.arms
        extra = {a.number: compile_share_s(self._by_number(a.number), self.amortize) for a in arms}
        candidates = {c.number for c in plan.candidates}
        sessions: list[dict[int, list[float]]] = []
        notes: list[str] = []
        while arms:
            order = arms if len(sessions) % 2 == 0 else arms[::-1]  # new workers, the other order
            jobs = [self._job(a.settings, a.number) for a in order]
            medians, note = compare(jobs, plan.rounds + confirming.WARMUP_ROUNDS, confirming.RUNS_PER_ROUND, deadline)
            if note:
                notes.append(note)
            # the first rounds of a new worker are its warm-up; an amortized compile adds the same
            # share to every round
            session = {order[i].number: [v + extra[order[i].number] for v in values[confirming.WARMUP_ROUNDS:]]
                       for i, values in medians.items()}
            if sum(1 for n in session if session[n] and n in candidates) < 2:
                break  # cut short (time, a failed load): what was complete decides
            sessions.append(session)
            if len(sessions) >= confirming.MAX_SESSIONS:
                break
            # later sessions: the candidates still undecided (the reference arm has its two)
            still = set(confirming.open_arms([a.number for a in arms if a.number in candidates], sessions))
            if len(sessions) < confirming.SESSIONS and plan.reference is not None:
                still.add(plan.reference.number)
            arms = [a for a in arms if a.number in still] if len(still & candidates) > 1 else []
            if arms and confirming.plan_cost_s(arms, 1, plan.rounds) > deadline - time.monotonic():
                notes.append(f"{len(arms)} candidates still undecided after {len(sessions)} sessions: no time for more")
                break
        if not sessions:
            self._skip_confirmation("the re-measurement did not complete: " + ("; ".join(notes) or "no rounds were timed"))
            return
        reference_number = plan.reference.number if plan.reference is not None else None
        self.confirmation = confirming.decide(plan.candidates, sessions, confirming.RUNS_PER_ROUND,
                                              "; ".join(notes), reference=reference_number)
        self.study.set_user_attr(ATTR_CONFIRMATION, self.confirmation.to_dict())
        if self.confirmation_skipped is not None:
            self.confirmation_skipped = None
            self.study.set_user_attr(ATTR_CONFIRMATION_SKIPPED, None)

    def _by_number(self, number: int) -> TrialRecord:
        return next(r for r in self._seen.values() if r.number == number)

    def _planner_seeds(self, n_trials: int) -> list[Assignment]:
        """Predicted-feasible candidates, likely-fastest first, measured before the sampler's picks."""
        if self.planner is None:
            return []
        from autotune.planner.seeding import seed_order

        feasible = [a for a in self.space if self.planner.predict(a).over(self.target.max_vram) <= 0]
        return seed_order(feasible, self.target.device, k=min(8, max(1, n_trials // 2)))

    def _prune(self, trial: optuna.trial.Trial, assignment: Assignment, prediction: Any) -> TrialRecord:
        """Its lower bound is over the ceiling by more than the margin: recorded with the
        prediction, not run."""
        measurement = Measurement(status="pruned", backend="planner", device_name="-",
                                  peak_metric=prediction.metric, error="pruned by the planner")
        trial.set_user_attr(ATTR_ASSIGNMENT, assignment)
        trial.set_user_attr(ATTR_MEASUREMENT, measurement.to_dict())
        trial.set_user_attr("prediction", prediction.to_dict())
        trial.set_user_attr("outcome", "pruned")
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log.info("trial %d pruned: predicted %d bytes > ceiling %d", trial.number,
                 prediction.total_bytes, self.target.max_vram)
        return TrialRecord(trial.number, assignment, measurement, "pruned", math.nan, prediction.to_dict())

    def _job(self, assignment: Assignment, number: int, incumbent_s: float | None = None) -> TrialJob:
        reference = str(self.reference.path) if self.reference is not None and self.reference.exists else None
        return TrialJob(self.target, assignment, warmup=self.warmup, runs=self.runs, seed=self.seed,
                        number=number, precision=self.precision, time_cap_s=self.time_cap_s,
                        reference=reference, incumbent_s=incumbent_s)

    # -- the quality reference -----------------------------------------------------------------

    @property
    def guard(self) -> QualityGuard | None:
        """How this search judges quality (None: it does not)."""
        if self.reference is None:
            return None
        return QualityGuard(self.min_psnr, self.reference.to_dict(), self.allow_unjudged)

    def _store_guard(self) -> None:
        guard = self.guard
        self.study.set_user_attr(ATTR_GUARD, guard.to_dict() if guard is not None else None)

    def _ensure_reference(self, timeout_s: float | None) -> None:
        """Make this target's reference if no search made it yet (reference.py), once per run:
        without the ceiling, so the guard judges at every ceiling; say so when it cannot."""
        if self.reference is None or self._reference_checked:
            return
        self._reference_checked = True
        from autotune import knobs

        can_offload = (self.target.device == "cuda" and knobs.get(references.OFFLOAD_KNOB).reason_unavailable(
            references.FALLBACK_OFFLOAD, self.space.ctx) is None)
        self.reference = references.make(self.reference, self.target, self.measurer, warmup=self.warmup,
                                         seed=self.seed, can_offload=can_offload, timeout_s=timeout_s)
        self._store_guard()
        if self.reference.problem:
            log.warning("no quality reference (%s): lossy trials are not judged, so not feasible%s",
                        self.reference.problem,
                        "" if self.allow_unjudged else " (--allow-unjudged accepts them)")

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
        return references.reference_settings(self.space.default(), self.reference_dtype)

    def _measure(self, trial: optuna.trial.Trial, assignment: Assignment, prediction: Any = None,
                 timeout_s: float | None = None) -> TrialRecord | None:
        incumbent = self.best()  # racing: a trial surely slower than the best stops at its minimum runs
        job = self._job(assignment, trial.number, incumbent.measurement.latency_median_s if incumbent else None)
        log.info("trial %d: %s", trial.number, assignment)
        measurement = self.measurer(job, timeout_s=timeout_s)
        outcome, constraint, quality, issue = judge(assignment, measurement, self.target.max_vram, self.guard, self.target.max_ram)
        if issue:
            log.warning("trial %d refused by the quality guard: %s", trial.number, issue.message)
        try:
            trial.set_user_attr(ATTR_ASSIGNMENT, assignment)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was failed by another process while it was measured here (no heartbeat for "
                        "%d s): its settings are queued again and this measurement is dropped",
                        trial.number, shared_study.GRACE_S)
            return None
        trial.set_user_attr(ATTR_MEASUREMENT, measurement.to_dict())
        trial.set_user_attr("outcome", outcome)
        if job.reference is not None and measurement.quality and self.reference is not None:
            trial.set_user_attr(ATTR_JUDGED_AGAINST, self.reference.key)
        if issue:
            trial.set_user_attr("quality_issue", issue.message)
        if prediction is not None:
            trial.set_user_attr("prediction", prediction.to_dict())
        if outcome == "failed":
            trial.set_user_attr("error", measurement.error)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            trial.set_constraint("memory_over_ceiling", constraint)
            trial.set_constraint("quality_below_floor", quality)
            self.study.tell(trial, self._values(measurement))
        return TrialRecord(trial.number, assignment, measurement, outcome, constraint,
                           prediction.to_dict() if prediction is not None else None, quality, issue)

    def _tell_duplicate(self, trial: optuna.trial.Trial, original: int) -> None:
        """A proposal of an assignment already measured (or pruned) is answered from the ledger:
        closed as PRUNED with a pointer to the original, so it is neither measured again nor
        counted as a COMPLETE trial by Optuna's tools (dashboard, importance, best_trials)."""
        trial.set_user_attr(ATTR_DUPLICATE, original)
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    @staticmethod
    def _values(measurement: Measurement) -> list[float]:
        latency = measurement.latency_median_s
        peak = measurement.peak_bytes
        return [math.inf if latency is None else latency, math.inf if peak is None else float(peak)]

    def result(self) -> SearchResult:
        by_number = {r.number: r for r in self._seen.values()}
        pareto = sorted(
            (by_number[t.number] for t in self.study.best_trials if t.number in by_number),
            key=lambda r: r.measurement.latency_median_s or math.inf,
        )
        return SearchResult(
            target=self.target, records=self.measured, pruned=sorted(self._pruned.values(), key=lambda r: r.number),
            pareto=[r for r in pareto if r.feasible],
            study_name=self.study_name, storage=self.storage_name,
            sampler=type(self.sampler).__name__, seed=self.seed,
            duration_s=self.duration_s, proposals=self.proposals, stop_reason=self.stop_reason,
            confirmation=self.confirmation, confirmation_skipped=self.confirmation_skipped,
            interrupted=self.interrupted, reused=self.reused,
            min_psnr=self.min_psnr, amortize=self.amortize,
            reference=self.reference_assignment() if self.has_reference else None, guard=self.guard,
        )


def cost_class(assignment: Assignment) -> tuple[tuple[str, Any], ...]:
    """The values that decide a trial's cost beyond its runs: those of knobs that need a fresh
    process (a compile is paid again by every trial that has one)."""
    from autotune import knobs

    return tuple((k.name, assignment[k.name]) for k in knobs.all_knobs()
                 if assignment.get(k.name) in k.process_state)

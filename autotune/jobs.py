"""The whole job: target -> space -> search -> profile, in one call or fanned out over several GPUs
(one process per GPU on one shared study). The CLI is a thin shell over it."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autotune import hardware
from autotune.hardware import Fingerprint
from autotune.errors import InvalidTargetError, NoFeasibleTrialError, PlannerUnsupportedError, StudyError
from autotune.measure.measurer import Measurer, SubprocessMeasurer
from autotune.measure.timing import TimingRecord
from autotune.models.pipelines import model_info
from autotune.planner import Planner
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.knobs.space import SearchSpace
from autotune.search.options import DEFAULT_RUN_DIR, STUDIES_FILE, SearchOptions
from autotune.search.study import Search
from autotune.search.trials import ProgressFn, SearchResult, TrialRecord, quality_against, search_summary
from autotune.target import Target
from autotune.units import format_size

log = logging.getLogger(__name__)




@dataclasses.dataclass
class TuneResult:
    search: SearchResult
    profile: Profile | None
    log_dir: Path | None = None  # where each trial's worker log is, when the worker wrote one


def space_for(target: Target, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> SearchSpace:
    """The knob values that can run for this model on this device (decided by its modules)."""
    from autotune.knobs.probe import model_context

    info = model_info(target.model)
    size = (target.height, target.width, target.batch)
    return SearchSpace(model_context(target.model, target.device, info, size), include, exclude)


def make_planner(target: Target) -> Planner | None:
    """The planner for this target, or None (with a warning) for pipelines it cannot trace."""
    try:
        return Planner(target)
    except PlannerUnsupportedError as exc:
        log.warning("searching without the planner: %s", exc)
        return None


def entry_from(record: TrialRecord, quality_against: str | None = None) -> ProfileEntry:
    m = record.measurement
    if m.latency_median_s is None or m.latency_p90_s is None or m.peak_bytes is None:
        raise ValueError(f"trial {record.number} has no complete measurement")
    predicted = record.prediction.total_bytes if record.prediction else None
    return ProfileEntry(settings=record.assignment, latency_median_s=round(m.latency_median_s, 6),
                        latency_p90_s=round(m.latency_p90_s, 6), peak_bytes=m.peak_bytes,
                        peak_metric=m.peak_metric, runs=len(m.latencies_s), memory=m.memory.to_dict(),
                        predicted_peak_bytes=predicted, timing=m.timing.record() if m.timing else TimingRecord.none(),
                        quality=m.quality.to_dict() if m.quality else {}, quality_against=quality_against,
                        phases={k: round(v, 3) for k, v in m.phases.to_dict().items()})


def profile_from(result: SearchResult, log_dir: Path | None = None) -> Profile:
    """The profile for a finished search; raises when no trial was feasible."""
    best = result.best
    if best is None:
        raise NoFeasibleTrialError(no_feasible_message(result, log_dir))
    from autotune.models.identity import MODEL_IDENTITY_KEY, model_identity

    # This machine; the model's identity, so a relative model folder still matches when the
    # profile is applied from elsewhere; how the ceiling was enforced (native or emulated), the
    # CUDA context, PYTORCH_CUDA_ALLOC_CONF (the measurement's DeviceInfo, which has the last word).
    setup = {k: v for k, v in best.measurement.device_info.to_dict().items()
             if k not in ("worker_pid", "worker_clean_after")}
    fingerprint = Fingerprint.from_dict({**hardware.fingerprint(result.target.device).to_dict(),
                                         MODEL_IDENTITY_KEY: model_identity(result.target.model), **setup})
    return Profile(
        target=result.target,
        fingerprint=fingerprint,
        best=entry_from(best, quality_against(result, best)),
        search=search_summary(result),
        alternatives=[entry_from(r, quality_against(result, r)) for r in result.alternatives],
        confirmation=result.confirmation,
    )


def start_search(target: Target, options: SearchOptions | None = None, *, space: SearchSpace | None = None,
                 run_dir: Path = DEFAULT_RUN_DIR, storage: str | None = None, resume: bool = False,
                 study_name: str | None = None, include: Iterable[str] = (), exclude: Iterable[str] = (),
                 measurer: Measurer | None = None, **overrides: Any) -> Search:
    """Open (or, with `resume`, reopen) the study for `target`; nothing is measured yet.

    `options` holds every default (search/options.py); keyword `overrides` replace single ones.
    With the planner (default), candidates whose predicted lower bound is over the ceiling by more
    than the prune margin are not measured and predicted-feasible ones are measured first."""
    options = (options or SearchOptions()).replace(**overrides) if overrides else (options or SearchOptions())
    space = space or space_for(target, include, exclude)
    planner = make_planner(target) if options.use_planner else None
    # One inductor/AOTAutograd cache per run dir, shared by all its trials: a compiled trial pays
    # this run's compile, not whatever an unrelated earlier run left in /tmp (set it to share more).
    cache = {} if os.environ.get("TORCHINDUCTOR_CACHE_DIR") else {"TORCHINDUCTOR_CACHE_DIR": str((run_dir / "inductor-cache").resolve())}
    own_measurer = SubprocessMeasurer(timeout_s=options.trial_timeout_s, env=cache) if measurer is None else None
    search = Search(target, space, measurer or own_measurer, storage=storage or run_dir / STUDIES_FILE,
                    options=options, planner=planner, reference_dir=run_dir / "references",
                    study_name=study_name, resume=resume)
    if own_measurer is not None:  # one log per trial, beside the study it belongs to
        own_measurer.log_dir = run_dir / "logs" / search.study_name
    return search


def finish(search: Search, result: SearchResult) -> TuneResult:
    """The profile of a finished run of `search` (None when nothing fits)."""
    close_measurer(search)  # the warm worker is not needed any more
    log_dir = getattr(search.measurer, "log_dir", None)
    profile = profile_from(result, log_dir) if result.best is not None else None
    return TuneResult(search=result, profile=profile, log_dir=log_dir)


def no_feasible_message(result: SearchResult, log_dir: Path | None = None) -> str:
    """Why there is no profile, and what to do: a ceiling problem and a crash are different fixes."""
    failed = result.count("failed")
    if result.records and failed == len(result.records):
        first = result.records[0].measurement.error
        where = f"; the trial logs are in {log_dir}" if log_dir else ""
        return f"all {failed} measured trials failed (first: {first}){where}"
    guard = result.guard
    unjudged = (f"; there is no quality reference ({guard.problem}), so lossy trials were not judged "
                "(--allow-unjudged accepts them)" if guard is not None and guard.problem else "")
    return (f"no trial fits under the {format_size(result.target.max_vram)} ceiling: "
            f"{len(result.records)} measured ({result.count('over_ceiling')} over it, "
            f"{result.count('below_quality')} below the quality floor, "
            f"{result.count('oom')} out of memory, {failed} failed), {len(result.pruned)} predicted "
            f"over it by the planner; raise --max-vram, lower --batch or the size, or add trials{unjudged}")


def tune(target: Target, *, trials: int | None = None, on_trial: ProgressFn | None = None,
         time_budget_s: float | None = None, options: SearchOptions | None = None, **kwargs: Any) -> TuneResult:
    """Search `trials` (default: the options') new assignments for `target` and build the
    profile (None if none fit). `kwargs` are those of `start_search`."""
    search = start_search(target, options, **kwargs)
    budget = search.options.time_budget_s if time_budget_s is None else time_budget_s
    try:
        result = search.run(trials, on_trial=on_trial, time_budget_s=budget)
    finally:
        close_measurer(search)
    return finish(search, result)


def close_measurer(search: Search) -> None:
    """Stop the warm worker, if the measurer keeps one."""
    close = getattr(search.measurer, "close", None)
    if close is not None:
        close()


# -- several GPUs, one study -------------------------------------------------------------------------

def parse_gpus(text: str) -> list[str]:
    """'0,1,3' -> ['0', '1', '3']: distinct GPU indices."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise InvalidTargetError(f"--gpus takes distinct GPU indices like 0,1,3, got {text!r}")
    return gpus


def shared_study_name(target: Target) -> str:
    """The study several GPUs share when none is named."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{target.key()}-gpus-{stamp}"


@dataclasses.dataclass(frozen=True)
class GpuJob:
    """What one GPU's process searches: the shared study, without the confirmation (the
    process that started them confirms once they are done)."""

    gpu: str
    target: Target
    options: SearchOptions
    run_dir: Path
    storage: str
    study_name: str
    resume: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"gpu-{self.gpu}.log"


def run_on_gpus(search: Search, gpus: list[str], *, run_dir: Path, resume: bool = False,
                include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
    """One search process per GPU on `search`'s shared study, each seeing only its GPU
    (CUDA_VISIBLE_DEVICES), its output in RUN_DIR/gpu-N.log; waits for them all and returns the
    GPUs whose process failed. `search` itself measures nothing here: run it after, to confirm."""
    if not search.shared:
        raise StudyError("several GPUs share one named study: start the search with a study name")
    run_dir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA is set up after the env
    jobs = [GpuJob(gpu, search.target, search.options.replace(confirm=False), run_dir, search.storage_name,
                   search.study_name, resume, tuple(include), tuple(exclude)) for gpu in gpus]
    procs = [context.Process(target=_gpu_process, args=(job,), name=f"autotune-gpu-{job.gpu}") for job in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return [job.gpu for job, proc in zip(jobs, procs) if proc.exitcode != 0]


def _gpu_process(job: GpuJob) -> None:
    """The body of one GPU's process (spawned: nothing of the parent's state but `job`)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = job.gpu
    with open(job.log_path, "w") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        search = start_search(job.target, job.options, run_dir=job.run_dir, storage=job.storage,
                              study_name=job.study_name, resume=job.resume, include=job.include, exclude=job.exclude)
        try:
            search.run(job.options.trials, time_budget_s=job.options.time_budget_s)
        finally:
            close_measurer(search)

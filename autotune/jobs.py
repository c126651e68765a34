"""The whole job in one call: target -> space -> search -> profile. The CLI is a thin shell over it."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autotune import hardware
from autotune.errors import NoFeasibleTrialError, PlannerUnsupportedError
from autotune.measure.measurer import Measurer, SubprocessMeasurer
from autotune.models.pipelines import model_info
from autotune.planner import Planner
from autotune.planner.calibration import DEFAULT_PRUNE_MARGIN
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.knobs.space import SearchSpace
from autotune.search.study import Search
from autotune.search.trials import ProgressFn, SearchResult, TrialRecord, quality_against, search_summary
from autotune.target import Target
from autotune.units import format_size

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path(".autotune")
#: The default quality floor for lossy settings, PSNR in dB against the reference. 30 dB is an
#: RMS error of 3% of the pixel range, where compression artefacts start to be seen. Measured on
#: CPU (builtin:tiny-sd, 64 px, 4 and 30 steps, benchmarks/results/2026-12-01-quality-per-call-cpu.md):
#: fp16 67 dB, bf16 49 dB, layerwise fp8 43 dB, bf16 + fp8 41-42 dB: the floor passes them all and
#: rejects broken outputs (NaN or black images from an overflow score 0-10 dB). See README
#: "Quality guard".
DEFAULT_MIN_PSNR = 30.0


@dataclasses.dataclass
class TuneResult:
    search: SearchResult
    profile: Profile | None
    log_dir: Path | None = None  # where each trial's worker log is, when the worker wrote one


def space_for(target: Target, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> SearchSpace:
    """The knob values that can run for this model on this device (decided by its modules)."""
    from autotune.knobs.probe import model_context

    info = model_info(target.model)
    return SearchSpace(model_context(target.model, target.device, info), include, exclude)


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
    predicted = record.prediction["total_bytes"] if record.prediction else None
    return ProfileEntry(settings=record.assignment, latency_median_s=round(m.latency_median_s, 6),
                        latency_p90_s=round(m.latency_p90_s, 6), peak_bytes=m.peak_bytes,
                        peak_metric=m.peak_metric, runs=len(m.latencies_s), memory=m.memory.to_dict(),
                        predicted_peak_bytes=predicted, timing=m.timing.to_dict() if m.timing else {},
                        quality=m.quality.to_dict() if m.quality else {}, quality_against=quality_against,
                        phases={k: round(v, 3) for k, v in m.phases.to_dict().items()})


def profile_from(result: SearchResult, log_dir: Path | None = None) -> Profile:
    """The profile for a finished search; raises when no trial was feasible."""
    best = result.best
    if best is None:
        raise NoFeasibleTrialError(no_feasible_message(result, log_dir))
    from autotune.models.identity import MODEL_IDENTITY_KEY, model_identity

    fingerprint = hardware.fingerprint(result.target.device)
    # So a relative model folder still matches when the profile is applied from elsewhere.
    fingerprint[MODEL_IDENTITY_KEY] = model_identity(result.target.model)
    # How the ceiling was enforced (native or emulated), the CUDA context, PYTORCH_CUDA_ALLOC_CONF.
    fingerprint.update({k: v for k, v in best.measurement.device_info.to_dict().items()
                        if k not in ("worker_pid", "worker_clean_after")})
    return Profile(
        target=result.target,
        fingerprint=fingerprint,
        best=entry_from(best, quality_against(result, best)),
        search=search_summary(result),
        alternatives=[entry_from(r, quality_against(result, r)) for r in result.alternatives],
        confirmation=result.confirmation.to_dict() if result.confirmation else None,
    )


def start_search(
    target: Target,
    *,
    space: SearchSpace | None = None,
    run_dir: Path = DEFAULT_RUN_DIR,
    storage: str | None = None,
    resume: bool = False,
    seed: int = 0,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    measurer: Measurer | None = None,
    trial_timeout_s: float = 600.0,
    warmup: int = 1,
    runs: int = 6,
    precision: float = 0.02,
    time_cap_s: float = 10.0,
    confirm: bool = True,
    min_psnr: float | None = DEFAULT_MIN_PSNR,
    reference_dtype: str = "fp32",
    amortize: int | None = None,
    reuse: bool = True,
    study_name: str | None = None,
    allow_unjudged: bool = False,
    use_planner: bool = True,
    prune_margin: float = DEFAULT_PRUNE_MARGIN,
) -> Search:
    """Open (or, with `resume`, reopen) the study for `target`; nothing is measured yet.

    With the planner (default), candidates whose predicted lower bound is over the ceiling by more
    than `prune_margin` are not measured and predicted-feasible ones are measured first."""
    space = space or space_for(target, include, exclude)
    planner = make_planner(target) if use_planner else None
    # One inductor/AOTAutograd cache per run dir, shared by all its trials: a compiled trial pays
    # this run's compile, not whatever an unrelated earlier run left in /tmp (set it to share more).
    cache = {} if os.environ.get("TORCHINDUCTOR_CACHE_DIR") else {"TORCHINDUCTOR_CACHE_DIR": str((run_dir / "inductor-cache").resolve())}
    own_measurer = SubprocessMeasurer(timeout_s=trial_timeout_s, env=cache) if measurer is None else None
    search = Search(target, space, measurer or own_measurer,
                    storage=storage or run_dir / "studies.journal", seed=seed, resume=resume,
                    warmup=warmup, runs=runs, planner=planner, prune_margin=prune_margin,
                    precision=precision, time_cap_s=time_cap_s, confirm=confirm,
                    min_psnr=min_psnr, reference_dir=run_dir / "references", reference_dtype=reference_dtype,
                    amortize=amortize, reuse=reuse, study_name=study_name, allow_unjudged=allow_unjudged)
    if own_measurer is not None:  # one log per trial, beside the study it belongs to
        own_measurer.log_dir = run_dir / "logs" / search.study_name
    return search


def finish(search: Search, result: SearchResult) -> TuneResult:
    """The profile of a finished run of `search` (None when nothing fits)."""
    close = getattr(search.measurer, "close", None)
    if close is not None:  # the warm worker is not needed any more
        close()
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


def tune(
    target: Target,
    *,
    trials: int,
    on_trial: ProgressFn | None = None,
    time_budget_s: float | None = None,
    **options: Any,
) -> TuneResult:
    """Search `trials` new assignments for `target` and build the profile (None if none fit).
    `options` are those of `start_search`."""
    search = start_search(target, **options)
    try:
        result = search.run(trials, on_trial=on_trial, time_budget_s=time_budget_s)
    finally:
        close = getattr(search.measurer, "close", None)
        if close is not None:
            close()
    return finish(search, result)

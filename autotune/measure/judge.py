"""Judging a trial's output: the reference trial saves its own, every other trial is scored
against it end to end (quality.py) and, where the reference kept them, per call: its denoiser's
calls (denoiser_calls.py) and its VAE decode (decode_calls.py). Runs in the worker, on the first
plain run's output (`TrialJudge` says which run that is, and in what math it computes)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autotune.measure import decode_calls, denoiser_calls, quality
from autotune.measure.backends import math_flags
from autotune.measure.quality import Reference
from autotune.measure.records import Measurement, QualityScores, TrialJob

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Recorders:
    """What the judged run recorded of its denoiser's calls and its VAE decode."""

    denoiser: denoiser_calls.Recorder | None = None
    decode: decode_calls.DecodeRecorder | None = None


@contextlib.contextmanager
def recording(pipe: Any, keep: bool, steps: int) -> Iterator[Recorders]:
    """Record the calls the per-call errors need while the judged run runs (`keep`: the
    reference's, stored with it)."""
    with denoiser_calls.recording(pipe, keep, steps) as denoiser, decode_calls.recording(pipe, keep) as decode:
        yield Recorders(denoiser, decode)


def _per_call(what: str, replay: Any, *args: Any) -> float | None:
    """One per-call error, rounded; a replay that fails leaves it unmeasured, never the trial."""
    try:
        value = replay(*args)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        log.warning("the %s's per-call error could not be measured: %s: %s", what, type(exc).__name__, exc)
        return None
    return None if value is None else round(value, 3)


def score(pipe: Any, job: TrialJob, output: Any, captured: list[Any],
          recorders: Recorders | None, references: dict[str, Reference]) -> QualityScores:
    """The output's scores; with `job.save_reference` it is saved as the reference first (its
    scores are then against itself). `references` caches the loaded references by path."""
    from autotune.models.call import output_array

    recorders = recorders or Recorders()
    latents = captured[0].detach().float().cpu().numpy() if captured else None
    images = output_array(output)
    if job.save_reference:
        calls = {**(recorders.denoiser.reference_arrays() if recorders.denoiser is not None else {}),
                 **(recorders.decode.reference_arrays() if recorders.decode is not None else {})}
        quality.save_reference(Path(job.save_reference), images, latents, calls)
        own = {"images": images} if latents is None else {"images": images, "latents": latents}
        return quality.compare(images, latents, own)
    assert job.reference is not None, "a judged trial has a reference or makes one"
    reference = references.get(job.reference)
    if reference is None:
        reference = references[job.reference] = quality.load_reference(Path(job.reference))
    scores = quality.compare(images, latents, reference)
    return dataclasses.replace(
        scores,
        denoiser_sqnr_db=_per_call("denoiser", denoiser_calls.replay_sqnr, pipe, recorders.denoiser, reference),
        decode_sqnr_db=_per_call("VAE decode", decode_calls.replay_sqnr, pipe, recorders.decode, reference))


class TrialJudge:
    """The judging of one worker's trials: a trial with a reference to save or to meet has the
    output of its first plain run judged (never a run under a memory tracker: a dispatch mode
    may pick other kernels); the references it loads are kept for the next trials."""

    def __init__(self) -> None:
        self.pending = False
        self._references: dict[str, Reference] = {}

    def start(self, job: TrialJob) -> None:
        """A new trial: its first plain run will be judged if it has a reference to save or meet."""
        self.pending = bool(job.save_reference or job.reference)

    def recording(self, pipe: Any, job: TrialJob) -> Any:
        """While the judged run runs: the denoiser calls and the VAE decode it makes."""
        if not self.pending or pipe is None:
            return contextlib.nullcontext(None)
        return recording(pipe, keep=bool(job.save_reference), steps=job.target.steps)

    @contextlib.contextmanager
    def exact_math(self, job: TrialJob, result: Measurement | None) -> Iterator[None]:
        """The run whose output becomes the reference computes in true fp32 (no TF32: cuDNN
        convolutions use it by default on Ampere and later); every other run, timed ones
        included, keeps the flags production gets."""
        if not (job.save_reference and self.pending):
            yield
            return
        with math_flags.exact_math() as exact:
            if result is not None:
                result.device_info.reference_math_flags = exact
            yield

    @contextlib.contextmanager
    def judged_run(self, pipe: Any, job: TrialJob, result: Measurement | None) -> Iterator[Recorders | None]:
        """Around a run whose output may be judged: its math, and what it records (None: nothing)."""
        with self.exact_math(job, result), self.recording(pipe, job) as recorders:
            yield recorders

    def judge(self, pipe: Any, job: TrialJob, result: Measurement, output: Any, captured: list[Any],
              recorders: Recorders | None = None) -> None:
        """The judged run's output: saved as the reference, or scored against it, once a trial."""
        if not self.pending:
            return
        self.pending = False
        result.quality = score(pipe, job, output, captured, recorders, self._references)

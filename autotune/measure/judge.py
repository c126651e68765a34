"""Judging a trial's output: the reference trial saves its own, every other trial is scored
against it end to end (quality.py) and, where the reference kept denoiser calls, per call
(denoiser_calls.py). Runs in the worker, on the first plain run's output."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from autotune.measure import denoiser_calls, quality
from autotune.measure.quality import Reference
from autotune.measure.records import QualityScores, TrialJob

log = logging.getLogger(__name__)


def score(pipe: Any, job: TrialJob, output: Any, captured: list[Any],
          recorder: denoiser_calls.Recorder | None, references: dict[str, Reference]) -> QualityScores:
    """The output's scores; with `job.save_reference` it is saved as the reference first (its
    scores are then against itself). `references` caches the loaded references by path."""
    from autotune.models.call import output_array

    latents = captured[0].detach().float().cpu().numpy() if captured else None
    images = output_array(output)
    if job.save_reference:
        calls = recorder.reference_arrays() if recorder is not None else {}
        quality.save_reference(Path(job.save_reference), images, latents, calls)
        own = {"images": images} if latents is None else {"images": images, "latents": latents}
        return quality.compare(images, latents, own)
    assert job.reference is not None, "a judged trial has a reference or makes one"
    reference = references.get(job.reference)
    if reference is None:
        reference = references[job.reference] = quality.load_reference(Path(job.reference))
    scores = quality.compare(images, latents, reference)
    try:
        per_call = denoiser_calls.replay_sqnr(pipe, recorder, reference)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:  # never fails the trial
        log.warning("the per-call error could not be measured: %s: %s", type(exc).__name__, exc)
        per_call = None
    if per_call is not None:
        scores = dataclasses.replace(scores, denoiser_sqnr_db=round(per_call, 3))
    return scores

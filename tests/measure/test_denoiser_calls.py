"""The per-call error: the reference keeps a few denoiser calls, a trial replays their inputs."""
from __future__ import annotations

import numpy as np

from autotune.measure import worker as _worker
from autotune.measure import denoiser_calls
from autotune.measure import quality
from autotune.knobs import all_knobs
from autotune.measure.measurer import TrialJob
from autotune.target import NO_CEILING, Target

DEFAULTS = {k.name: k.default for k in all_knobs()}
TARGET = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=3, max_vram=NO_CEILING)


def test_kept_calls_are_the_first_middle_and_last():
    assert denoiser_calls.kept_calls(30) == {0, 15, 29} and denoiser_calls.kept_calls(1) == {0}


def test_an_exact_knob_scores_float_noise_per_call_and_a_lossy_one_does_not(tmp_path):
    ref = tmp_path / "ref.npz"
    _worker.measure(TrialJob(TARGET, DEFAULTS, runs=1, max_runs=1, save_reference=str(ref)))
    stored = quality.load_reference(ref)
    assert denoiser_calls.META_KEY in stored and "denoiser/2.out" in stored  # steps 0, 1, 2
    exact = _worker.measure(TrialJob(TARGET, {**DEFAULTS, "channels_last": True}, runs=1, max_runs=1,
                                     reference=str(ref)))
    lossy = _worker.measure(TrialJob(TARGET, {**DEFAULTS, "dtype": "bf16"}, runs=1, max_runs=1,
                                     reference=str(ref)))
    assert exact.quality.denoiser_sqnr_db >= quality.EXACT_MIN_SQNR_DB + 30
    assert 25 < lossy.quality.denoiser_sqnr_db < exact.quality.denoiser_sqnr_db - 20
    assert quality.exact_problem(exact.quality) is None


def test_a_reference_without_calls_measures_no_per_call_error():
    assert denoiser_calls.replay_sqnr(object(), None, {"images": np.zeros(1)}) is None

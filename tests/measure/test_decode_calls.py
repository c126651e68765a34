"""The VAE decode's error on one latent: the reference keeps its decode, a trial decodes the same
latent with its own VAE."""
from __future__ import annotations

import types

import numpy as np

from autotune.measure import decode_calls, quality
from autotune.measure.records import QualityScores


def test_an_exact_knob_decodes_the_reference_latent_to_float_noise_and_a_lossy_dtype_does_not(scored_trials):
    stored, exact, lossy = scored_trials.stored, scored_trials.exact, scored_trials.lossy
    assert stored[decode_calls.INPUT_KEY].shape[:2] == (1, 4)  # the latent the pipeline decoded
    assert stored[decode_calls.OUTPUT_KEY].shape[:2] == (1, 3)
    assert exact.quality.decode_sqnr_db >= quality.EXACT_MIN_SQNR_DB + 30
    assert 15 < lossy.quality.decode_sqnr_db < exact.quality.decode_sqnr_db - 20
    assert quality.exact_problem(exact.quality) is None


def test_an_exact_setting_whose_decode_is_far_from_the_reference_is_a_bug():
    scores = QualityScores(psnr_db=60.0, ssim=1.0, denoiser_sqnr_db=100.0, decode_sqnr_db=12.0)
    assert "VAE decode is 12.0 dB SQNR" in quality.exact_problem(scores)


class _Vae:
    def decode(self, z, return_dict=True):
        return (z * 2,)


def test_the_watch_on_decode_is_removed_and_a_knob_s_own_wrapper_kept():
    import torch

    pipe = types.SimpleNamespace(vae=_Vae())
    with decode_calls.recording(pipe, keep=True) as recorder:
        pipe.vae.decode(torch.ones(1, 4, 2, 2))
        pipe.vae.decode(torch.zeros(1, 4, 2, 2))  # a second decode: the first is the one kept
    assert "decode" not in vars(pipe.vae)
    assert np.array_equal(recorder.reference_arrays()[decode_calls.OUTPUT_KEY], np.full((1, 4, 2, 2), 2.0))

    def own(z, return_dict=True):
        return (z + 1,)

    pipe.vae.decode = own
    with decode_calls.recording(pipe, keep=False) as recorder:
        pipe.vae.decode(torch.ones(1, 4, 2, 2))
    assert pipe.vae.decode is own and recorder.placement == (torch.float32, torch.device("cpu"))
    assert recorder.reference_arrays() == {}


def test_without_a_vae_or_a_kept_decode_nothing_is_measured():
    with decode_calls.recording(types.SimpleNamespace(), keep=True) as recorder:
        assert recorder is None
    assert decode_calls.replay_sqnr(object(), None, {"images": np.zeros(1)}) is None

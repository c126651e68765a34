"""The quality numbers and the floor: lossy settings that drift are caught, exact ones never."""
from __future__ import annotations

import numpy as np
import pytest

from autotune.quality import PSNR_IDENTICAL_DB, below_floor, compare, load_reference, psnr, save_reference, ssim


def smooth_image(size: int = 64) -> np.ndarray:
    """A smooth picture (gradients and a soft blob), as a trained model would make; random-weight
    built-ins make noise, where PSNR says little."""
    y, x = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.05)
    return np.stack([x, y, blob], axis=-1)[None].astype(np.float32)


def test_identical_outputs_score_the_cap():
    image = smooth_image()
    assert psnr(image, image) == PSNR_IDENTICAL_DB and ssim(image, image) == pytest.approx(1.0)


def test_half_precision_rounding_of_a_smooth_image_is_far_above_the_floor():
    image = smooth_image()
    rounded = image.astype(np.float16).astype(np.float32)
    assert psnr(rounded, image) > 60 and ssim(rounded, image) > 0.999


def test_visible_damage_falls_below_a_30_db_floor():
    image = smooth_image()
    damaged = image.copy()
    damaged[:, :, 28:36] = 0.0  # a seam, as a tiling bug would leave
    assert psnr(damaged, image) < 30 and ssim(damaged, image) < 0.95
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.1, image.shape), 0, 1)
    assert psnr(noisy, image) < 25


def test_nan_output_scores_zero():
    image = smooth_image()
    assert psnr(np.full_like(image, np.nan), image) == 0.0


def test_compare_and_the_reference_file(tmp_path):
    image = smooth_image()
    latents = np.ones((1, 4, 8, 8), dtype=np.float32)
    save_reference(tmp_path / "ref.npz", image, latents)
    reference = load_reference(tmp_path / "ref.npz")
    scores = compare(image * 0.99, latents * 1.01, reference)
    assert scores["latent_rel_error"] == pytest.approx(0.01, rel=1e-3)
    assert 35 < scores["psnr_db"] < PSNR_IDENTICAL_DB
    with pytest.raises(ValueError, match="shape"):
        compare(image[:, :32], None, reference)


def test_floor_constraint():
    assert below_floor({"psnr_db": 40.0}, 30.0) < 0
    assert below_floor({"psnr_db": 15.0}, 30.0) == pytest.approx(0.5)
    assert below_floor({}, 30.0) == 0.0 and below_floor({"psnr_db": 5.0}, None) == 0.0

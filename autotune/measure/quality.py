"""How far a trial's output is from the reference: PSNR and SSIM of the images, and the relative
error of the final latents; and the sanity floor every output must pass (finite, not constant),
with the stricter one an exact setting must pass.

Besides the image, the per-call error of the denoiser on the reference's own inputs and of the
VAE decode on the reference's own latent (SQNR, denoiser_calls.py, decode_calls.py) judges every
setting, exact or lossy: it measures the knob, not the chaos of sampling (`below_floor`).

The reference is the same prompt, seed and steps run with every knob at its exact default, in the
reference dtype, without the memory ceiling (reference.py makes it). Images are compared as the
pipeline returns them: floats in [0, 1] with `output_type="np"`, but also uint8 (PIL images) or
floats in [-1, 1]; the data range PSNR and SSIM need is read from the reference. Latents are
those after the last denoising step, before the VAE. Numpy only: the search process compares
without importing torch.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autotune.measure.records import QualityScores

#: A reference output as saved: "images", maybe "latents", and the denoiser calls it kept.
Reference = dict[str, np.ndarray]

#: What identical outputs score (PSNR is infinite there; a finite number keeps JSON and YAML plain).
PSNR_IDENTICAL_DB = 100.0
#: The end-to-end PSNR an exact setting (float reordering only) must keep against the reference.
#: Not a float-noise floor: sampling compounds reordering through every step (a published Flux
#: run on an L20 scored bf16 + torch.compile at 19.3 dB against bf16 eager), so this only catches
#: what no reordering makes: two unrelated noise images score ~8 dB, a black one ~5 dB.
EXACT_MIN_PSNR_DB = 15.0
#: The per-call SQNR an exact setting's denoiser must keep on the reference's inputs
#: (denoiser_calls.py). Measured on CPU (builtin:tiny-sd, benchmarks/results/
#: 2026-12-01-quality-per-call-cpu.md): exact knobs 100 dB (identical), fp16 56 dB, bf16 38 dB,
#: layerwise fp8 21 dB. 30 dB lets an fp32 trial pass against a bf16 reference and TF32 or
#: reordered kernels on a GPU, and catches damage the size of fp8's.
EXACT_MIN_SQNR_DB = 30.0
#: Below this standard deviation (in units of the data range) an output is one flat colour.
CONSTANT_STD = 1e-6
#: The SSIM window of Wang et al. (2004); smaller images use the largest odd window that fits.
SSIM_WINDOW = 11


def data_range(reference: np.ndarray) -> float:
    """The range the pixel values live in, read from the reference: 255 for uint8 (PIL), 2 for
    [-1, 1] floats, 1 for [0, 1] floats, else what the reference spans."""
    if np.issubdtype(reference.dtype, np.integer):
        return float(np.iinfo(reference.dtype).max - min(0, np.iinfo(reference.dtype).min))
    finite = reference[np.isfinite(reference)].astype(np.float64)
    if finite.size == 0:
        return 1.0
    low, high = float(finite.min()), float(finite.max())
    if low >= -1e-3 and high <= 1 + 1e-3:
        return 1.0
    if low >= -1 - 1e-3 and high <= 1 + 1e-3:
        return 2.0
    return max(high - low, 1e-12)


def psnr(output: np.ndarray, reference: np.ndarray, peak: float | None = None,
         cap: float = PSNR_IDENTICAL_DB) -> float:
    """Peak signal-to-noise ratio in dB; `peak` is the data range (read from the reference by
    default). `cap` is what identical outputs score; a larger one (math.inf) shows float noise,
    which scores 110-140 dB, where the guard's own numbers all read 100."""
    peak = data_range(reference) if peak is None else peak
    mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    if not math.isfinite(mse):  # NaN or inf in the output: as bad as it gets
        return 0.0
    if mse <= 0:
        return cap
    return max(0.0, min(cap, 10 * math.log10(peak**2 / mse)))


def ssim_window(height: int, width: int) -> int:
    """The window size: 11, or the largest odd size that fits a smaller image (1 at least)."""
    size = min(SSIM_WINDOW, height, width)
    return max(1, size if size % 2 else size - 1)


def _gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filter over the two image axes of a (H, W) array."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim(output: np.ndarray, reference: np.ndarray, peak: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03), averaged over images, frames and channels. A non-finite output scores 0."""
    peak = data_range(reference) if peak is None else peak
    a = output.astype(np.float64).reshape(-1, *output.shape[-3:])
    b = reference.astype(np.float64).reshape(-1, *reference.shape[-3:])
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    size = ssim_window(a.shape[1], a.shape[2])
    kernel = _gaussian_kernel(size, 1.5 * size / SSIM_WINDOW)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    scores = []
    for image_a, image_b in zip(a, b):
        for ch in range(image_a.shape[-1]):
            x, y = image_a[..., ch], image_b[..., ch]
            mx, my = _blur(x, kernel), _blur(y, kernel)
            vx = _blur(x * x, kernel) - mx**2
            vy = _blur(y * y, kernel) - my**2
            cov = _blur(x * y, kernel) - mx * my
            value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            scores.append(float(value.mean()))
    score = float(np.mean(scores))
    return score if math.isfinite(score) else 0.0


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """||output - reference|| / ||reference||."""
    norm = float(np.linalg.norm(reference.astype(np.float64)))
    diff = float(np.linalg.norm(output.astype(np.float64) - reference.astype(np.float64)))
    if not math.isfinite(diff):
        return math.inf
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


def sqnr(output: np.ndarray, reference: np.ndarray, cap: float = PSNR_IDENTICAL_DB) -> float:
    """Signal-to-quantization-noise ratio in dB: ||reference||^2 / ||output - reference||^2,
    capped at `cap` (as `psnr`); a non-finite output scores 0 (how torchao's autoquant gates)."""
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    if not math.isfinite(noise):
        return 0.0
    if noise <= 0:
        return cap
    return max(0.0, min(cap, 10 * math.log10(signal / noise))) if signal > 0 else 0.0


def _std(images: np.ndarray, peak: float) -> float:
    values = images.astype(np.float64)
    return float(np.std(values)) / peak if np.isfinite(values).all() else math.nan


def compare(images: np.ndarray, latents: np.ndarray | None, reference: Reference) -> QualityScores:
    """The quality numbers of one output against the reference. Besides PSNR and SSIM: the
    fraction of non-finite values and the spread of the output and of the reference (in data
    ranges), which the sanity floor reads (`broken_output`)."""
    if images.shape != reference["images"].shape:
        raise ValueError(f"output shape {images.shape} differs from the reference's {reference['images'].shape}")
    peak = data_range(reference["images"])
    latent_error = None
    if latents is not None and "latents" in reference and latents.shape == reference["latents"].shape:
        latent_error = _rounded(relative_error(latents, reference["latents"]))
    return QualityScores(psnr_db=round(psnr(images, reference["images"], peak), 3),
                         ssim=round(ssim(images, reference["images"], peak), 5),
                         data_range=peak,
                         nonfinite_fraction=round(float(np.mean(~np.isfinite(images.astype(np.float64)))), 6),
                         output_std=_rounded(_std(images, peak)),
                         reference_std=_rounded(_std(reference["images"], peak)),
                         latent_rel_error=latent_error)


def _rounded(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else value


def broken_output(quality: QualityScores) -> str | None:
    """Why an output is no image at all, whatever the settings: NaN or infinite values, or one
    flat colour where the reference is not. None when it passes."""
    nonfinite = quality.nonfinite_fraction or 0.0
    if nonfinite > 0 or not math.isfinite(quality.psnr_db if quality.psnr_db is not None else 0.0):
        return f"{100 * nonfinite:.3g}% of its output is NaN or infinite"
    std, reference_std = quality.output_std, quality.reference_std
    if std is not None and reference_std is not None and std <= CONSTANT_STD < reference_std:
        return "its output is one flat colour (the reference's is not)"
    return None


def exact_problem(quality: QualityScores) -> str | None:
    """Why an exact setting's output cannot be float reordering of the reference's, or None."""
    broken = broken_output(quality)
    if broken:
        return broken
    for what, per_call in (("denoiser", quality.denoiser_sqnr_db), ("VAE decode", quality.decode_sqnr_db)):
        if per_call is not None and not per_call >= EXACT_MIN_SQNR_DB:
            return (f"its {what} is {per_call:.1f} dB SQNR from the reference's on the same inputs, under the "
                    f"{EXACT_MIN_SQNR_DB:g} dB float reordering keeps")
    value = quality.psnr_db if quality.psnr_db is not None else math.nan
    if not value >= EXACT_MIN_PSNR_DB:  # NaN fails too
        return f"PSNR {value:.1f} dB against the reference, under the {EXACT_MIN_PSNR_DB:g} dB any float reordering keeps"
    return None


def reference_problem(reference: Reference) -> str | None:
    """Why a reference output cannot judge anything (NaN, or one flat colour), or None."""
    images = reference["images"].astype(np.float64)
    if not np.isfinite(images).all():
        return f"{100 * float(np.mean(~np.isfinite(images))):.3g}% of the reference output is NaN or infinite"
    if float(np.std(images)) / data_range(reference["images"]) <= CONSTANT_STD:
        return "the reference output is one flat colour"
    return None


def save_reference(path: Path, images: np.ndarray, latents: np.ndarray | None,
                   extra: dict[str, np.ndarray] | None = None) -> None:
    """Write atomically: workers that start later read it. `extra`: the denoiser calls kept for
    the per-call error (denoiser_calls.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")  # several processes may write it
    arrays = {"images": images} if latents is None else {"images": images, "latents": latents}
    np.savez(tmp, **arrays, **(extra or {}))
    tmp.replace(path)


def load_reference(path: Path) -> Reference:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def per_call_sqnr(quality: QualityScores) -> float | None:
    """A setting's own error: the lower of its denoiser's and its VAE decode's per-call SQNR on
    the reference's inputs (None: neither was measured)."""
    values = [v for v in (quality.denoiser_sqnr_db, quality.decode_sqnr_db) if v is not None]
    return min(values) if values else None


class Floor(NamedTuple):
    """The floor a lossy setting is judged on: the metric's name, the floor and the value, in dB."""

    metric: str
    floor_db: float
    value_db: float | None


def applicable_floor(quality: QualityScores, min_psnr: float | None, min_sqnr: float | None = None,
                     end_to_end: bool = False) -> Floor | None:
    """`min_sqnr` on the per-call SQNR (`per_call_sqnr`) where that was measured, unless the
    setting is judged `end_to_end` (an error the per-call replay cannot see); otherwise
    `min_psnr` on the final image. None: no floor applies."""
    per_call = per_call_sqnr(quality)
    if min_sqnr is not None and per_call is not None and not end_to_end:
        return Floor("SQNR per call", min_sqnr, per_call)
    if min_psnr is not None:
        return Floor("PSNR", min_psnr, quality.psnr_db)
    return None


def below_floor(quality: QualityScores | None, min_psnr: float | None, min_sqnr: float | None = None,
                end_to_end: bool = False) -> float:
    """Optuna constraint value (<= 0 passes): how far a lossy setting is under its floor
    (`applicable_floor`), relative. No floor passes; missing numbers pass here (the caller
    decides what an unjudged trial is); a non-finite value is as far under as it gets."""
    floor = applicable_floor(quality, min_psnr, min_sqnr, end_to_end) if quality is not None else None
    if floor is None or floor.value_db is None:
        return 0.0
    if not math.isfinite(floor.value_db):
        return 1.0
    return (floor.floor_db - floor.value_db) / floor.floor_db

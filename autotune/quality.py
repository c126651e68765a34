"""How far a trial's output is from the exact reference: PSNR and SSIM of the images, and the
relative error of the final latents.

The reference is the same prompt, seed and steps run with exact settings (fp32 on CPU). Images
are compared as the pipeline returns them with `output_type="np"` (floats in [0, 1], shape
(batch, [frames,] H, W, C)); latents are those after the last denoising step, before the VAE.
Numpy only: the search process compares without importing torch.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

#: What identical outputs score (PSNR is infinite there; a finite number keeps JSON and YAML plain).
PSNR_IDENTICAL_DB = 100.0


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    if not math.isfinite(mse):  # NaN or inf in the output: as bad as it gets
        return 0.0
    if mse <= 0:
        return PSNR_IDENTICAL_DB
    return min(PSNR_IDENTICAL_DB, 10 * math.log10(1.0 / mse))


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - size // 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filter over the two image axes of a (H, W) array."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03, data range 1), averaged over images, frames and channels."""
    a = output.astype(np.float64).reshape(-1, *output.shape[-3:])
    b = reference.astype(np.float64).reshape(-1, *reference.shape[-3:])
    size = min(11, a.shape[1], a.shape[2])
    kernel = _gaussian_kernel(size, 1.5 * size / 11)
    c1, c2 = 0.01**2, 0.03**2
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
    return float(np.mean(scores))


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """||output - reference|| / ||reference||."""
    norm = float(np.linalg.norm(reference.astype(np.float64)))
    diff = float(np.linalg.norm(output.astype(np.float64) - reference.astype(np.float64)))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


def compare(images: np.ndarray, latents: np.ndarray | None, reference: dict[str, np.ndarray]) -> dict[str, float]:
    """The quality numbers of one output against the reference."""
    if images.shape != reference["images"].shape:
        raise ValueError(f"output shape {images.shape} differs from the reference's {reference['images'].shape}")
    out = {"psnr_db": round(psnr(images, reference["images"]), 3),
           "ssim": round(ssim(images, reference["images"]), 5)}
    if latents is not None and "latents" in reference and latents.shape == reference["latents"].shape:
        out["latent_rel_error"] = round(relative_error(latents, reference["latents"]), 6)
    return out


def save_reference(path: Path, images: np.ndarray, latents: np.ndarray | None) -> None:
    """Write atomically: workers that start later read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")  # several processes may write it
    arrays = {"images": images} if latents is None else {"images": images, "latents": latents}
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_reference(path: Path) -> dict[str, Any]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def below_floor(quality: dict[str, float] | None, min_psnr: float | None) -> float:
    """Optuna constraint value (<= 0 passes): how far the PSNR is under the floor, relative."""
    if min_psnr is None or not quality or "psnr_db" not in quality:
        return 0.0
    return (min_psnr - quality["psnr_db"]) / min_psnr

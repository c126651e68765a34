"""Procedural images that the `builtin:tiny-sd-shapes` model was trained on: a gradient background
with a few flat-coloured discs, boxes and stripe bands. Simple enough to learn in minutes on a
CPU, structured enough that PSNR and SSIM mean what they mean on photographs (edges, flat areas,
smooth ramps), unlike the random built-ins' coloured noise.

Numpy only and seeded: the training script (scripts/train_tiny_sd_shapes.py) draws the same
images on every machine.
"""
from __future__ import annotations

import numpy as np

#: Shapes per image, at least and at most.
MIN_SHAPES, MAX_SHAPES = 1, 3


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=3)


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A linear ramp between two colours in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2  # about [0, 1] across the image
    a, b = _colour(rng), _colour(rng)
    return a[:, None, None] * (1 - ramp) + b[:, None, None] * ramp


def _mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """One shape as a boolean mask over the image, in coordinates from -1 to 1."""
    kind = rng.integers(3)
    cy, cx = rng.uniform(-0.6, 0.6, size=2)
    if kind == 0:  # disc
        radius = rng.uniform(0.2, 0.5)
        return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    if kind == 1:  # box
        hy, hx = rng.uniform(0.15, 0.5, size=2)
        return (np.abs(yy - cy) < hy) & (np.abs(xx - cx) < hx)
    period = rng.uniform(0.5, 0.9)  # stripes: a band of parallel bars, wide enough for 8x8 latents
    angle = rng.uniform(0, np.pi)
    along = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
    across = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
    return (np.abs(across) < rng.uniform(0.3, 0.6)) & (np.mod(along, period) < period / 2)


def shape_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """One (3, size, size) float32 image in [-1, 1] (the range diffusers' VAEs take)."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    image = _background(rng, yy, xx)
    for _ in range(rng.integers(MIN_SHAPES, MAX_SHAPES + 1)):
        image = np.where(_mask(rng, yy, xx)[None], _colour(rng)[:, None, None], image)
    return np.clip(image, -1, 1).astype(np.float32)


def shape_images(seed: int, count: int, size: int) -> np.ndarray:
    """`count` images, (count, 3, size, size) float32 in [-1, 1], the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.stack([shape_image(rng, size) for _ in range(count)])

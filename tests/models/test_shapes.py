"""The procedural training images: seeded, in the VAE's range, and structured (flat areas and
edges), which is what the trained built-in is meant to reproduce."""
from __future__ import annotations

import numpy as np

from autotune.models.shapes import shape_images


def test_same_seed_same_images_and_other_seed_other_images():
    a, b, c = shape_images(3, 4, 32), shape_images(3, 4, 32), shape_images(4, 4, 32)
    assert a.shape == (4, 3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_images_span_the_vae_range_and_are_mostly_smooth():
    images = shape_images(0, 16, 64)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.3
    steps = np.abs(np.diff(images, axis=-1))
    # flat areas and ramps (tiny steps) with a few edges (big ones): nothing like noise
    assert np.median(steps) < 0.05 and (steps > 0.2).mean() < 0.1
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape)
    assert np.median(np.abs(np.diff(noise, axis=-1))) > 0.4

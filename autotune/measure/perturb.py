"""A controlled float perturbation of the denoiser: every element of its output moved by one ulp
(up or down, seeded) on every call, the same on every image of the batch as a reordered kernel
would be. It is the smallest change a float reordering can make, with a known size, so a
measurement can tell what sampling does to it (the trajectory) from what a knob does to one
call: benchmarks/quality_per_call.py and tests/measure/test_denoiser_calls.py use it.

Runs where torch is imported (benchmarks, tests); nothing in a search uses it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from autotune.measure.denoiser_calls import denoiser_of


class NoDenoiserError(LookupError):
    """The pipeline has no module named like a denoiser to perturb."""


def one_ulp(output: Any, generator: Any) -> Any:
    """`output` with each element one ulp up or down at random (broadcast over the batch)."""
    import torch

    up = torch.rand(output.shape[1:], generator=generator, device="cpu") < 0.5
    up = up.to(output.device).expand_as(output)
    towards = torch.where(up, torch.full_like(output, float("inf")), torch.full_like(output, float("-inf")))
    return torch.nextafter(output, towards)


@contextlib.contextmanager
def perturbed_denoiser(pipe: Any, seed: int = 0, calls: int | None = None) -> Iterator[None]:
    """Perturb the denoiser's output by one ulp per element while the block runs; with `calls`,
    only the first `calls` calls (1: the first step only, to see how far one step's error grows)."""
    import torch

    module = denoiser_of(pipe)
    if module is None:
        raise NoDenoiserError(f"{type(pipe).__name__} has no unet or transformer to perturb")
    generator = torch.Generator("cpu").manual_seed(seed)
    count = 0

    def hook(_module: Any, _args: tuple, output: Any) -> Any:
        nonlocal count
        count += 1
        if calls is not None and count > calls:
            return output
        if isinstance(output, tuple):
            return (one_ulp(output[0], generator), *output[1:])
        if hasattr(output, "sample"):
            output.sample = one_ulp(output.sample, generator)
            return output
        return one_ulp(output, generator)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

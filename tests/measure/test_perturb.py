"""The controlled perturbation: exactly one ulp per element, the same on every image of the
batch, on every call or only the first ones, and nothing once the block ends."""
from __future__ import annotations

import pytest
import torch

from autotune.measure import perturb


class _Pipe:
    def __init__(self) -> None:
        self.unet = torch.nn.Identity()


def test_one_ulp_moves_every_element_by_one_ulp_the_same_across_the_batch():
    x = torch.randn(1, 3, 4, 4).repeat(2, 1, 1, 1)
    moved = perturb.one_ulp(x, torch.Generator().manual_seed(0))
    up, down = (torch.nextafter(x, torch.full_like(x, v)) for v in (float("inf"), float("-inf")))
    assert torch.all((moved == up) | (moved == down))
    assert torch.equal(moved[0], moved[1])
    assert 0.3 < (moved > x).float().mean() < 0.7  # up or down at random


def test_only_the_first_calls_and_only_inside_the_block():
    pipe, x = _Pipe(), torch.randn(1, 4, 2, 2)
    with perturb.perturbed_denoiser(pipe, calls=1):
        first, second = pipe.unet(x), pipe.unet(x)
    assert not torch.equal(first, x) and torch.equal(second, x)
    with perturb.perturbed_denoiser(pipe):
        assert not torch.equal(pipe.unet(x), x) and not torch.equal(pipe.unet(x), x)
    assert torch.equal(pipe.unet(x), x)


def test_a_pipeline_without_a_denoiser_is_refused():
    with pytest.raises(perturb.NoDenoiserError), perturb.perturbed_denoiser(object()):
        pass

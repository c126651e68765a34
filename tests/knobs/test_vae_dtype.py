"""vae_dtype (autotune/knobs/builtin/vae_dtype.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.knob_conformance import baseline_images, conformance, partners  # noqa: F401  (fixture)
from helpers.zoo import ZOO_NAMES, build, run

from autotune import knobs
from autotune.knobs.settings import apply_settings
from autotune.errors import InvalidAssignmentError
from autotune.knobs.space import SearchSpace, check_values


def check(pipe, value):
    if value == "fp32":
        assert pipe.vae.dtype == torch.float32 and pipe.unet.dtype == torch.float16
        assert pipe.vae.decoder._forward_pre_hooks and pipe.vae.encoder._forward_pre_hooks
    else:
        assert pipe.vae.dtype == pipe.unet.dtype
        assert not pipe.vae.decoder._forward_pre_hooks


test_conformance = conformance("vae_dtype", check)


def test_it_is_searched_with_a_half_precision_pipeline_only():
    assert partners("vae_dtype", "fp32") == {"dtype": "fp16"}
    space = SearchSpace(knobs.Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"})))
    pairs = {(a["dtype"], a["vae_dtype"]) for a in space}
    assert pairs == {("fp32", "same"), ("fp16", "same"), ("bf16", "same"), ("fp16", "fp32"), ("bf16", "fp32")}
    with pytest.raises(InvalidAssignmentError, match="vae_dtype='fp32' conflicts with dtype='fp32'"):
        check_values({**{k.name: k.default for k in knobs.all_knobs()}, "vae_dtype": "fp32"})


def test_without_its_hooks_an_fp32_vae_under_fp16_fails(tiny_pipe):
    """What the hooks are for: diffusers hands the VAE latents in the denoiser's dtype."""
    apply_settings(tiny_pipe, {"dtype": "fp16"}, device="cpu")
    tiny_pipe.vae.to(torch.float32)
    with pytest.raises(RuntimeError, match="type"):
        tiny_pipe("a cat", height=64, width=64, num_inference_steps=1, output_type="np")


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_pipeline_class_runs_its_vae_in_fp32_under_bf16(name):
    """Text to image, image to image and inpainting (the encoder's latents go back to bf16),
    SDXL (its own upcast sees an fp32 VAE and skips), the 3-D Wan VAE, and the VAEs without
    quant convs of SD3 and Flux."""
    pipe = build(name)
    apply_settings(pipe, {"dtype": "bf16", "vae_dtype": "fp32"}, device="cpu")
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    assert pipe.vae.dtype == torch.float32 and denoiser.dtype == torch.bfloat16
    out = run(pipe, name)
    assert np.isfinite(out).all()


def test_the_planner_counts_the_vae_in_fp32(tiny_pipe):
    from autotune.planner import Planner
    from autotune.target import Target

    defaults = {k.name: k.default for k in knobs.all_knobs()}
    planner = Planner(Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**33))
    half = {**defaults, "dtype": "fp16"}
    upcast = {**half, "vae_dtype": "fp32"}
    vae_params = sum(p.numel() for p in tiny_pipe.vae.parameters())
    assert planner._weight_stats("vae", upcast).total == 4 * vae_params
    assert planner._weight_stats("vae", half).total == 2 * vae_params
    assert planner._weight_stats("unet", upcast).total == planner._weight_stats("unet", half).total
    assert planner._activation("vae", upcast) == 2 * planner._activation("vae", half)

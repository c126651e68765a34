"""vae_tiling (autotune/knobs/builtin/vae_tiling.py)."""
from __future__ import annotations

from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs


def check(pipe, value):
    assert pipe.vae.use_tiling is value


test_conformance = conformance("vae_tiling", check)


def test_the_planner_traces_the_vae_tiled_and_tiling_is_lossy():
    from helpers.zoo import build

    vae, knob = build("sd").vae, knobs.get("vae_tiling")
    knob.plan.configure(vae, True)
    assert vae.use_tiling
    knob.plan.configure(vae, False)
    assert not vae.use_tiling
    assert knob.is_lossy(True)


def test_it_is_left_out_where_the_vae_decodes_the_latent_in_one_tile():
    """Against diffusers' own AutoencoderKL: with tiling on, a latent up to the tile decodes to
    the same pixels as without (nothing to search); a larger one is tiled."""
    import dataclasses

    import torch
    from helpers.zoo import build

    from autotune.knobs.probe import module_facts, pipeline_context

    pipe = build("sd")
    vae, knob = pipe.vae, knobs.get("vae_tiling")
    limit = module_facts(vae).untiled_up_to
    assert limit == (vae.tile_sample_min_size,) * 2 == (64, 64)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def decode(pixels: int, tiled: bool) -> torch.Tensor:
        (vae.enable_tiling if tiled else vae.disable_tiling)()
        z = torch.randn(1, vae.config.latent_channels, pixels // factor, pixels // factor,
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return vae.decode(z).sample

    assert torch.equal(decode(64, tiled=True), decode(64, tiled=False))
    assert not torch.equal(decode(128, tiled=True), decode(128, tiled=False))

    ctx = pipeline_context(pipe, "cpu")
    sized = dataclasses.replace(ctx, height=64, width=64, batch=1)
    assert knob.excluded_by_default(True, sized) == (
        "does nothing at 64x64: vae (AutoencoderKL) decodes up to 64x64 in one tile")
    assert knob.excluded_by_default(True, dataclasses.replace(sized, width=72)) is None
    assert knob.excluded_by_default(True, ctx) is None  # no size known (a profile applied): any size
    # a VAE whose tiling rule is not known here (Wan's tiles in time too) is never left out
    wan = dataclasses.replace(pipeline_context(build("wan"), "cpu"), height=8, width=8, batch=1)
    assert wan.facts("vae").untiled_up_to is None and knob.excluded_by_default(True, wan) is None

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
    # a VAE whose tiling rule is not known here is never left out
    unknown = dataclasses.replace(sized, modules={"vae": dataclasses.replace(ctx.facts("vae"), untiled_up_to=None)})
    assert knob.excluded_by_default(True, unknown) is None


def test_wan_s_video_vae_is_left_out_up_to_its_tile_too():
    """Against diffusers' own AutoencoderKLWan (frame by frame): with tiling on, a latent up to
    its 256 px tile decodes to the same frames as without; a wider one is tiled."""
    import dataclasses

    import torch
    from helpers.zoo import build

    from autotune.knobs.probe import module_facts, pipeline_context

    pipe = build("wan")
    vae, knob = pipe.vae, knobs.get("vae_tiling")
    assert module_facts(vae).untiled_up_to == (vae.tile_sample_min_height, vae.tile_sample_min_width) == (256, 256)
    factor = vae.spatial_compression_ratio

    def decode(width: int, tiled: bool) -> torch.Tensor:
        (vae.enable_tiling if tiled else vae.disable_tiling)()
        z = torch.randn(1, vae.config.z_dim, 2, 256 // factor, width // factor,
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return vae.decode(z).sample

    assert torch.equal(decode(256, tiled=True), decode(256, tiled=False))
    assert not torch.equal(decode(320, tiled=True), decode(320, tiled=False))

    sized = dataclasses.replace(pipeline_context(pipe, "cpu"), height=256, width=256, batch=1)
    assert knob.excluded_by_default(True, sized) == (
        "does nothing at 256x256: vae (AutoencoderKLWan) decodes up to 256x256 in one tile")
    assert knob.excluded_by_default(True, dataclasses.replace(sized, width=832, height=480)) is None

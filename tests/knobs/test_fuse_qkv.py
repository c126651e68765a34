"""fuse_qkv (autotune/knobs/builtin/fuse_qkv.py): the knob added as one module."""
from __future__ import annotations

import pytest
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)
from helpers.zoo import zoo  # noqa: F401  (the session fixture of saved tiny pipelines)

from autotune import knobs
from autotune.knobs.settings import apply_settings
from autotune.errors import InvalidAssignmentError
from autotune.knobs import Context


def check(pipe, value):
    attentions = [m for m in pipe.unet.modules() if hasattr(m, "fused_projections")]
    assert attentions
    assert all(m.fused_projections is value for m in attentions)
    assert all(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in attentions) is value
    names = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert names == ({"FusedAttnProcessor2_0"} if value else {"AttnProcessor2_0"})


test_conformance = conformance("fuse_qkv", check)


def _param_bytes(module):
    return sum(p.numel() * p.element_size() for p in module.parameters())


@pytest.mark.parametrize("name", ["sd", "sdxl", "pixart", "wan", "sd3", "flux"])
def test_the_planner_counts_the_fused_copies_the_real_denoiser_holds(zoo, name):  # noqa: F811
    """diffusers keeps q/k/v beside the fused projection: the planner's extra weight bytes are
    exactly what fusing adds to the real denoiser."""
    from helpers.zoo import build

    from autotune.planner import Planner
    from autotune.target import Target

    pipe = build(name)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    before = _param_bytes(denoiser)
    knobs.get("fuse_qkv").apply(pipe, True, knobs.ApplyContext("cpu"))
    added = _param_bytes(denoiser) - before
    assert added > 0
    target = Target(model=str(zoo[name]), height=32, width=32, batch=1, steps=2, max_vram=2**33,
                    frames=5 if name == "wan" else None)
    planner = Planner(target)
    unfused, fused = planner.predict({}), planner.predict({"fuse_qkv": True})
    assert planner._weight_stats(planner._denoiser, {"fuse_qkv": True}).total \
        - planner._weight_stats(planner._denoiser, {}).total == added
    assert fused.total_bytes >= unfused.total_bytes


def test_fused_projections_are_cast_to_fp8_with_the_rest(tiny_pipe):
    import torch

    apply_settings(tiny_pipe, {"fuse_qkv": True, "layerwise_fp8": True}, device="cpu")
    fused = next(m.to_qkv for m in tiny_pipe.unet.modules() if hasattr(m, "to_qkv"))
    assert fused.weight.dtype == torch.float8_e4m3fn
    names = [k.name for k in knobs.all_knobs()]
    assert names.index("dtype") < names.index("fuse_qkv") < names.index("layerwise_fp8")


def test_sliced_attention_would_undo_the_fusion():
    from autotune.knobs.space import check_values

    with pytest.raises(InvalidAssignmentError, match="unfused"):
        check_values({"fuse_qkv": True, "attention": "sliced"})
    check_values({"fuse_qkv": True, "attention": "sdpa"})


def test_searched_on_cuda_included_on_demand_on_cpu():
    from autotune.knobs.space import SearchSpace

    cuda = Context(device="cuda", components=frozenset({"unet", "vae", "text_encoder"}),
                   component_classes={"unet": ("diffusers", "UNet2DConditionModel")})
    assert knobs.get("fuse_qkv").reason_unavailable(True, cuda) is None
    assert "fuse_qkv" in SearchSpace(cuda).searched_knobs
    cpu = Context(device="cpu", components=cuda.components)
    assert "fuse_qkv" not in SearchSpace(cpu).searched_knobs
    assert "fuse_qkv" in SearchSpace(cpu, include=["fuse_qkv"]).searched_knobs


def test_unavailable_on_a_denoiser_class_without_it():
    ctx = Context(device="cuda", components=frozenset({"transformer", "vae"}),
                  component_classes={"transformer": ("diffusers", "DiTTransformer2DModel")})
    import diffusers

    if callable(getattr(diffusers.DiTTransformer2DModel, "fuse_qkv_projections", None)):
        pytest.skip("this diffusers gives DiTTransformer2DModel fuse_qkv_projections")
    assert "fuse_qkv_projections" in knobs.get("fuse_qkv").reason_unavailable(True, ctx)

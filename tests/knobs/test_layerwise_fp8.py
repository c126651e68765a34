"""layerwise_fp8 (autotune/knobs/builtin/layerwise_fp8.py)."""
from __future__ import annotations

import torch
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.settings import hooked_modules
from autotune.knobs.builtin.layerwise_fp8 import cast_layers
from autotune.planner.stats import weight_stats
from helpers.modules import Blocks  # 3 Linear blocks between an fp8-skipped proj_in and norm


def check(pipe, value):
    weight = pipe.unet.conv_in.weight
    if value:
        assert weight.dtype == torch.float8_e4m3fn
        assert any(name.startswith("unet") for name in hooked_modules(pipe))
        # only the denoiser is stored in fp8
        assert pipe.vae.encoder.conv_in.weight.dtype == torch.float32
    else:
        assert not any(p.dtype == torch.float8_e4m3fn for m in (pipe.unet, pipe.vae) for p in m.parameters())
        assert hooked_modules(pipe) == []


test_conformance = conformance("layerwise_fp8", check)


def test_the_planner_stores_the_layers_diffusers_casts_in_one_byte():
    assert cast_layers(Blocks()) == {"blocks.0", "blocks.1", "blocks.2"}
    storage = knobs.get("layerwise_fp8").plan.storage(Blocks(), True)
    assert storage == {f"blocks.{i}.{p}": 1 for i in range(3) for p in ("weight", "bias")}
    assert knobs.get("layerwise_fp8").plan.storage(Blocks(), False) == {}
    cast = weight_stats(Blocks(), storage=storage)
    assert cast.total == 80 + 3 * (64 + 8) + 64 + 8  # cast layers: weight and bias at 1 byte each
    assert cast.largest_upcast_layer == 288           # one layer back in fp32 while it runs


def test_it_is_applied_after_dtype():
    names = [k.name for k in knobs.all_knobs()]
    assert names.index("dtype") < names.index("layerwise_fp8")

"""channels_last (autotune/knobs/builtin/channels_last.py)."""
from __future__ import annotations

import torch
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs import ApplyContext
from autotune.knobs.builtin import channels_last
from autotune.planner import calibration


def check(pipe, value):
    for conv in (pipe.unet.conv_in.weight, pipe.vae.decoder.conv_in.weight):
        assert conv.dim() == 4
        assert conv.is_contiguous(memory_format=torch.channels_last) is value
    if not value:
        assert pipe.unet.conv_in.weight.is_contiguous()


test_conformance = conformance("channels_last", check)


def test_channels_last_touches_only_2d_conv_modules():
    from helpers.zoo import build

    wan = build("wan")
    knobs.get("channels_last").apply(wan, True, ApplyContext("cpu"))  # no rank-5 error: nothing to do
    assert wan.vae.decoder.conv_in.weight.dim() == 5 and wan.vae.decoder.conv_in.weight.is_contiguous()
    pixart = build("pixart")
    knobs.get("channels_last").apply(pixart, True, ApplyContext("cpu"))
    assert pixart.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not pixart.vae.decoder.conv_in.weight.is_contiguous()


def test_the_planner_gives_the_decode_less_workspace_without_layout_copies():
    factor = knobs.get("channels_last").plan.vae_workspace_factor
    assert factor(True) == channels_last.VAE_DECODE_WORKSPACE_FACTOR < calibration.VAE_DECODE_WORKSPACE_FACTOR
    assert factor(False) is None

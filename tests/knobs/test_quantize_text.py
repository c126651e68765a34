"""quantize_text (autotune/knobs/builtin/quantize_text.py): the text encoders quantized apart
from the denoiser. Without torchao every scheme says how to get it; with it (CI's quantization
step) the CPU schemes apply to the text encoder alone and the planner counts its bytes."""
from __future__ import annotations

import pytest
import torch
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.knobs.builtin.quantize import INSTALL, SCHEMES
from autotune.planner import Planner
from autotune.target import Target

from knobs.test_quantize import _is_quantized, needs_torchao, real_bytes


def check(pipe, value):
    text = [m for m in pipe.text_encoder.modules() if isinstance(m, torch.nn.Linear)]
    if value == "none":
        assert not any(_is_quantized(m.weight) for m in text)
    else:
        assert text and all(_is_quantized(m.weight) for m in text)
        assert not any(_is_quantized(m.weight) for m in pipe.unet.modules()
                       if isinstance(m, torch.nn.Linear))  # the denoiser is the other knob's


test_conformance = conformance("quantize_text", check)


def test_it_is_judged_on_the_final_image_and_needs_torchao(monkeypatch):
    """The per-call replay feeds the denoiser the reference's prompt embeddings: a text
    encoder's error shows only end to end."""
    from autotune.knobs import Context

    knob = knobs.get("quantize_text")
    assert all(knob.is_lossy(v) and knob.is_judged_end_to_end(v) for v in SCHEMES)
    monkeypatch.setattr(Context, "has_package", lambda self, name: False)
    ctx = Context(device="cuda", components=frozenset({"unet", "vae", "text_encoder"}))
    assert all(INSTALL in knob.reason_unavailable(v, ctx) for v in SCHEMES)
    no_text = Context(device="cuda", components=frozenset({"transformer", "vae"}))
    assert "no text_encoder" in knob.reason_unavailable("int8-weight-only", no_text)


def test_the_planner_narrows_only_the_text_encoders_weights():
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30, device="cuda")
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    planner = Planner(target)
    plain = {c: planner._weight_stats(c, defaults).total for c in ("unet", "text_encoder")}
    quantized = {c: planner._weight_stats(c, {**defaults, "quantize_text": "int8-weight-only"}).total
                 for c in ("unet", "text_encoder")}
    assert quantized["unet"] == plain["unet"]
    linears = [m for m in planner._module("text_encoder", defaults).modules() if isinstance(m, torch.nn.Linear)]
    saved = sum(m.out_features * m.in_features * 4 - m.out_features * (m.in_features + 5) for m in linears)
    assert linears and plain["text_encoder"] - quantized["text_encoder"] == saved  # fp32 to int8 + a scale a row


@needs_torchao
@pytest.mark.parametrize("value", ["int8-weight-only", "float8-weight-only"])
def test_the_planner_predicts_the_quantized_text_encoder_within_2_percent(tiny_pipe, value):
    from autotune.knobs.settings import apply_settings

    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    predicted = Planner(target)._weight_stats("text_encoder", {**defaults, "quantize_text": value})
    apply_settings(tiny_pipe, {"quantize_text": value}, device="cpu")
    measured = real_bytes(tiny_pipe.text_encoder)
    assert abs(predicted.total - measured) / measured < 0.02

"""vae_slicing (autotune/knobs/builtin/vae_slicing.py)."""
from __future__ import annotations

import pytest
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs


def check(pipe, value):
    assert pipe.vae.use_slicing is value


test_conformance = conformance("vae_slicing", check)


def test_the_planner_traces_the_vae_sliced():
    from helpers.zoo import build

    vae, plan = build("sd").vae, knobs.get("vae_slicing").plan
    assert plan.roles == {"vae"}
    plan.configure(vae, True)
    assert vae.use_slicing
    plan.configure(vae, False)
    assert not vae.use_slicing


#: A zoo pipeline and the shape of one latent (batch left out) its VAE decodes.
LATENTS = {"sd": lambda vae: (vae.config.latent_channels, 8, 8),                  # AutoencoderKL
           "wan": lambda vae: (vae.config.z_dim, 2, 4, 4)}                        # AutoencoderKLWan: frames


@pytest.mark.parametrize("name, vae_class", [("sd", "AutoencoderKL"), ("wan", "AutoencoderKLWan")])
def test_it_is_left_out_at_batch_1_where_there_is_nothing_to_slice(monkeypatch, name, vae_class):
    """Against diffusers' own VAEs: sliced, a batch of one (image or video) decodes in one call,
    as unsliced; a batch of two in two."""
    import dataclasses

    import torch
    from helpers.zoo import build

    from autotune.knobs.probe import pipeline_context

    pipe = build(name)
    vae, knob = pipe.vae, knobs.get("vae_slicing")
    calls: list[int] = []
    real = vae._decode
    monkeypatch.setattr(vae, "_decode", lambda z, *a, **kw: calls.append(z.shape[0]) or real(z, *a, **kw))

    def decode_calls(batch: int, sliced: bool) -> list[int]:
        calls.clear()
        (vae.enable_slicing if sliced else vae.disable_slicing)()
        with torch.no_grad():
            vae.decode(torch.zeros(batch, *LATENTS[name](vae)))
        return list(calls)

    assert decode_calls(1, sliced=True) == decode_calls(1, sliced=False) == [1]
    assert decode_calls(2, sliced=True) == [1, 1] and decode_calls(2, sliced=False) == [2]

    ctx = pipeline_context(pipe, "cpu")
    assert knob.excluded_by_default(True, dataclasses.replace(ctx, batch=1)) == (
        f"does nothing at batch 1: vae ({vae_class}) slices a batch into single images")
    assert knob.excluded_by_default(True, dataclasses.replace(ctx, batch=2)) is None
    assert knob.excluded_by_default(True, ctx) is None  # no batch known: any batch

"""attention (autotune/knobs/builtin/attention.py)."""
from __future__ import annotations

from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs


def check(pipe, value):
    processors = pipe.unet.attn_processors
    assert processors
    names = {type(p).__name__ for p in processors.values()}
    if value == "sliced":
        assert all(getattr(p, "slice_size", None) for p in processors.values()), names
    elif value == "sdpa":
        assert names == {"AttnProcessor2_0"}
    else:  # pragma: no cover - xformers is unavailable on cpu
        raise AssertionError(value)


test_conformance = conformance("attention", check)


def test_the_planner_slices_the_fake_unet_and_undoes_it():
    from helpers.zoo import build

    unet = build("sd").unet
    configure = knobs.get("attention").plan.configure
    configure(unet, "sdpa")
    built = {type(p).__name__ for p in unet.attn_processors.values()}
    configure(unet, "sliced")
    assert all(getattr(p, "slice_size", None) for p in unet.attn_processors.values())
    configure(unet, "sdpa")
    assert {type(p).__name__ for p in unet.attn_processors.values()} == built


def test_sliced_attention_is_the_slow_value_in_the_prior():
    attention = knobs.get("attention")
    assert attention.speed_rank("sliced", "cuda") > attention.speed_rank("sdpa", "cuda")
    assert attention.speed_rank("xformers", "cuda") == attention.speed_rank("sdpa", "cuda")

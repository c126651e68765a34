"""attention_backend (autotune/knobs/builtin/attention_backend.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers.knob_conformance import baseline_images, conformance  # noqa: F401  (fixture)

from autotune import knobs
from autotune.errors import InvalidAssignmentError
from autotune.knobs import ApplyContext, Context


def check(pipe, value):
    assert value == "native"  # the only value on cpu; and the UNet does not dispatch through it
    assert all(getattr(p, "_attention_backend", None) is None for p in pipe.unet.attn_processors.values())


test_conformance = conformance("attention_backend", check)


def _reason(ctx, value):
    return knobs.get("attention_backend").reason_unavailable(value, ctx)


def test_it_needs_cuda_and_its_package():
    from helpers.zoo import build

    from autotune.knobs.probe import pipeline_context

    wan = pipeline_context(build("wan"), "cuda")
    cpu = dataclasses.replace(wan, device="cpu")
    assert "cuda" in _reason(cpu, "_native_flash")
    if not wan.has_package("sageattention"):
        assert "sageattention" in _reason(wan, "sage")
    assert _reason(cpu, "native") is None


def test_unknown_without_module_facts():
    bare = Context(device="cuda", components=frozenset({"transformer", "vae"}))
    assert "probe" in _reason(bare, "_native_flash")


def test_half_precision_kernels_conflict_with_fp32():
    from autotune.knobs.space import check_values

    with pytest.raises(InvalidAssignmentError, match="fp16/bf16"):
        check_values({"attention_backend": "_native_flash", "dtype": "fp32"})
    check_values({"attention_backend": "_native_flash", "dtype": "bf16"})
    check_values({"attention_backend": "_native_efficient", "dtype": "fp32"})


def test_applies_to_dispatching_transformers_and_undoes():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from helpers.zoo import build

    from autotune.models.call import call_kwargs, output_array
    from autotune.target import Target

    pipe = build("wan")
    target = Target(model="zoo:wan", height=32, width=32, batch=1, steps=2, max_vram=2**30, frames=5,
                    call_args={"max_sequence_length": 16})
    baseline = output_array(pipe(**call_kwargs(pipe, target, 0)))
    processors = lambda: [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]  # noqa: E731
    active = _AttentionBackendRegistry._active_backend
    knob = knobs.get("attention_backend")
    try:
        # _native_flash is searched on cuda only, but PyTorch's CPU flash kernel runs it here too
        knob.apply(pipe, "_native_flash", ApplyContext("cpu"))
        assert {str(p._attention_backend.value) for p in processors()} == {"_native_flash"}
        np.testing.assert_allclose(output_array(pipe(**call_kwargs(pipe, target, 0))), baseline, atol=1e-5)
        knob.apply(pipe, "native", ApplyContext("cpu"))
        assert all(p._attention_backend is None for p in processors())
        assert _AttentionBackendRegistry._active_backend.value == "native"
    finally:
        _AttentionBackendRegistry._active_backend = active

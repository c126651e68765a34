"""apply_settings: the one way settings go on (worker and production), all or nothing: a knob
that fails leaves the pipeline as it was and is named in one line."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.zoo import zoo  # noqa: F401  (the session fixture of saved tiny pipelines)

from autotune.errors import KnobApplyError
from autotune.knobs import registry
from autotune.knobs.settings import PipelineSnapshot, apply_settings, hooked_modules


def wan_state(pipe) -> dict:
    """module_state for any pipeline: tensors, processors and backends, flags, hooks."""
    state = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            for key, tensor in comp.state_dict().items():
                state[f"{name}.{key}"] = (tensor.dtype, tensor.stride(), tensor.float().numpy().tobytes())
            processors = getattr(comp, "attn_processors", {})
            state[f"{name}.processors"] = sorted((k, type(v).__name__, getattr(v, "_attention_backend", None))
                                                 for k, v in processors.items())
    state["vae"] = (pipe.vae.use_slicing, pipe.vae.use_tiling)
    state["hooks"] = hooked_modules(pipe)
    return state


def wan_frames(pipe) -> np.ndarray:
    return pipe("a red fox", height=32, width=32, num_frames=5, num_inference_steps=2, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).frames


@pytest.fixture
def failing_knob(monkeypatch):
    """Make `vae_tiling` (a late, tune-stage knob) change the VAE and then raise, as a knob that
    does not fit a module would."""

    def fail(pipe, value, ctx):
        if not value:
            return
        pipe.vae.enable_tiling()
        raise RuntimeError("required rank 4 tensor to use channels_last format\nsecond line")

    monkeypatch.setitem(registry._KNOBS, "vae_tiling", dataclasses.replace(registry.get("vae_tiling"), apply=fail))


def test_a_failing_knob_leaves_the_pipeline_as_it_was(zoo, failing_knob):  # noqa: F811
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(zoo["wan"])
    pipe.set_progress_bar_config(disable=True)
    before, frames = wan_state(pipe), wan_frames(pipe)
    with pytest.raises(KnobApplyError) as info:
        apply_settings(pipe, {"dtype": "bf16", "layerwise_fp8": True, "vae_tiling": True}, "cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith("knob vae_tiling=True failed")
    assert "layerwise_fp8=True" in message and "as it was before" in message and "RuntimeError" in message
    # bf16 weights, fp8 storage and casting hooks on ~20 modules were undone, and the VAE flag
    assert wan_state(pipe) == before and pipe.transformer.dtype == torch.float32
    np.testing.assert_array_equal(wan_frames(pipe), frames)
    # no hooks left behind: the same pipeline takes a profile afterwards
    apply_settings(pipe, {"layerwise_fp8": True}, "cpu")
    assert hooked_modules(pipe)


def test_a_pipeline_that_cannot_be_put_back_says_to_reload_it(tiny_pipe, failing_knob, monkeypatch):
    monkeypatch.setattr(PipelineSnapshot, "restore", lambda self: False)
    with pytest.raises(KnobApplyError, match="could not be put back as it was: load it again"):
        apply_settings(tiny_pipe, {"vae_tiling": True}, "cpu")


def test_out_of_memory_is_undone_and_raised_as_it_is(tiny_pipe, monkeypatch):
    def oom(pipe, value, ctx):
        pipe.vae.enable_slicing()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(registry._KNOBS, "vae_slicing", dataclasses.replace(registry.get("vae_slicing"), apply=oom))
    with pytest.raises(torch.OutOfMemoryError):
        apply_settings(tiny_pipe, {"vae_slicing": True}, "cpu")
    assert not tiny_pipe.vae.use_slicing

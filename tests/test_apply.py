"""apply_profile / load_pipeline: deterministic, strict about mismatches, findable by target."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autotune import knobs
from autotune.apply import apply_profile, find_profile, hooked_modules, load_pipeline
from autotune.errors import NoMatchingProfileError, PipelineStateError, ProfileMismatchError
from autotune.hardware import cpu_name
from autotune.profile import Profile, ProfileEntry
from autotune.target import Target

TUNED = {"dtype": "bf16", "layerwise_fp8": True, "channels_last": True, "attention": "sliced",
         "vae_slicing": True}


def make_profile(settings=None, *, model="builtin:tiny-sd", height=64, width=64, batch=1,
                 device_name=None, latency=1.0) -> Profile:
    full = {**{k.name: k.default for k in knobs.all_knobs()}, **(settings or {})}
    return Profile(
        target=Target(model=model, height=height, width=width, batch=batch, steps=2, max_vram=2**30,
                      device="cpu", pipeline_class="StableDiffusionPipeline"),
        fingerprint={"device": "cpu", "device_name": device_name or cpu_name()},
        best=ProfileEntry(settings=full, latency_median_s=latency, latency_p90_s=latency,
                          peak_bytes=2**20, peak_metric="cpu_live_tensor_peak", runs=3),
    )


def module_state(pipe) -> dict:
    """Everything applying a profile can change: tensors (values, dtype, layout), processors, flags."""
    state = {}
    for name, comp in pipe.components.items():
        if not isinstance(comp, torch.nn.Module):
            continue
        for key, tensor in comp.state_dict().items():
            state[f"{name}.{key}"] = (tensor.dtype, tensor.stride(), tensor.device.type,
                                      tensor.float().numpy().tobytes())
    state["processors"] = sorted((k, type(v).__name__) for k, v in pipe.unet.attn_processors.items())
    state["vae"] = (pipe.vae.use_slicing, pipe.vae.use_tiling)
    state["hooks"] = hooked_modules(pipe)
    return state


def generate(pipe) -> np.ndarray:
    return pipe("a red fox", height=64, width=64, num_inference_steps=2, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).images


def test_two_fresh_pipes_with_one_profile_are_identical(tmp_path):
    path = make_profile(TUNED).save(tmp_path / "p.yaml")
    pipes = []
    for _ in range(2):
        pipe = load_pipeline(path)
        handle = apply_profile(pipe, path)
        pipes.append(pipe)
    assert [k for k, _ in handle.applied] == [k.name for k in knobs.all_knobs()]
    assert dict(handle.applied)["attention"] == "sliced"
    a, b = (module_state(p) for p in pipes)
    assert a == b
    assert pipes[0].unet.dtype == torch.bfloat16
    assert next(pipes[0].unet.parameters()).dtype == torch.float8_e4m3fn  # layerwise fp8 storage
    assert np.array_equal(generate(pipes[0]), generate(pipes[1]))


def test_exact_profile_changes_nothing_numerically(tmp_path):
    baseline = generate(load_pipeline(make_profile()))
    pipe = load_pipeline(make_profile())
    apply_profile(pipe, make_profile({"attention": "sliced", "vae_slicing": True}))
    assert np.abs(generate(pipe) - baseline).max() < 1e-4


def test_pipe_with_hooks_is_refused(tiny_pipe):
    tiny_pipe.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    with pytest.raises(PipelineStateError, match="freshly loaded"):
        apply_profile(tiny_pipe, make_profile())


def test_other_model_is_refused_unless_not_strict(tiny_pipe):
    profile = make_profile(model="builtin:sd15")
    with pytest.raises(ProfileMismatchError, match="tuned for model 'builtin:sd15'"):
        apply_profile(tiny_pipe, profile)
    with pytest.warns(UserWarning, match="does not match"):
        apply_profile(tiny_pipe, profile, strict=False)


def test_other_pipeline_class_is_refused(tiny_pipe):
    profile = make_profile()
    profile.target = Target(**{**profile.target.to_dict(), "pipeline_class": "StableDiffusionXLPipeline"})
    with pytest.raises(ProfileMismatchError, match="StableDiffusionXLPipeline"):
        apply_profile(tiny_pipe, profile)


def test_other_device_warns(tiny_pipe):
    with pytest.warns(UserWarning, match="measured on 'NVIDIA H100"):
        apply_profile(tiny_pipe, make_profile(device_name="NVIDIA H100 80GB HBM3"))


def test_profile_found_by_model_and_size_preferring_this_device(tmp_path, tiny_pipe, monkeypatch):
    make_profile(height=64, width=64, latency=0.5, device_name="Other CPU").save(tmp_path / "a.yaml")
    make_profile(height=64, width=64, latency=0.9).save(tmp_path / "b.yaml")
    make_profile(height=128, width=128, latency=0.1).save(tmp_path / "c.yaml")
    make_profile(model="builtin:sd15").save(tmp_path / "d.yaml")
    (tmp_path / "broken.yaml").write_text("{{{")
    assert find_profile(tiny_pipe, height=64, width=64, profile_dir=tmp_path).name == "b.yaml"
    assert find_profile(tiny_pipe, height=128, profile_dir=tmp_path).name == "c.yaml"
    monkeypatch.setenv("AUTOTUNE_PROFILE_DIR", str(tmp_path))
    handle = apply_profile(tiny_pipe, height=128, width=128)
    assert handle.source.endswith("c.yaml")


def test_no_matching_profile_says_what_was_searched(tmp_path, tiny_pipe):
    make_profile(height=64, width=64).save(tmp_path / "a.yaml")
    with pytest.raises(NoMatchingProfileError, match=r"matches model=builtin:tiny-sd.*height=256"):
        find_profile(tiny_pipe, height=256, profile_dir=tmp_path)


def test_load_pipeline_builds_in_the_profile_dtype():
    pipe = load_pipeline(make_profile({"dtype": "fp16"}))
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16
    assert pipe.name_or_path == "builtin:tiny-sd"


def test_cuda_profile_on_a_machine_without_cuda_says_what_to_do(tiny_pipe, monkeypatch):
    from autotune.errors import InvalidTargetError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    profile = make_profile()
    profile.target = Target(**{**profile.target.to_dict(), "device": "cuda"})
    with pytest.raises(InvalidTargetError, match="no CUDA GPU is usable here"):
        apply_profile(tiny_pipe, profile)
    assert apply_profile(tiny_pipe, profile, device="cpu").device == "cpu"


def test_profile_whose_ceiling_this_device_can_hold_is_preferred(tmp_path, tiny_pipe, monkeypatch):
    from autotune import apply as apply_module

    monkeypatch.setattr(apply_module, "_current_device_memory", lambda device: 8 * 2**30)
    for name, ceiling, latency in (("small", 4, 2.0), ("fits", 8, 1.0), ("too-big", 24, 0.5)):
        p = make_profile(latency=latency, device_name="Some GPU")
        p.target = Target(**{**p.target.to_dict(), "max_vram": ceiling * 2**30})
        p.save(tmp_path / f"{name}.yaml")
    assert find_profile(tiny_pipe, profile_dir=tmp_path).name == "fits.yaml"


def test_default_attention_leaves_user_processors_alone(tiny_pipe):
    from diffusers.models.attention_processor import AttnProcessor

    tiny_pipe.unet.set_attn_processor(AttnProcessor())  # e.g. what an adapter would install
    apply_profile(tiny_pipe, make_profile())
    assert {type(p).__name__ for p in tiny_pipe.unet.attn_processors.values()} == {"AttnProcessor"}
    sliced = load_pipeline(make_profile())
    apply_profile(sliced, make_profile({"attention": "sliced"}))
    assert all("Sliced" in type(p).__name__ for p in sliced.unet.attn_processors.values())

"""apply_profile / load_pipeline: deterministic, strict about mismatches, findable by target."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.profiles import make_profile
from helpers.zoo import zoo  # noqa: F401  (session fixture: tiny pipelines saved as folders)

from autotune import knobs
from autotune.knobs.settings import hooked_modules
from autotune.profiles.apply import apply_profile, load_pipeline
from autotune.profiles.discovery import find_profile
from autotune.errors import NoMatchingProfileError, PipelineStateError, ProfileMismatchError
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target

TUNED = {"dtype": "bf16", "layerwise_fp8": True, "channels_last": True, "attention": "sliced",
         "vae_slicing": True}


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
    from autotune import hardware

    monkeypatch.setattr(hardware, "device_memory", lambda device: 8 * 2**30)
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


# ---- identity: every spelling of one folder finds its profile ------------------------------------

def folder_profile(model: str, **fingerprint) -> Profile:
    p = make_profile(model=model)
    p.fingerprint = dataclasses.replace(p.fingerprint, **fingerprint)
    return p


def test_profile_for_a_folder_matches_every_spelling_of_it(zoo, tmp_path, monkeypatch):  # noqa: F811
    from diffusers import DiffusionPipeline

    folder = zoo["sd"]
    monkeypatch.chdir(folder.parent.parent)
    relative = f"{folder.parent.name}/sd"
    folder_profile(relative).save(tmp_path / "sd.yaml")
    for spelling in (relative, f"./{relative}", str(folder), str(folder.resolve()) + "/"):
        pipe = DiffusionPipeline.from_pretrained(spelling)
        assert find_profile(pipe, profile_dir=tmp_path).name == "sd.yaml"
        apply_profile(pipe, tmp_path / "sd.yaml")


def test_profile_for_another_folder_is_refused(zoo):  # noqa: F811
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(zoo["sd"])
    with pytest.raises(ProfileMismatchError, match="tuned for model .*sd-img2img"):
        apply_profile(pipe, folder_profile(str(zoo["sd-img2img"])))


def test_relative_profile_made_elsewhere_matches_by_its_recorded_identity(zoo, tmp_path, monkeypatch):  # noqa: F811
    from diffusers import DiffusionPipeline

    from autotune.profiles.apply import profile_model_source

    folder = zoo["sd"]
    profile = folder_profile("sd", model_identity=str(folder.resolve()))  # written from folder.parent
    monkeypatch.chdir(tmp_path)                                             # applied from elsewhere
    pipe = DiffusionPipeline.from_pretrained(folder)
    apply_profile(pipe, profile)
    assert profile_model_source(profile) == str(folder.resolve())
    assert load_pipeline(profile).name_or_path == str(folder.resolve())
    with pytest.raises(ProfileMismatchError):
        apply_profile(DiffusionPipeline.from_pretrained(folder), folder_profile("sd"))


# ---- one search, several ceilings: max_vram picks a stored entry -------------------------------

MiB = 2**20


def tiered_profile() -> Profile:
    """best: fp32, 8 MiB, 1.0 s; alternatives: bf16 5 MiB 1.5 s, bf16+slicing 3 MiB 2.0 s,
    sliced attention 5 MiB 1.8 s (slower than the bf16 one at the same peak)."""
    p = make_profile(latency=1.0)
    p.best.peak_bytes = 8 * MiB

    def alt(settings, peak, latency):
        full = {**p.best.settings, **settings}
        return ProfileEntry(settings=full, latency_median_s=latency, latency_p90_s=latency,
                            peak_bytes=peak, peak_metric="cpu_live_tensor_peak", runs=3)

    p.alternatives = [alt({"dtype": "bf16"}, 5 * MiB, 1.5),
                      alt({"dtype": "bf16", "vae_slicing": True}, 3 * MiB, 2.0),
                      alt({"attention": "sliced"}, 5 * MiB, 1.8)]
    return p


@pytest.mark.parametrize("max_vram, choice, peak", [
    (None, "best", 8), ("100MB", "best", 8), (8 * MiB, "best", 8),
    ("6MB", "alternative 1", 5), (5 * MiB, "alternative 1", 5), ("4.5MiB", "alternative 2", 3),
])
def test_max_vram_picks_the_fastest_entry_that_fits(max_vram, choice, peak):
    from autotune.profiles.entries import choose_entry
    from autotune.units import size_bytes

    label, entry = choose_entry(tiered_profile(), None if max_vram is None else size_bytes(max_vram))
    assert (label, entry.peak_bytes) == (choice, peak * MiB)


def test_apply_with_max_vram_applies_the_alternative_and_says_so(tmp_path, tiny_pipe, caplog):
    path = tiered_profile().save(tmp_path / "tiers.yaml")
    with caplog.at_level("INFO", logger="autotune.profiles.apply"):
        handle = apply_profile(tiny_pipe, path, max_vram="4MB")
    assert handle.choice == "alternative 2" and handle.max_vram == 4 * MiB
    assert handle.entry.peak_bytes == 3 * MiB and handle.settings["vae_slicing"] is True
    assert tiny_pipe.unet.dtype == torch.bfloat16 and tiny_pipe.vae.use_slicing
    text = str(handle)
    assert str(path) in text and "alternative 2, the fastest under max_vram 4.00 MiB" in text
    assert "dtype=bf16 vae_slicing=True" in text and "peak 3.00 MiB" in text
    assert "alternative 2 of" in caplog.text and "fits max_vram 4.00 MiB" in caplog.text
    assert load_pipeline(path, max_vram="4MB").unet.dtype == torch.bfloat16  # built in that entry's dtype


def test_a_ceiling_no_entry_fits_is_refused_naming_the_smallest(tiny_pipe):
    from autotune.errors import InvalidTargetError

    before = module_state(tiny_pipe)
    with pytest.raises(NoMatchingProfileError) as info:
        apply_profile(tiny_pipe, tiered_profile(), max_vram="2MB")
    message = str(info.value)
    assert "\n" not in message and "fits max_vram 2.00 MiB (2097152 bytes)" in message
    assert "alternative 2 (dtype=bf16 vae_slicing=True), peaks at 3.00 MiB" in message
    assert "autotune search --max-vram" in message
    assert module_state(tiny_pipe) == before  # refused before anything was applied
    for bad in ("6", 0, -5, True, 1.5):
        with pytest.raises(InvalidTargetError, match="max_vram"):
            apply_profile(tiny_pipe, tiered_profile(), max_vram=bad)


def test_cli_apply_max_vram(tmp_path, capsys):
    from helpers.cli import cli

    path = tiered_profile().save(tmp_path / "tiers.yaml")
    png = tmp_path / "x.png"
    refused = cli(capsys, "apply", path, "--max-vram", "1MB", "--out", png)
    assert refused.code == 2 and "smallest, alternative 2" in refused.err and "Traceback" not in refused.err
    assert not png.exists()
    run = cli(capsys, "apply", path, "--max-vram", "6MB", "--out", png)
    assert run.code == 0, run.err
    assert "alternative 1, the fastest under max_vram 6.00 MiB" in run.out and "dtype=bf16" in run.out
    assert f"profile  {path}" in run.out
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---- apply_profile tells what it did ------------------------------------------------------------

def test_handle_names_file_entry_settings_and_dtype_changes(tmp_path, tiny_pipe, caplog):
    path = make_profile({"dtype": "bf16", "attention": "sliced"}).save(tmp_path / "p.yaml")
    with caplog.at_level("INFO", logger="autotune.profiles.apply"):
        handle = apply_profile(tiny_pipe, path)
    assert handle.source == str(path) and handle.choice == "best" and handle.reason is None
    assert "unet: dtype float32 -> bfloat16" in handle.changes
    assert "text_encoder: dtype float32 -> bfloat16" in handle.changes
    lines = str(handle).splitlines()
    assert lines[0] == f"profile  {path}"
    assert lines[1].startswith("entry    best: 1.000 s median, peak 1.00 MiB")
    assert lines[2] == "settings dtype=bf16 attention=sliced (others at defaults) on cpu"
    assert lines[3].startswith("changed  ") and "unet: dtype float32 -> bfloat16" in lines[3]
    assert "apply_profile changed unet: dtype float32 -> bfloat16" in caplog.text
    exact = apply_profile(load_pipeline(make_profile()), make_profile())
    assert exact.changes == () and "changed" not in str(exact) and "all defaults" in str(exact)


def test_a_half_precision_pipeline_turned_to_fp32_warns(tiny_pipe):
    import warnings

    from autotune.models.pipelines import build_pipeline

    pipe = build_pipeline("builtin:tiny-sd", torch_dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match=r"dtype=fp32 converted .*unet.* from bfloat16 to float32"):
        handle = apply_profile(pipe, make_profile())
    assert "unet: dtype bfloat16 -> float32" in handle.changes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fp32 -> bf16 is what the profile asks: no warning
        apply_profile(tiny_pipe, make_profile({"dtype": "bf16"}))
        # nor is the VAE in fp32 under a bf16 profile: vae_dtype asks for it
        upcast = apply_profile(build_pipeline("builtin:tiny-sd", torch_dtype=torch.bfloat16),
                               make_profile({"dtype": "bf16", "vae_dtype": "fp32"}))
    assert upcast.changes == ("vae: dtype bfloat16 -> float32",)


def test_auto_discovery_says_why_it_chose_the_profile(tmp_path, tiny_pipe, caplog):
    make_profile(latency=0.5, device_name="Other CPU").save(tmp_path / "a.yaml")
    make_profile(latency=0.9).save(tmp_path / "b.yaml")
    make_profile(latency=0.7).save(tmp_path / "c.yaml")
    with caplog.at_level("INFO", logger="autotune.profiles.apply"):
        handle = apply_profile(tiny_pipe, profile_dir=tmp_path)
    assert handle.source.endswith("c.yaml")
    assert handle.reason.startswith("chose c.yaml (0.700 s) among 3 matching profiles")
    assert "the fastest at this ceiling (0.700 s vs 0.900 s for b.yaml)" in handle.reason
    assert "a.yaml (0.500 s)" in handle.reason
    assert handle.reason in caplog.text and f"chosen   {handle.reason}" in str(handle)
    (tmp_path / "c.yaml").unlink()
    reason = apply_profile(load_pipeline(make_profile()), profile_dir=tmp_path).reason
    assert "measured on this device, unlike a.yaml (Other CPU)" in reason
    (tmp_path / "a.yaml").unlink()
    assert "the only profile" in apply_profile(load_pipeline(make_profile()), profile_dir=tmp_path).reason


def test_auto_discovery_with_max_vram_uses_the_fastest_entry_that_fits(tmp_path, tiny_pipe):
    fast = make_profile(latency=0.5)
    fast.best.peak_bytes = 10 * MiB  # faster, but nothing under 6 MiB
    fast.save(tmp_path / "fast.yaml")
    tiered_profile().save(tmp_path / "tiers.yaml")
    handle = apply_profile(tiny_pipe, profile_dir=tmp_path, max_vram="6MB")
    assert handle.source.endswith("tiers.yaml") and handle.choice == "alternative 1"
    assert apply_profile(load_pipeline(make_profile()), profile_dir=tmp_path).source.endswith("fast.yaml")
    with pytest.raises(NoMatchingProfileError, match=r"smallest peak is 3.00 MiB in tiers.yaml"):
        apply_profile(load_pipeline(make_profile()), profile_dir=tmp_path, max_vram="1MB")

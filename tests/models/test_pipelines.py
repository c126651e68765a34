"""Where pipelines come from: built-in configs, local folders, hub ids (offline here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.zoo import zoo  # noqa: F401  (session fixture: tiny pipelines saved as folders)

from autotune.errors import AutotuneError, ModelNotFoundError
from autotune.models.pipelines import (
    ModelInfo,
    build_pipeline,
    load_configs,
    model_info,
)
from autotune.models.builtins import builtin_names
from autotune.models.identity import model_identity

TINY = "builtin:tiny-sd"


@pytest.mark.parametrize(
    ("model", "pipeline_class", "size"),
    [
        ("builtin:tiny-sd", "StableDiffusionPipeline", 128),
        ("builtin:sd15", "StableDiffusionPipeline", 512),
        ("builtin:sdxl", "StableDiffusionXLPipeline", 1024),
    ],
)
def test_model_info_builtins(model, pipeline_class, size):
    info = model_info(model)
    assert isinstance(info, ModelInfo)
    assert info.model == model
    assert info.pipeline_class == pipeline_class
    assert (info.native_height, info.native_width) == (size, size)
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= info.components
    assert isinstance(info.components, frozenset)
    assert "safety_checker" not in info.components
    if model == "builtin:sdxl":
        assert {"text_encoder_2", "tokenizer_2"} <= info.components
    else:
        assert "text_encoder_2" not in info.components


def test_builtin_names():
    assert builtin_names() == ["builtin:tiny-sd", "builtin:tiny-sd-shapes", "builtin:sd15", "builtin:sdxl"]


def test_unknown_builtin():
    with pytest.raises(ModelNotFoundError) as info:
        model_info("builtin:sd99")
    message = str(info.value)
    assert "builtin:sd99" in message
    assert "builtin:tiny-sd" in message  # lists what exists
    with pytest.raises(ModelNotFoundError):
        build_pipeline("builtin:sd99")


def test_nonexistent_local_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelNotFoundError) as info:
        model_info(str(missing))
    assert str(missing) in str(info.value)
    assert isinstance(info.value, AutotuneError)


def test_folder_without_model_index(tmp_path):
    (tmp_path / "readme.txt").write_text("not a pipeline")
    with pytest.raises(ModelNotFoundError) as info:
        model_info(str(tmp_path))
    assert "local folder" in str(info.value)


def test_build_pipeline_nonexistent_path_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError):
        build_pipeline(str(tmp_path / "nothing-here"))


# ---- the tiny built-in --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_tiny():
    # Different global seeds before each build: the weights must not depend on them.
    torch.manual_seed(1)
    first = build_pipeline(TINY)
    torch.manual_seed(2)
    return first, build_pipeline(TINY)


def test_tiny_pipeline_matches_model_info(two_tiny):
    pipe, _ = two_tiny
    info = model_info(TINY)
    assert type(pipe).__name__ == info.pipeline_class
    present = {name for name, module in pipe.components.items() if module is not None}
    assert info.components <= present
    assert pipe.name_or_path == TINY
    assert pipe.unet.dtype == torch.float32
    assert not any(m.training for m in pipe.unet.modules())
    assert not pipe.vae.training and not pipe.text_encoder.training
    assert pipe.safety_checker is None


def test_build_is_deterministic(two_tiny):
    a, b = two_tiny
    assert a is not b
    for name in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        assert sa, name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"
    assert a.name_or_path == b.name_or_path == TINY


def test_build_does_not_touch_global_rng():
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    build_pipeline(TINY)
    assert torch.equal(torch.rand(3), expected)


def test_build_in_half_precision():
    pipe = build_pipeline(TINY, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16


def _images(pipe, seed, **kwargs):
    generator = torch.Generator("cpu").manual_seed(seed)
    args = dict(height=64, width=64, num_inference_steps=2, output_type="np")
    args.update(kwargs)
    return pipe("a photo of a cat", generator=generator, **args).images


def test_same_seed_gives_bit_identical_images(two_tiny):
    a, b = two_tiny
    first = _images(a, seed=7)
    assert first.shape == (1, 64, 64, 3)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, _images(a, seed=7))
    np.testing.assert_array_equal(first, _images(b, seed=7))
    assert not np.array_equal(first, _images(a, seed=8))


def test_vae_downsamples_8x(two_tiny):
    pipe, _ = two_tiny
    assert pipe.vae_scale_factor == 8
    latents = _images(pipe, seed=0, height=128, width=128, num_inference_steps=1, output_type="latent")
    assert tuple(latents.shape) == (1, 4, 16, 16)
    with torch.no_grad():
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    assert tuple(pixels.shape) == (1, 3, 128, 128)
    with torch.no_grad():
        encoded = pipe.vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean
    assert tuple(encoded.shape) == (1, 4, 16, 16)


def test_tokenizer_works_offline(two_tiny):
    pipe, _ = two_tiny
    ids = pipe.tokenizer("a photo of the cat", padding="max_length", max_length=77,
                         truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    assert int(ids.max()) < pipe.text_encoder.config.vocab_size


def test_builtin_cache_round_trips_exactly_per_dtype(tmp_path):
    import torch

    from autotune.models.builtins import build_builtin, builtin_cache_path, load_cached_builtin

    fresh = build_builtin("builtin:tiny-sd", torch.float16)
    first = load_cached_builtin("builtin:tiny-sd", torch.float16, root=tmp_path)   # builds, saves
    second = load_cached_builtin("builtin:tiny-sd", torch.float16, root=tmp_path)  # loads
    assert builtin_cache_path("builtin:tiny-sd", torch.float16, tmp_path).name.endswith("-float16")
    assert builtin_cache_path("builtin:tiny-sd", None, tmp_path) != builtin_cache_path(
        "builtin:tiny-sd", torch.float16, tmp_path)
    for pipe in (first, second):
        assert pipe.name_or_path == "builtin:tiny-sd" and pipe.unet.dtype == torch.float16
        for name in ("unet", "vae", "text_encoder"):
            a, b = getattr(fresh, name).state_dict(), getattr(pipe, name).state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "builtin").iterdir())) == 1  # no temp folder left behind


# ---- local folders and hub ids: configs read by each component's own class ---------------------

@pytest.mark.parametrize(("name", "pipeline_class", "size", "frames", "denoiser"), [
    ("sd", "StableDiffusionPipeline", (64, 64), None, ("diffusers", "UNet2DConditionModel")),
    ("sdxl", "StableDiffusionXLPipeline", (64, 64), None, ("diffusers", "UNet2DConditionModel")),
    ("pixart", "PixArtSigmaPipeline", (64, 64), None, ("diffusers", "PixArtTransformer2DModel")),
    # no sample_size in a Wan transformer's config: the pipeline's own call defaults
    ("wan", "WanPipeline", (480, 832), 81, ("diffusers", "WanTransformer3DModel")),
])
def test_model_info_of_a_folder_reads_its_own_configs(zoo, name, pipeline_class, size, frames, denoiser):  # noqa: F811
    info = model_info(str(zoo[name]))
    assert info.pipeline_class == pipeline_class
    assert (info.native_height, info.native_width) == size  # sample_size 8 x VAE scale 8, not 512
    assert info.native_frames == frames
    den = "unet" if denoiser[1].startswith("UNet") else "transformer"
    assert info.component_classes[den] == denoiser
    assert info.components == frozenset(info.component_classes)
    assert info.identity == str(zoo[name].resolve())


def test_component_configs_are_the_folders_not_class_defaults(zoo):  # noqa: F811
    configs = load_configs(str(zoo["sd"]))
    assert configs["unet"]["block_out_channels"] == [32, 64]          # class default: 320..1280
    assert configs["vae"]["block_out_channels"] == [16, 32, 32, 32]
    assert configs["text_encoder"].hidden_size == 32                   # a transformers config
    assert "_class_name" in configs["model_index"]


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(zoo, tmp_path, monkeypatch):  # noqa: F811
    """The zoo SD folder as the hub cache would hold `org/tiny-sd` at commit SHA (offline)."""
    import shutil

    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--org--tiny-sd"
    shutil.copytree(zoo["sd"], repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model_info.cache_clear()
    yield repo / "snapshots" / SHA
    model_info.cache_clear()


def test_hub_id_reads_configs_and_carries_its_commit(hub_cache):
    info = model_info("org/tiny-sd")
    assert (info.native_height, info.native_width) == (64, 64)
    assert info.identity == f"org/tiny-sd@{SHA}"
    assert load_configs("org/tiny-sd")["unet"]["block_out_channels"] == [32, 64]
    assert model_identity(str(hub_cache)) == f"org/tiny-sd@{SHA}"  # the snapshot folder itself
    assert model_identity("org/tiny-sd", revision="f" * 40) == "org/tiny-sd@" + "f" * 40

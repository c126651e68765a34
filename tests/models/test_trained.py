"""The trained built-in: its committed weights load (checked against weights.json), the prompt
changes nothing (trivial conditioning), and a broken weights file is refused naming it."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from autotune.models import trained
from autotune.models.pipelines import build_pipeline, model_info

SHAPES = "builtin:tiny-sd-shapes"


def _sample(pipe, prompt="a red disc", steps=8, size=64):
    return pipe(prompt, height=size, width=size, num_inference_steps=steps, output_type="np",
                generator=torch.Generator("cpu").manual_seed(0)).images


def test_files_match_their_checksums_and_are_small():
    meta = trained.weights_meta("tiny-sd-shapes")
    folder = trained._folder("tiny-sd-shapes")  # noqa: SLF001
    for component in trained.COMPONENTS:
        data = (folder / f"{component}.safetensors").read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"][component]
        assert len(data) < 3 * 2**20
    assert meta["scaling_factor"] > 0 and meta["image_size"] == 64


def test_builds_as_tiny_sd_with_the_trained_weights():
    info = model_info(SHAPES)
    assert info.pipeline_class == "StableDiffusionPipeline" and info.native_height == 64  # trained at 64 px
    pipe, random = build_pipeline(SHAPES), build_pipeline("builtin:tiny-sd")
    assert pipe.vae.config.scaling_factor == trained.weights_meta("tiny-sd-shapes")["scaling_factor"]
    shipped, noise = pipe.unet.state_dict(), random.unet.state_dict()
    assert shipped.keys() == noise.keys()
    assert not torch.equal(shipped["conv_in.weight"], noise["conv_in.weight"])
    assert all(torch.equal(a, b) for a, b in zip(pipe.text_encoder.state_dict().values(),
                                                 random.text_encoder.state_dict().values()))


def test_the_prompt_changes_nothing():
    pipe = build_pipeline(SHAPES)
    assert np.array_equal(_sample(pipe, "a red disc", steps=3), _sample(pipe, "", steps=3))


def test_samples_are_structured_where_the_random_builtin_makes_noise():
    """Flat areas and edges: most neighbouring pixels nearly equal. The random tiny-sd's images
    are noise at the pixel level."""
    def roughness(images):
        return float(np.median(np.abs(np.diff(images, axis=2))))

    shapes = _sample(build_pipeline(SHAPES), steps=10)
    noise = _sample(build_pipeline("builtin:tiny-sd"), steps=10)
    assert shapes.std() > 0.1  # not one flat colour
    assert roughness(shapes) < 0.02 < roughness(noise)


def test_half_precision_builds():
    pipe = build_pipeline(SHAPES, torch.float16)
    assert pipe.unet.dtype == torch.float16


def test_a_corrupt_weights_file_is_refused_naming_it(tmp_path, monkeypatch):
    folder = trained._folder("tiny-sd-shapes")  # noqa: SLF001
    for name in ("weights.json", "unet.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "vae.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    monkeypatch.setattr(trained, "_folder", lambda name: tmp_path)
    trained.weights_meta.cache_clear()
    try:
        with pytest.raises(trained.WeightsCorruptError, match="vae.safetensors does not match its sha256"):
            build_pipeline(SHAPES)
        (tmp_path / "weights.json").write_text("{")
        trained.weights_meta.cache_clear()
        with pytest.raises(trained.WeightsCorruptError, match="weights.json"):
            build_pipeline(SHAPES)
    finally:
        trained.weights_meta.cache_clear()
    json.loads((folder / "weights.json").read_text())  # the real one untouched

"""Target: validated on construction, round-trips through a dict, has a stable short key."""
from __future__ import annotations

import dataclasses
import re

import pytest

from autotune.errors import AutotuneError, InvalidTargetError
from autotune.target import PIXEL_MULTIPLE, Target

GiB = 2**30


def make(**overrides):
    fields = dict(model="builtin:tiny-sd", height=128, width=128, batch=1, steps=4, max_vram=8 * GiB)
    fields.update(overrides)
    return Target(**fields)


def test_valid_target_keeps_its_fields():
    t = make(device="cuda", pipeline_class="StableDiffusionPipeline")
    assert (t.model, t.height, t.width, t.batch, t.steps, t.max_vram, t.device) == (
        "builtin:tiny-sd", 128, 128, 1, 4, 8 * GiB, "cuda")
    assert t.pipeline_class == "StableDiffusionPipeline"


def test_target_defaults():
    t = make()
    assert t.device == "cpu"
    assert t.pipeline_class is None
    assert t.prompt


def test_target_is_frozen():
    t = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.height = 256  # type: ignore[misc]


@pytest.mark.parametrize("field", ["height", "width"])
def test_size_not_multiple_of_8_rejected(field):
    with pytest.raises(InvalidTargetError) as info:
        make(**{field: 100})
    message = str(info.value)
    assert f"multiple of {PIXEL_MULTIPLE}" in message
    assert "multiple of 8" in message
    assert f"--{field}" in message
    assert "100" in message


def test_size_error_suggests_nearest_multiple():
    with pytest.raises(InvalidTargetError, match="try 128"):
        make(height=130)


@pytest.mark.parametrize("value", [0, -8, 8.0, "128", None])
def test_size_must_be_positive_int(value):
    with pytest.raises(InvalidTargetError):
        make(width=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2"])
def test_batch_rejected(value):
    with pytest.raises(InvalidTargetError, match="--batch"):
        make(batch=value)


@pytest.mark.parametrize("value", [0, -3, 2.0])
def test_steps_rejected(value):
    with pytest.raises(InvalidTargetError, match="--steps"):
        make(steps=value)


@pytest.mark.parametrize("value", [0, -1, 8.5 * GiB, "8GB"])
def test_max_vram_rejected(value):
    with pytest.raises(InvalidTargetError, match="--max-vram"):
        make(max_vram=value)


@pytest.mark.parametrize("device", ["tpu", "auto", "CUDA", "cuda:0", "", "mps"])
def test_bad_device_rejected(device):
    with pytest.raises(InvalidTargetError) as info:
        make(device=device)
    message = str(info.value)
    assert "--device" in message
    assert "cpu" in message and "cuda" in message


def test_invalid_target_error_is_autotune_and_value_error():
    with pytest.raises(AutotuneError):
        make(batch=0)
    with pytest.raises(ValueError):
        make(batch=0)


def test_to_dict_from_dict_round_trip():
    t = make(model="org/some-model", height=512, width=768, batch=2, steps=30, max_vram=12 * GiB,
             device="cuda", pipeline_class="StableDiffusionXLPipeline", prompt="a red cube")
    data = t.to_dict()
    assert isinstance(data, dict)
    assert data["height"] == 512 and data["width"] == 768 and data["device"] == "cuda"
    back = Target.from_dict(data)
    assert back == t
    assert back.to_dict() == data
    assert back.key() == t.key()


def test_from_dict_rejects_unknown_fields():
    data = make().to_dict()
    data["heigth"] = 64
    with pytest.raises(InvalidTargetError, match="heigth"):
        Target.from_dict(data)


def test_from_dict_validates():
    data = make().to_dict()
    data["height"] = 100
    with pytest.raises(InvalidTargetError, match="multiple of 8"):
        Target.from_dict(data)


def test_key_is_stable():
    assert make().key() == make().key()
    assert make().key() == Target.from_dict(make().to_dict()).key()


def test_key_is_filesystem_safe_and_readable():
    key = make(model="org/name:v1", width=512, height=768, batch=2).key()
    assert "/" not in key and ":" not in key
    assert "512x768" in key
    assert "b2" in key
    assert re.fullmatch(r"[A-Za-z0-9._-]+", key)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "builtin:sd15"},
        {"height": 136},
        {"width": 136},
        {"batch": 2},
        {"steps": 5},
        {"max_vram": 4 * GiB},
        {"device": "cuda"},
        {"pipeline_class": "StableDiffusionPipeline"},
        {"prompt": "something else"},
        {"height": 256, "width": 128},
    ],
)
def test_key_differs_for_different_targets(overrides):
    assert make(**overrides).key() != make().key()


def test_key_distinguishes_swapped_height_and_width():
    assert make(height=128, width=256).key() != make(height=256, width=128).key()

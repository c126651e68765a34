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


# ---- what else the pipeline is called with: frames and call arguments ---------------------------

def test_frames_and_call_args_default_to_none_and_empty():
    t = make()
    assert t.frames is None and t.call_args == {}


def test_key_of_a_target_without_the_new_fields_is_unchanged():
    # the key autotune computed before frames/call_args existed: old run dirs and studies resume
    assert make().key() == "builtin-tiny-sd-128x128-b1-3c04184c"


def test_old_dict_without_new_fields_loads():
    old = {"model": "builtin:tiny-sd", "height": 128, "width": 128, "batch": 1, "steps": 4,
           "max_vram": 8 * GiB, "device": "cpu", "pipeline_class": None, "prompt": "a cat"}
    t = Target.from_dict(old)
    assert t.frames is None and t.call_args == {}


def test_frames_and_call_args_round_trip_and_change_the_key():
    t = make(frames=9, call_args={"use_resolution_binning": False, "strength": 0.6, "clip_skip": 2,
                                  "negative_prompt": "blurry", "eta": None})
    back = Target.from_dict(t.to_dict())
    assert back == t and back.key() == t.key() and hash(back) == hash(t)
    assert back.call_args["use_resolution_binning"] is False
    assert make(frames=9).key() != make().key()
    assert make(call_args={"strength": 0.6}).key() != make(call_args={"strength": 0.7}).key()


def test_call_args_are_copied_so_the_target_stays_frozen():
    args = {"strength": 0.6}
    t = make(call_args=args)
    args["strength"] = 0.9
    assert t.call_args == {"strength": 0.6}
    assert {t: 1}[make(call_args={"strength": 0.6})] == 1  # hashable, equal targets hash alike


@pytest.mark.parametrize("frames", [0, -1, 2.0, "9", True])
def test_frames_rejected(frames):
    with pytest.raises(InvalidTargetError, match="--frames"):
        make(frames=frames)


@pytest.mark.parametrize("call_args", [{"strength": [0.5]}, {"x": {"a": 1}}, {"not a name": 1}, {1: 2}, ["a"]])
def test_call_args_rejected(call_args):
    with pytest.raises(InvalidTargetError, match="call"):
        make(call_args=call_args)


# ---- cli/target_args: the flags that become a Target ----------------------------------------------

def _parse(argv, **kwargs):
    import argparse

    from autotune.cli.target_args import add_target_arguments

    parser = argparse.ArgumentParser()
    add_target_arguments(parser, model_default_help="x", **kwargs)
    return parser.parse_args(argv)


def test_call_arg_values_parse_like_yaml_scalars():
    from autotune.cli.target_args import parse_call_args

    assert parse_call_args(["strength=0.6", "use_resolution_binning=false", "max_sequence_length=25",
                            "negative_prompt=blurry, dark", "eta=null", "x=2024-01-01", "y="]) == {
        "strength": 0.6, "use_resolution_binning": False, "max_sequence_length": 25,
        "negative_prompt": "blurry, dark", "eta": None, "x": "2024-01-01", "y": ""}


@pytest.mark.parametrize(("items", "words"), [
    (["strength"], "KEY=VALUE"),
    (["=1"], "KEY=VALUE"),
    (["a=1", "a=2"], "twice"),
    (["a=[1, 2]"], "number, true/false"),
])
def test_call_arg_parse_errors(items, words):
    from autotune.cli.target_args import parse_call_args

    with pytest.raises(InvalidTargetError, match=words):
        parse_call_args(items)


def test_target_from_args_reads_frames_and_call_args():
    from autotune.cli.target_args import target_from_args

    args = _parse(["--max-vram", "1GB", "--call-arg", "guidance_scale=1.5", "--call-arg", "eta=0.1"])
    t = target_from_args(args, "cpu", "builtin:tiny-sd")
    assert t.call_args == {"eta": 0.1, "guidance_scale": 1.5} and t.frames is None
    assert t.max_vram == GiB and t.has_ceiling


def test_target_from_args_refuses_a_call_arg_the_pipeline_does_not_take():
    from autotune.cli.target_args import target_from_args

    args = _parse(["--max-vram", "1GB", "--call-arg", "strenght=0.5"])
    with pytest.raises(InvalidTargetError) as info:
        target_from_args(args, "cpu", "builtin:tiny-sd")
    message = str(info.value)
    assert "StableDiffusionPipeline takes no argument strenght" in message
    assert "guidance_scale" in message  # it lists what is accepted


def test_target_from_args_refuses_frames_for_an_image_pipeline():
    from autotune.cli.target_args import target_from_args

    with pytest.raises(InvalidTargetError, match="--frames"):
        target_from_args(_parse(["--max-vram", "1GB", "--frames", "9"]), "cpu", "builtin:tiny-sd")


def test_ceiling_required_by_default():
    with pytest.raises(SystemExit):
        _parse([])


def test_ceiling_optional_when_not_required():
    from autotune.cli.target_args import target_from_args
    from autotune.target import NO_CEILING

    args = _parse([], ceiling_required=False)
    assert args.max_vram is None
    t = target_from_args(args, "cpu", "builtin:tiny-sd")
    assert t.max_vram == NO_CEILING and not t.has_ceiling
    assert target_from_args(args, "cpu", "builtin:tiny-sd", max_vram=4 * GiB).max_vram == 4 * GiB
    flagged = _parse(["--max-vram", "2GB"], ceiling_required=False)
    assert target_from_args(flagged, "cpu", "builtin:tiny-sd", max_vram=4 * GiB).max_vram == 2 * GiB


def test_size_flags_parse_to_bytes_once_with_the_flags(capsys):
    args = _parse(["--max-vram", "1.5GB", "--max-ram", "512MB"])
    assert args.max_vram == 3 * GiB // 2 and args.max_ram == 512 * 2**20  # bytes, as parsed
    with pytest.raises(SystemExit):
        _parse(["--max-vram", "1GB", "--max-ram", "32"])
    assert "--max-ram must be a size with a unit" in capsys.readouterr().err  # names the flag given
    assert _parse([], ceiling_required=False).max_vram is None

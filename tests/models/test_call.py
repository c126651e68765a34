"""call_kwargs calls real tiny pipelines of every kind as their `__call__` wants; a wrong call is
described in one line naming what to pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.zoo import build

from autotune.models.call import (
    accepted_call_args,
    call_kwargs,
    call_pipeline,
    check_call_args,
    describe_call_error,
    output_array,
    seeded_image,
)
from autotune.errors import InvalidTargetError
from autotune.target import Target

SIZE = 32
#: What each kind needs beyond the size (the frames of a video, PixArt's resolution binning off).
#: max_sequence_length: short T5 prompts keep the tests fast (Wan pads to 512 tokens by default).
EXTRA = {"wan": {"frames": 5, "call_args": {"max_sequence_length": 16}},
         "pixart": {"call_args": {"use_resolution_binning": False, "max_sequence_length": 16}},
         "sd3": {"call_args": {"max_sequence_length": 16}}, "flux": {"call_args": {"max_sequence_length": 16}}}
KINDS = ["sd", "sd-img2img", "sd-inpaint", "sdxl", "pixart", "wan", "sd3", "flux"]


def target(name: str = "sd", **overrides) -> Target:
    fields = dict(model=f"zoo:{name}", height=SIZE, width=SIZE, batch=1, steps=2, max_vram=2**30)
    fields.update(EXTRA.get(name, {}))
    fields.update(overrides)
    return Target(**fields)


@pytest.fixture(scope="module")
def pipes():
    """Each tiny pipeline built once for this module (calls do not change them)."""
    return {name: build(name) for name in KINDS}


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_runs_with_call_kwargs(pipes, name):
    pipe = pipes[name]
    out = output_array(pipe(**call_kwargs(pipe, target(name), seed=0)))
    expected = (1, 5, SIZE, SIZE, 3) if name == "wan" else (1, SIZE, SIZE, 3)
    assert out.shape == expected
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", ["sd-img2img", "wan"])
def test_same_seed_same_output_other_seed_other_output(pipes, name):
    pipe = pipes[name]
    first = output_array(pipe(**call_kwargs(pipe, target(name), seed=3)))
    again = output_array(pipe(**call_kwargs(pipe, target(name), seed=3)))
    other = output_array(pipe(**call_kwargs(pipe, target(name), seed=4)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_arguments_follow_each_signature(pipes):
    sd = call_kwargs(pipes["sd"], target("sd", batch=2), seed=0)
    assert sd["num_images_per_prompt"] == 2 and sd["height"] == SIZE and sd["output_type"] == "np"
    assert "image" not in sd and "num_frames" not in sd

    img2img = call_kwargs(pipes["sd-img2img"], target("sd-img2img"), seed=0)
    assert "height" not in img2img  # its __call__ takes the size from the input image
    assert img2img["image"].size == (SIZE, SIZE)
    assert "mask_image" not in img2img

    inpaint = call_kwargs(pipes["sd-inpaint"], target("sd-inpaint", height=48), seed=0)
    assert inpaint["image"].size == (SIZE, 48) and inpaint["mask_image"].size == (SIZE, 48)
    mask = np.asarray(inpaint["mask_image"])
    assert mask.min() == 0 and mask.max() == 255  # some pixels kept, some repainted

    wan = call_kwargs(pipes["wan"], target("wan", batch=2), seed=0)
    assert wan["num_frames"] == 5 and wan["num_videos_per_prompt"] == 2
    assert "num_images_per_prompt" not in wan


def test_video_frames_default_to_the_pipeline(pipes):
    assert "num_frames" not in call_kwargs(pipes["wan"], target("wan", frames=None), seed=0)


def test_batch_and_non_square_sizes_reach_the_output(pipes):
    pipe = pipes["sd-img2img"]
    out = output_array(pipe(**call_kwargs(pipe, target("sd-img2img", batch=2, width=48), seed=0)))
    assert out.shape == (2, SIZE, 48, 3)


def test_call_args_pass_through_and_change_the_result(pipes):
    pipe = pipes["sd-img2img"]
    base = output_array(pipe(**call_kwargs(pipe, target("sd-img2img", steps=4), seed=0)))
    kwargs = call_kwargs(pipe, target("sd-img2img", steps=4, call_args={"strength": 0.5}), seed=0)
    assert kwargs["strength"] == 0.5
    assert not np.array_equal(output_array(pipe(**kwargs)), base)


def test_seeded_image_is_deterministic():
    assert np.array_equal(np.asarray(seeded_image(16, 8, 1)), np.asarray(seeded_image(16, 8, 1)))
    assert not np.array_equal(np.asarray(seeded_image(16, 8, 1)), np.asarray(seeded_image(16, 8, 2)))
    assert np.asarray(seeded_image(16, 8, 1)).shape == (8, 16, 3)


# ---- wrong calls refused before running --------------------------------------------------------

def test_unknown_call_arg_names_the_accepted_ones(pipes):
    with pytest.raises(InvalidTargetError) as info:
        call_kwargs(pipes["pixart"], target("pixart", call_args={"use_binning": False}), seed=0)
    message = str(info.value)
    assert "use_binning" in message and "use_resolution_binning" in message
    assert "guidance_scale" in message  # the accepted list
    assert "\n" not in message


def test_call_arg_cannot_set_what_the_target_sets():
    from diffusers import StableDiffusionPipeline

    with pytest.raises(InvalidTargetError, match="--height"):
        check_call_args(StableDiffusionPipeline, target(call_args={"height": 64}))
    with pytest.raises(InvalidTargetError, match="--batch"):
        check_call_args(StableDiffusionPipeline, target(call_args={"num_images_per_prompt": 2}))


def test_call_arg_for_a_tensor_argument_is_refused():
    from diffusers import StableDiffusionPipeline

    assert "prompt_embeds" not in accepted_call_args(StableDiffusionPipeline)
    with pytest.raises(InvalidTargetError, match="prompt_embeds"):
        check_call_args(StableDiffusionPipeline, target(call_args={"prompt_embeds": "x"}))


def test_frames_on_an_image_pipeline_is_refused():
    from diffusers import StableDiffusionPipeline

    with pytest.raises(InvalidTargetError, match="--frames"):
        check_call_args(StableDiffusionPipeline, target(frames=9))


def test_img2img_with_too_few_steps_for_its_strength(pipes):
    with pytest.raises(InvalidTargetError) as info:
        call_kwargs(pipes["sd-img2img"], target("sd-img2img", steps=1), seed=0)
    message = str(info.value)
    assert "--steps 2" in message and "strength=1.0" in message
    # strength 1.0 makes one step enough
    kwargs = call_kwargs(pipes["sd-img2img"], target("sd-img2img", steps=1, call_args={"strength": 1.0}), seed=0)
    assert kwargs["num_inference_steps"] == 1


def test_batch_for_a_pipeline_without_a_batch_argument_is_a_prompt_list():
    class OnePerPrompt:
        def __call__(self, prompt: str, height: int = 64, width: int = 64):
            return prompt

    kwargs = call_kwargs(OnePerPrompt(), target(batch=3), seed=0)
    assert kwargs["prompt"] == [target().prompt] * 3


def test_required_input_autotune_cannot_make_is_named():
    class VideoToVideo:
        def __call__(self, video, prompt: str = "", num_frames: int = 9):
            return video

    with pytest.raises(InvalidTargetError, match="video"):
        call_kwargs(VideoToVideo(), target(), seed=0)


# ---- the failures of a wrong call, described --------------------------------------------------

def _failure(pipe, **kwargs):
    with pytest.raises((TypeError, ValueError)) as info:
        pipe(**kwargs)
    return info.value


def test_pixart_resolution_binning_is_named(pipes):
    kwargs = call_kwargs(pipes["pixart"], target("pixart", call_args={"max_sequence_length": 16}), seed=0)
    exc = _failure(pipes["pixart"], **kwargs)
    assert describe_call_error(exc, pipes["pixart"], kwargs) == (
        "PixArtSigmaPipeline refused height=32 (Invalid sample size): "
        "pass --call-arg use_resolution_binning=false"
    )


def test_wan_called_like_an_image_pipeline_is_told_the_video_argument(pipes):
    exc = _failure(pipes["wan"], prompt="a fox", height=SIZE, width=SIZE, num_frames=5,
                   num_images_per_prompt=1, num_inference_steps=2, max_sequence_length=16)
    message = describe_call_error(exc, pipes["wan"])
    assert message == "WanPipeline takes no argument num_images_per_prompt: pass num_videos_per_prompt instead"


def test_img2img_without_an_image_is_told_so(pipes):
    kwargs = {"prompt": "a fox", "num_inference_steps": 2, "output_type": "np"}
    exc = _failure(pipes["sd-img2img"], **kwargs)
    message = describe_call_error(exc, pipes["sd-img2img"], kwargs)
    assert message and message.startswith("StableDiffusionImg2ImgPipeline could not read an input image")
    assert "image" in message and "call_kwargs" in message


def test_size_the_pipeline_refuses_names_its_multiple(pipes):
    kwargs = call_kwargs(pipes["wan"], target("wan", height=40, width=40), seed=0)
    exc = _failure(pipes["wan"], **kwargs)
    assert describe_call_error(exc, pipes["wan"], kwargs) == (
        "WanPipeline needs --height and --width divisible by 16, got 40x40")


def test_missing_scalar_argument_names_the_call_arg():
    class NeedsScale:
        def __call__(self, prompt: str, scale: float):
            return prompt

    pipe = NeedsScale()
    exc = _failure(pipe, prompt="x")
    assert describe_call_error(exc, pipe) == "NeedsScale needs scale: pass --call-arg scale=VALUE"


@pytest.mark.parametrize("exc", [
    RuntimeError("CUDA out of memory"),
    ValueError("something inside the model went wrong"),
    TypeError("forward() got an unexpected keyword argument 'prompt'"),  # a name __call__ takes
    TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
])
def test_other_failures_are_not_described(pipes, exc):
    assert describe_call_error(exc, pipes["sd"]) is None


def test_output_array_reads_images_frames_and_tuples():
    class Out:
        images = [np.zeros((2, 2, 3))]

    assert output_array(Out()).shape == (1, 2, 2, 3)
    assert output_array((np.ones((1, 4)),)).shape == (1, 4)
    with pytest.raises(TypeError):
        output_array(object())


def test_generator_is_seeded(pipes):
    a = call_kwargs(pipes["sd"], target(), seed=5)["generator"]
    b = call_kwargs(pipes["sd"], target(), seed=5)["generator"]
    assert torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b))


def test_call_pipeline_raises_a_refused_call_as_one_line(pipes):
    assert output_array(call_pipeline(pipes["sd"], target(), seed=0)).shape == (1, SIZE, SIZE, 3)
    with pytest.raises(InvalidTargetError, match="use_resolution_binning=false") as info:
        call_pipeline(pipes["pixart"], target("pixart", call_args={"max_sequence_length": 16}), seed=0)
    assert isinstance(info.value.__cause__, ValueError)


def test_call_pipeline_lets_other_failures_through(pipes):
    class Broken:
        def __call__(self, prompt: str, height: int, width: int):
            raise ValueError("a bug inside the model")

    with pytest.raises(ValueError, match="a bug inside"):
        call_pipeline(Broken(), target(), seed=0)

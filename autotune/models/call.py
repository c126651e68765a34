"""How a pipeline is called for a target, read off its own `__call__` signature.

Text-to-image gets a prompt, the size, the batch and the steps; image-to-image and inpainting
also get a seeded input image (and mask) at the target size; video pipelines get `num_frames`
and `num_videos_per_prompt`; the user's `--call-arg`s go through as typed. Every call asks for
`output_type="np"` where the pipeline takes it, so outputs can be compared across trials.

`describe_call_error` turns the usual ways a wrong call fails (a keyword the pipeline does not
take, an input it cannot read, a size it refuses) into one line naming what to pass.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from autotune.errors import InvalidTargetError
from autotune.target import Target

log = logging.getLogger(__name__)

OUTPUT_TYPE = "np"
#: Inputs autotune makes: a seeded noise image (RGB) or a centred mask (white = repaint).
IMAGE_INPUTS = ("image", "control_image")
MASK_INPUTS = ("mask_image",)
#: Arguments the target sets, with where each comes from: a --call-arg may not set them.
TARGET_SET = {
    "prompt": "the target's prompt", "height": "--height", "width": "--width",
    "num_inference_steps": "--steps", "num_images_per_prompt": "--batch",
    "num_videos_per_prompt": "--batch", "batch_size": "--batch", "num_frames": "--frames",
    "generator": "--seed", "output_type": "autotune (np, to compare outputs)",
    "return_dict": "autotune (it reads the pipeline's output)",
    **{name: "autotune (a seeded input image at the target size)" for name in IMAGE_INPUTS},
    **{name: "autotune (a mask at the target size)" for name in MASK_INPUTS},
}
_BATCH_ARGS = ("num_images_per_prompt", "num_videos_per_prompt")
_SCALAR_WORDS = re.compile(r"\b(int|float|bool|str)\b")
_CONTAINERS = re.compile(r"\b(?:list|tuple|List|Tuple)\[[^\]]*\]")
_NOT_SCALAR_WORDS = re.compile(r"Tensor|Callable|dict|Image|Generator|ndarray|Input|Module|Config")


@functools.lru_cache(maxsize=64)
def _parameters(pipeline_cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(pipeline_cls.__call__).parameters
    return {name: p for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def call_parameters(pipeline: Any) -> dict[str, inspect.Parameter]:
    """The named parameters of a pipeline's `__call__` (class or instance), without self/**kwargs."""
    return _parameters(pipeline if isinstance(pipeline, type) else type(pipeline))


def _takes_scalar(param: inspect.Parameter) -> bool:
    """Whether a `--call-arg` value (number, bool, text, null) can be this argument."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return param.default is None or isinstance(param.default, (str, int, float, bool))
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = _CONTAINERS.sub("", str(text))
    return bool(_SCALAR_WORDS.search(text)) and not _NOT_SCALAR_WORDS.search(text)


def accepted_call_args(pipeline: Any) -> list[str]:
    """The `__call__` arguments a `--call-arg` may set for this pipeline."""
    return _accepted(call_parameters(pipeline))


def _accepted(params: Mapping[str, inspect.Parameter]) -> list[str]:
    return [name for name, p in params.items() if name not in TARGET_SET and _takes_scalar(p)]


def pipeline_class(name: str | None) -> type | None:
    """The diffusers pipeline class of that name, or None (custom and community pipelines)."""
    if not name:
        return None
    import diffusers

    try:
        cls = getattr(diffusers, name)
    except (AttributeError, ImportError, RuntimeError):  # diffusers' lazy module raises these
        return None
    return cls if isinstance(cls, type) else None


def check_call_args(pipeline: Any, target: Target) -> None:
    """The target's `--call-arg`s and `--frames` fit this pipeline's `__call__` (class or instance),
    else one line naming what it accepts."""
    params = call_parameters(pipeline)
    name = _name(pipeline)
    if target.frames is not None and "num_frames" not in params:
        raise InvalidTargetError(
            f"--frames is for video pipelines; {name} takes no num_frames: leave --frames out"
        )
    accepted = accepted_call_args(pipeline)
    for key in target.call_args:
        if key in TARGET_SET and key in params:
            raise InvalidTargetError(f"--call-arg {key}: {name}'s {key} is set by {TARGET_SET[key]}, not by --call-arg")
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            what = "does not take a number, true/false or text for" if key in params else "takes no argument"
            raise InvalidTargetError(
                f"--call-arg {key}: {name} {what} {key}; {hint}it accepts {', '.join(accepted) or 'none'}"
            )


def call_kwargs(pipe: Any, target: Target, seed: int) -> dict[str, Any]:
    """Keyword arguments for `pipe(**call_kwargs(pipe, target, seed))`: the same call for the same
    target and seed, in every process (seeded generator and inputs)."""
    import torch

    check_call_args(pipe, target)
    params = call_parameters(pipe)
    kwargs: dict[str, Any] = {}
    if "prompt" in params:
        kwargs["prompt"] = target.prompt
    for name, value in (("height", target.height), ("width", target.width),
                        ("num_inference_steps", target.steps), ("num_frames", target.frames)):
        if name in params and value is not None:
            kwargs[name] = value
    kwargs.update(_batch_kwargs(pipe, params, target))
    for name in IMAGE_INPUTS:
        if name in params:
            kwargs[name] = seeded_image(target.width, target.height, seed)
    for name in MASK_INPUTS:
        if name in params:
            kwargs[name] = centred_mask(target.width, target.height)
    if "generator" in params:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
    if "output_type" in params:
        kwargs["output_type"] = OUTPUT_TYPE
    kwargs.update(target.call_args)
    _check_strength(pipe, params, kwargs)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise InvalidTargetError(
            f"{_name(pipe)} needs {', '.join(missing)}, which autotune cannot make for it; "
            f"only {', '.join(IMAGE_INPUTS + MASK_INPUTS)} inputs and --call-arg values are supported"
        )
    return kwargs


def call_pipeline(pipe: Any, target: Target, seed: int, capture_latents: list[Any] | None = None) -> Any:
    """`pipe(**call_kwargs(pipe, target, seed))`; a call the pipeline refuses is raised as
    InvalidTargetError with `describe_call_error`'s line (no trial of this target can run),
    anything else (out of memory, a knob's bug) as it came. With `capture_latents`, the latents
    after the last denoising step are put in it (as a tensor), where the pipeline offers a step
    callback."""
    kwargs = call_kwargs(pipe, target, seed)
    if capture_latents is not None and "callback_on_step_end" in call_parameters(pipe):
        def keep_latents(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            latents = callback_kwargs.get("latents")
            if latents is not None:  # a reference only: converted once, after the call
                capture_latents[:] = [latents]
            return callback_kwargs

        kwargs["callback_on_step_end"] = keep_latents
    try:
        return pipe(**kwargs)
    except (TypeError, ValueError) as exc:
        message = describe_call_error(exc, pipe, kwargs)
        if message is None:
            raise
        raise InvalidTargetError(message) from exc


def _batch_kwargs(pipe: Any, params: Mapping[str, Any], target: Target) -> dict[str, Any]:
    for name in _BATCH_ARGS:
        if name in params:
            return {name: target.batch}
    if target.batch == 1:
        return {}
    if "prompt" in params:  # one output per prompt: a batch is a list of prompts
        return {"prompt": [target.prompt] * target.batch}
    if "batch_size" in params:
        return {"batch_size": target.batch}
    raise InvalidTargetError(f"{_name(pipe)} makes one output per call: use --batch 1")


def _check_strength(pipe: Any, params: Mapping[str, inspect.Parameter], kwargs: dict[str, Any]) -> None:
    """Image-to-image runs int(steps * strength) steps: zero steps fails deep in the pipeline."""
    if "strength" not in params or "num_inference_steps" not in kwargs:
        return
    strength = kwargs.get("strength", params["strength"].default)
    steps = kwargs["num_inference_steps"]
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or int(steps * strength) >= 1:
        return
    if strength <= 0:
        raise InvalidTargetError(f"--call-arg strength must be more than 0 for {_name(pipe)}, got {strength}")
    raise InvalidTargetError(
        f"{_name(pipe)} denoises int(steps x strength) = int({steps} x {strength:g}) = 0 steps: pass "
        f"--steps {math.ceil(1 / strength)} or more, or --call-arg strength=1.0"
    )


def seeded_image(width: int, height: int, seed: int) -> Any:
    """An RGB noise image of the target size; the same seed gives the same pixels everywhere."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def centred_mask(width: int, height: int) -> Any:
    """A mask of the target size whose centre half (white) is repainted."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((width // 4, height // 4, width * 3 // 4 - 1, height * 3 // 4 - 1), fill=255)
    return mask


def output_array(result: Any) -> Any:
    """The numpy images (or video frames) of a pipeline call made with `call_kwargs`."""
    import numpy as np

    for name in ("images", "frames", "videos"):
        value = getattr(result, name, None)
        if value is not None:
            return np.asarray(value)
    if isinstance(result, tuple) and result:
        return np.asarray(result[0])
    raise TypeError(f"{type(result).__name__} has no images or frames")


# ---- the typical failures of a wrong call, as one line -------------------------------------------

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")
_MISSING = re.compile(r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)$")
_DIVISIBLE = re.compile(r"divisible by (\d+)")


def describe_call_error(exc: BaseException, pipe: Any, kwargs: Mapping[str, Any] | None = None) -> str | None:
    """One line naming the argument to pass when `exc` is a pipeline refusing its call arguments;
    None when it is something else (a bug, out of memory), to be raised as is."""
    if not isinstance(exc, (TypeError, ValueError)):
        return None
    params = call_parameters(pipe)
    name = _name(pipe)
    kwargs = kwargs or {}
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TypeError):
        return _describe_type_error(text, name, params)
    lowered = text.lower()
    if "sample size" in lowered and "use_resolution_binning" in params:
        if kwargs.get("use_resolution_binning", params["use_resolution_binning"].default) is not False:
            size = f"height={kwargs['height']}" if "height" in kwargs else "this size"
            return f"{name} refused {size} ({text}): pass --call-arg use_resolution_binning=false"
    if "incorrect format" in lowered:
        images = [n for n, p in params.items() if "image" in n and n not in kwargs]
        if images:
            return (f"{name} could not read an input image ({text[:80]}); it was not given "
                    f"{', '.join(images)}: call it with autotune.models.call.call_kwargs, which makes them")
        return None
    divisible = _DIVISIBLE.search(text)
    if divisible and "height" in lowered and "width" in lowered:
        size = f", got {kwargs['width']}x{kwargs['height']}" if {"height", "width"} <= set(kwargs) else ""
        return f"{name} needs --height and --width divisible by {divisible.group(1)}{size}"
    if "strength" in lowered and "strength" in params:
        return f"{name} refused strength={kwargs.get('strength', params['strength'].default)}: pass --call-arg strength=VALUE between 0 and 1"
    return None


def _describe_type_error(text: str, name: str, params: Mapping[str, inspect.Parameter]) -> str | None:
    unexpected = _UNEXPECTED.search(text)
    if unexpected:
        arg = unexpected.group(1)
        if arg in params:  # raised deeper than the call itself: not a call error
            return None
        close = difflib.get_close_matches(arg, list(params), n=1, cutoff=0.7)
        hint = f"pass {close[0]} instead" if close else f"it takes {', '.join(_accepted(params))}"
        return f"{name} takes no argument {arg}: {hint}"
    missing = _MISSING.search(text)
    if missing:
        names = re.findall(r"'(\w+)'", missing.group(1))
        if names and all(n in params for n in names):
            scalar = [n for n in names if _takes_scalar(params[n])]
            if scalar == names:
                return f"{name} needs {', '.join(names)}: pass " + " ".join(f"--call-arg {n}=VALUE" for n in names)
            return f"{name} needs {', '.join(names)}, which autotune cannot make for it"
    return None


def _name(pipeline: Any) -> str:
    return pipeline.__name__ if isinstance(pipeline, type) else type(pipeline).__name__

"""cache: reuse the denoiser's output between steps where its first block barely changes
(diffusers' FirstBlockCache: `transformer.enable_cache(FirstBlockCacheConfig(threshold=...))`).

The transformer runs its first block every step; when that block's output moved less than the
threshold (relative L1) since the last full step, the remaining blocks are skipped and their
cached residual is added instead. A higher threshold skips more steps and changes the image
more: lossy, and its error builds up across steps, so it is judged on the final image. Published
on an L20, Flux-dev: 26.4 s baseline, 17.0 s with a threshold of 0.08.

It works only where both halves exist: a denoiser with diffusers' `CacheMixin` (Flux, Wan, LTX,
QwenImage, CogVideoX, HunyuanVideo...; not the SD/SDXL UNet, SD3 or PixArt), and a pipeline whose
`__call__` enters the denoiser's `cache_context` (the hooks key their state by it). What the cache
keeps between steps (one residual and one first-block output, the size of the hidden states, per
context) is not in the planner's prediction: it is a few activations, not weights.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from autotune.knobs.context import DENOISERS, denoiser_module
from autotune.knobs.registry import ApplyContext, Context, Knob, SpeedPrior, Stage, Value, register

NONE = "none"
#: diffusers' default threshold, the published Flux-dev one, and a bolder one.
THRESHOLDS = {"first-block-0.05": 0.05, "first-block-0.08": 0.08, "first-block-0.12": 0.12}


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value == NONE:
        return
    from diffusers import FirstBlockCacheConfig

    denoiser_module(pipe).enable_cache(FirstBlockCacheConfig(threshold=THRESHOLDS[value]))


@functools.lru_cache(maxsize=64)
def _has_cache_hooks(class_name: str) -> bool | None:
    """Whether diffusers' class `class_name` has the caching hooks; None: not a diffusers class."""
    import diffusers
    from diffusers.models.cache_utils import CacheMixin

    cls = getattr(diffusers, class_name, None)
    return issubclass(cls, CacheMixin) if isinstance(cls, type) else None


@functools.lru_cache(maxsize=64)
def _enters_cache_context(pipeline_class: str) -> bool | None:
    """Whether the pipeline's `__call__` enters the denoiser's cache context; None: unknown class."""
    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    if not isinstance(cls, type):
        return None
    try:
        return "cache_context(" in inspect.getsource(cls.__call__)
    except (OSError, TypeError):  # no source to read (a compiled or dynamic class)
        return None


def _reason(value: Value, ctx: Context) -> str | None:
    if value == NONE:
        return None
    name = ctx.denoiser() or ""
    facts = ctx.facts(name)
    class_name = facts.class_name if facts else ctx.component_classes.get(name, ("", ""))[1]
    # By name where the class is unknown: no diffusers UNet has the hooks (0.42).
    if (class_name and _has_cache_hooks(class_name) is False) or (not class_name and name == "unet"):
        return (f"{ctx.class_name(name)} has no caching hooks (diffusers' CacheMixin: Flux, Wan, LTX, "
                "QwenImage, CogVideoX, HunyuanVideo... transformers)")
    if ctx.pipeline_class and _enters_cache_context(ctx.pipeline_class) is False:
        return f"{ctx.pipeline_class} never enters the denoiser's cache context, so the cache would not run"
    return None


register(Knob(
    name="cache", choices=(NONE, *THRESHOLDS), default=NONE, stage=Stage.TUNE,
    help="FirstBlockCache: skip the denoiser's remaining blocks on steps where its first block "
         "barely changed (diffusers' enable_cache); lossy, higher thresholds skip more",
    apply=_apply, lossy=frozenset(THRESHOLDS), judged_end_to_end=frozenset(THRESHOLDS),
    requires_components=DENOISERS, unavailable_reason=_reason,
    # The more steps skipped, the faster: the boldest threshold first.
    speed=SpeedPrior(order=6, rank=lambda value, device: {NONE: 3, "first-block-0.05": 2,
                                                          "first-block-0.08": 1, "first-block-0.12": 0}[value]),
))

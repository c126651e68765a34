"""The attention kernel of transformer denoisers, through diffusers' `set_attention_backend`.

Only denoisers whose attention processors dispatch through diffusers' attention dispatcher
(Flux, Wan, LTX, HunyuanVideo, QwenImage...) are changed by it; the SD/SDXL UNet, SD3 and PixArt
processors call SDPA themselves, so the knob is not offered there. The backends other than
`native` (PyTorch SDPA, as a fresh pipeline runs) need CUDA, and some a package.
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.builtin.attention import xformers_unavailable_reason
from autotune.knobs.probe import pipeline_context
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    SpeedPrior,
    Stage,
    Value,
    register,
    register_conflict,
)

DEFAULT = "native"
#: backend -> the package it needs (None: part of PyTorch).
PACKAGES: dict[str, str | None] = {
    "native": None,
    "_native_flash": None,
    "_native_efficient": None,
    "_native_cudnn": None,
    "flash": "flash_attn",
    "_flash_3": "flash_attn_3",
    "sage": "sageattention",
    "xformers": "xformers",
}
#: Kernels that take fp16/bf16 only (diffusers registers them with `_check_qkv_dtype_bf16_or_fp16`).
HALF_ONLY = frozenset({"_native_flash", "_native_cudnn", "flash", "_flash_3", "sage"})


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    facts = pipeline_context(pipe, ctx.device).modules or {}
    for name in (n for n, f in facts.items() if f.attention_dispatch):  # Wan 2.2: transformer and transformer_2
        model = getattr(pipe, name)
        if value != DEFAULT:
            model.set_attention_backend(value)
        elif any(getattr(getattr(m, "processor", None), "_attention_backend", None) is not None
                 for m in model.modules()):
            # Undo an earlier backend: native for the process (diffusers keeps one active backend),
            # then processors without a backend of their own, as a fresh pipeline has them.
            model.set_attention_backend(DEFAULT)
            model.reset_attention_backend()


def _reason(value: Value, ctx: Context) -> str | None:
    name = ctx.denoiser()
    if name is None:
        return "the pipeline has no unet or transformer component"
    facts = ctx.facts(name)
    if facts is None:
        return ("needs the denoiser's attention processors probed (a context built with "
                "autotune.knobs.probe); without them it cannot tell whether the backend is used")
    if not facts.attention_dispatch:
        return (f"{ctx.class_name(name)}: its attention processors call SDPA themselves, not "
                "diffusers' dispatcher, so set_attention_backend would change nothing")
    if ctx.device != "cuda":
        return "attention backends other than native are CUDA kernels; needs --device cuda"
    if value == "xformers":
        return xformers_unavailable_reason(ctx)
    package = PACKAGES[value]
    if package and not ctx.has_package(package):
        return f"the {value} backend needs the {package} package (pip install {package.replace('_', '-')})"
    return None


register(Knob(
    name="attention_backend", choices=tuple(PACKAGES), default=DEFAULT, stage=Stage.TUNE,
    help="attention kernel of transformer denoisers (diffusers' set_attention_backend): PyTorch "
         "SDPA, its flash/efficient/cuDNN kernels, flash-attn, SageAttention or xFormers",
    apply=_apply, unavailable_reason=_reason,
    lossy=frozenset({"sage"}),  # SageAttention quantizes Q and K to int8
    process_state=frozenset(set(PACKAGES) - {DEFAULT}),  # diffusers also sets a process-wide active backend
    speed=SpeedPrior(order=9, rank=lambda value, device: 0),  # no prior: which kernel wins depends on the card
))

register_conflict(Conflict(
    "attention_backend", HALF_ONLY, "dtype", frozenset({"fp32"}),
    "these attention kernels take fp16/bf16 only; fp32 falls back or fails",
))
register_conflict(Conflict(
    "attention_backend", frozenset(set(PACKAGES) - {DEFAULT}), "attention", frozenset({"sliced", "xformers"}),
    "two switches for one attention kernel: choose it with attention_backend alone",
))

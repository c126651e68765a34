"""The techniques of diffusers' "Reduce memory usage" and "Speed up inference" guides as knobs.

Each `apply` uses diffusers' own switches (offload hooks, layerwise casting, VAE slicing/tiling,
attention processors, regional compile); nothing here re-implements them.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

from autotune.knobs.context import DENOISERS
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    ReasonFn,
    Stage,
    Value,
    register,
    register_conflict,
)

log = logging.getLogger(__name__)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def denoiser(pipe: Any) -> Any:
    """The module that runs every step (UNet for SD/SDXL, transformer for DiT pipelines)."""
    for name in DENOISERS:
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise AttributeError(f"{type(pipe).__name__} has neither a unet nor a transformer")


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name])


def pipeline_dtype(pipe: Any) -> Any:
    return denoiser(pipe).dtype


def _needs_accelerator(value: Value, ctx: Context) -> str | None:
    if value != "none" and ctx.device == "cpu":
        return "needs an accelerator: on cpu, weights and compute share one memory, nothing to save"
    if isinstance(value, str) and value.endswith("-stream") and ctx.device != "cuda":
        return "streamed group offload overlaps copies on a CUDA stream; needs --device cuda"
    return None


# ---- load stage: how weights are stored -------------------------------------------------------

def _apply_dtype(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    dtype = torch_dtype(value)
    if pipeline_dtype(pipe) != dtype:
        pipe.to(dtype=dtype)


register(Knob(
    name="dtype", choices=("fp32", "fp16", "bf16"), default="fp32", stage=Stage.LOAD,
    help="weight and activation precision; half precision halves weight memory",
    apply=_apply_dtype, lossy=frozenset({"fp16", "bf16"}),
))


def _apply_layerwise_fp8(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value:
        model = denoiser(pipe)
        model.enable_layerwise_casting(storage_dtype=_fp8(), compute_dtype=model.dtype)


def _fp8() -> Any:
    import torch

    return torch.float8_e4m3fn


register(Knob(
    name="layerwise_fp8", choices=(False, True), default=False, stage=Stage.LOAD,
    help="store denoiser weights in float8_e4m3fn, upcast each layer as it runs (irreversible)",
    apply=_apply_layerwise_fp8, lossy=frozenset({True}), requires_components=DENOISERS,
))


def _apply_channels_last(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    # Layout is a property of stored weights, so it is set before offload hooks capture them.
    if value:
        import torch

        from autotune.knobs.probe import pipeline_context

        facts = pipeline_context(pipe, ctx.device).modules or {}
        for name, module_facts in facts.items():
            if module_facts.channels_last_ok:
                getattr(pipe, name).to(memory_format=torch.channels_last)


def _channels_last_reason(value: Value, ctx: Context) -> str | None:
    if not value:
        return None
    modules = ctx.modules
    if modules is None:  # no module facts: the UNet and VAE of SD-like pipelines
        return None if {"unet", "vae"} & ctx.components else "the pipeline has no unet or vae component"
    if any(f.channels_last_ok for f in modules.values()):
        return None
    seen = "; ".join(f"{ctx.class_name(n)} has {f.conv_summary()}" for n, f in modules.items() if f.conv_dims)
    return "channels_last needs 2-D convolutions and no rank-5 weights" + (f": {seen}" if seen else "")


register(Knob(
    name="channels_last", choices=(False, True), default=False, stage=Stage.LOAD,
    help="NHWC memory layout for the components with 2-D convolutions (UNet, 2-D VAE); faster "
         "convolutions on GPUs",
    apply=_apply_channels_last, unavailable_reason=_channels_last_reason,
))


# ---- place stage: where weights live ----------------------------------------------------------

OFFLOAD_CHOICES = ("none", "model", "sequential", "group-block-1", "group-block-1-stream",
                   "group-leaf", "group-leaf-stream")


def _apply_offload(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value == "none":
        pipe.to(ctx.device)
    elif value == "model":
        pipe.enable_model_cpu_offload(device=ctx.device)
    elif value == "sequential":
        pipe.enable_sequential_cpu_offload(device=ctx.device)
    elif value.startswith("group-"):
        parts = value.split("-")
        kind = parts[1]
        kwargs: dict[str, Any] = {
            "onload_device": ctx.device,
            "offload_device": "cpu",
            "offload_type": "block_level" if kind == "block" else "leaf_level",
            "use_stream": parts[-1] == "stream",
        }
        if kind == "block":
            kwargs["num_blocks_per_group"] = int(parts[2])
        pipe.enable_group_offload(**kwargs)
    else:  # the registry validates values before apply; reaching this is a bug
        raise ValueError(f"unknown offload mode {value!r}")


register(Knob(
    name="offload", choices=OFFLOAD_CHOICES, default="none", stage=Stage.PLACE,
    help="keep weights in CPU RAM and move them to the GPU when needed: per model, per leaf "
         "layer (sequential) or per group of blocks (group offload, optionally on a CUDA stream)",
    apply=_apply_offload, unavailable_reason=_needs_accelerator,
))


# ---- tune stage: runtime switches -------------------------------------------------------------

def _apply_attention(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value == "sdpa":
        # SDPA is what a fresh pipeline runs: only undo slicing, and leave processors the user
        # installed (IP-Adapter, custom ones) alone.
        unet = getattr(pipe, "unet", None)
        if unet is not None and any("Sliced" in type(p).__name__ for p in unet.attn_processors.values()):
            from diffusers.models.attention_processor import AttnProcessor2_0

            unet.set_attn_processor(AttnProcessor2_0())
    elif value == "sliced":
        pipe.enable_attention_slicing()
    elif value == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    else:
        raise ValueError(f"unknown attention mode {value!r}")


def _attention_reason(value: Value, ctx: Context) -> str | None:
    if value == "sliced":
        facts = ctx.facts(ctx.denoiser())
        if facts is not None and not facts.attention_slicing:
            return (f"{ctx.class_name(ctx.denoiser() or '')} does not implement attention slicing "
                    "(no set_attention_slice): enable_attention_slicing would change nothing")
        return None
    if value != "xformers":
        return None
    return xformers_unavailable_reason(ctx)


def xformers_unavailable_reason(ctx: Context) -> str | None:
    """Why xFormers' kernels cannot run here (not installed, no CUDA, a wheel for another
    torch/CUDA), or None."""
    if not ctx.has_package("xformers"):
        return "xformers is not installed (pip install 'diffusers-autotune[xformers]')"
    if ctx.device != "cuda":
        return "xformers' memory-efficient attention kernels need CUDA"
    return _xformers_smoke_error()


@functools.lru_cache(maxsize=1)
def _xformers_smoke_error() -> str | None:
    """xformers wheels are built for one torch/CUDA pair: run one tiny op to know it works here."""
    try:
        import torch
        import xformers.ops

        q = torch.randn(1, 8, 1, 16, device="cuda", dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
    # AssertionError: what torch raises for device="cuda" on a build without CUDA.
    except (ImportError, RuntimeError, NotImplementedError, ValueError, AssertionError) as exc:
        return f"xformers is installed but its kernels do not run here: {str(exc).splitlines()[0]}"
    return None


register(Knob(
    name="attention", choices=("sdpa", "sliced", "xformers"), default="sdpa", stage=Stage.TUNE,
    help="attention kernel: PyTorch SDPA (flash/mem-efficient), sliced (chunked, lower peak), "
         "or xFormers",
    apply=_apply_attention, requires_components=DENOISERS, unavailable_reason=_attention_reason,
))


def _apply_vae_slicing(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    (pipe.vae.enable_slicing if value else pipe.vae.disable_slicing)()


def _vae_reason(method: str) -> ReasonFn:
    def reason(value: Value, ctx: Context) -> str | None:
        facts = ctx.facts("vae")
        if value and facts is not None and not getattr(facts, method.removeprefix("enable_")):
            return f"{ctx.class_name('vae')} has no {method}()"
        return None
    return reason


register(Knob(
    name="vae_slicing", choices=(False, True), default=False, stage=Stage.TUNE,
    help="decode the batch one image at a time (lower VAE peak for batch > 1)",
    apply=_apply_vae_slicing, requires_components=("vae",), unavailable_reason=_vae_reason("enable_slicing"),
))


def _apply_vae_tiling(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    (pipe.vae.enable_tiling if value else pipe.vae.disable_tiling)()


register(Knob(
    name="vae_tiling", choices=(False, True), default=False, stage=Stage.TUNE,
    help="decode in overlapping tiles (lower VAE peak at large sizes; changes pixels slightly, "
         "does nothing below the tile size)",
    apply=_apply_vae_tiling, lossy=frozenset({True}), requires_components=("vae",),
    unavailable_reason=_vae_reason("enable_tiling"),
))


# ---- compile stage ----------------------------------------------------------------------------

def _apply_compile(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    model = denoiser(pipe)
    if value == "full":
        model.compile()
    elif value == "regional":
        model.compile_repeated_blocks()
    elif value != "none":
        raise ValueError(f"unknown compile mode {value!r}")


def _compile_reason(value: Value, ctx: Context) -> str | None:
    facts = ctx.facts(ctx.denoiser())
    if value == "regional" and facts is not None and not facts.repeated_blocks:
        return (f"{ctx.class_name(ctx.denoiser() or '')} declares no repeated blocks "
                "(_repeated_blocks) for compile_repeated_blocks; compile=full compiles it whole")
    return None


def _compile_excluded(value: Value, ctx: Context) -> str | None:
    if value != "none" and ctx.device == "cpu":
        return "cold torch.compile takes ~50 s per trial on CPU; add --include compile to search it"
    return None


register(Knob(
    name="compile", choices=("none", "full", "regional"), default="none", stage=Stage.COMPILE,
    help="torch.compile the denoiser: whole model, or only its repeated blocks (faster to compile)",
    apply=_apply_compile, requires_components=DENOISERS, unavailable_reason=_compile_reason,
    excluded_by_default=_compile_excluded,
    process_state=frozenset({"full", "regional"}),
))


register_conflict(Conflict(
    "compile", frozenset({"full", "regional"}), "offload", frozenset({"sequential"}),
    "torch.compile cannot trace through sequential offload's per-layer hooks",
))

"""attention: the attention kernel of UNet denoisers' processors. PyTorch SDPA (flash /
memory-efficient, what a fresh pipeline runs), sliced (chunked over heads: lower peak, slower),
or xFormers. Transformer denoisers choose their kernel with `attention_backend` instead."""
from __future__ import annotations

import functools
from typing import Any

from autotune.knobs.context import DENOISERS
from autotune.knobs.registry import ApplyContext, Context, Knob, PlanEffect, SpeedPrior, Stage, Value, register


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
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


def _reason(value: Value, ctx: Context) -> str | None:
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


def _configure(module: Any, value: Value) -> None:
    """Sliced attention on the planner's fake denoiser where it implements it; otherwise the
    processors it was built with (the fake module is shared between traces: undo a sliced one).
    xFormers is traced as SDPA: both keep no attention matrix."""
    original = module.__dict__.setdefault("_autotune_built_processors", dict(getattr(module, "attn_processors", {})))
    if value == "sliced" and callable(getattr(module, "set_attention_slice", None)):
        module.set_attention_slice("auto")
    elif original and any(p is not original[k] for k, p in module.attn_processors.items()):
        module.set_attn_processor(dict(original))


register(Knob(
    name="attention", choices=("sdpa", "sliced", "xformers"), default="sdpa", stage=Stage.TUNE,
    help="attention kernel: PyTorch SDPA (flash/mem-efficient), sliced (chunked, lower peak), "
         "or xFormers",
    apply=_apply, requires_components=DENOISERS, unavailable_reason=_reason,
    plan=PlanEffect(roles=frozenset({"denoiser"}), configure=_configure),
    speed=SpeedPrior(order=3, rank=lambda value, device: int(value == "sliced")),
))

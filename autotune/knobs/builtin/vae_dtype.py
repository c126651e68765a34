"""vae_dtype: the VAE in fp32 under a half-precision pipeline, the usual fix for a VAE whose fp16
activations overflow (NaN or black images), as SDXL's `force_upcast` does for every decode.

diffusers' SD-family pipelines hand the VAE latents in the denoiser's dtype and its encoder an
image in the same dtype, and mix the encoder's latents with noise in it; so beside moving the
VAE to fp32, forward pre-hooks cast what enters its encoder and decoder to fp32, and a forward
hook casts the encoder's latents back to the pipeline's dtype. SDXL pipelines then skip their
per-image round trip of the VAE to fp32 and back (`needs_upcasting` reads the VAE's dtype). The
weights are those loaded in the pipeline's dtype, upcast: what overflows is the activations.
Exact: it moves the output towards the fp32 reference, never away.
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Knob,
    PlanEffect,
    SpeedPrior,
    Stage,
    Value,
    register,
    register_conflict,
)

CHOICES = ("same", "fp32")


class VaeWithoutCodersError(ValueError):
    """The VAE has no `decoder` submodule whose inputs the upcast could cast to fp32."""


def _cast_inputs(dtype: Any) -> Any:
    """A forward pre-hook casting a module's floating-point tensor arguments to `dtype`."""
    import torch

    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    return hook


def _cast_output(dtype: Any) -> Any:
    """A forward hook casting a module's tensor output to `dtype` (anything else passes)."""
    import torch

    def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
        return output.to(dtype) if isinstance(output, torch.Tensor) else output

    return hook


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value != "fp32":
        return
    import torch

    vae = pipe.vae
    compute = vae.dtype
    if compute == torch.float32:
        return
    if getattr(vae, "decoder", None) is None:
        raise VaeWithoutCodersError(f"{type(vae).__name__} has no decoder submodule to run in fp32")
    vae.to(torch.float32)
    # what takes the latents (post_quant_conv, then the decoder) and the image (the encoder)
    for name in ("post_quant_conv", "decoder", "encoder"):
        module = getattr(vae, name, None)
        if module is not None:
            module.register_forward_pre_hook(_cast_inputs(torch.float32))
    # ... and what gives the latents back (quant_conv after the encoder, else the encoder)
    latents_out = getattr(vae, "quant_conv", None)
    latents_out = getattr(vae, "encoder", None) if latents_out is None else latents_out
    if latents_out is not None:
        latents_out.register_forward_hook(_cast_output(compute))


def _planned_dtype(value: Value) -> Any:
    """The planner's fake VAE is built in fp32: its weights and its decode's activations."""
    if value != "fp32":
        return None
    import torch

    return torch.float32


register(Knob(
    name="vae_dtype", choices=CHOICES, default="same", stage=Stage.LOAD,
    help="the VAE in fp32 under a half-precision pipeline: the fix for fp16 VAE overflow "
         "(NaN or black images); more VAE memory",
    apply=_apply, requires_components=("vae",),
    after=("dtype",),  # it upcasts what dtype set
    plan=PlanEffect(roles=frozenset({"vae"}), own_dtype=_planned_dtype),
    speed=SpeedPrior(order=7),
))

register_conflict(Conflict(
    "vae_dtype", frozenset({"fp32"}), "dtype", frozenset({"fp32"}),
    "the VAE is in fp32 already when the whole pipeline is",
))

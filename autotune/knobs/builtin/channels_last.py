"""channels_last: NHWC memory layout for the components with 2-D convolutions (UNet, 2-D VAE),
which convolution kernels on GPUs run faster; components with 3-D convolutions are left alone
(their rank-5 weights cannot take the format)."""
from __future__ import annotations

from typing import Any

from autotune.knobs.probe import pipeline_context
from autotune.knobs.registry import ApplyContext, Context, Knob, PlanEffect, SpeedPrior, Stage, Value, register


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    # Layout is a property of stored weights, so it is set before offload hooks capture them.
    if value:
        import torch

        facts = pipeline_context(pipe, ctx.device).modules or {}
        for name, module_facts in facts.items():
            if module_facts.channels_last_ok:
                getattr(pipe, name).to(memory_format=torch.channels_last)


def _reason(value: Value, ctx: Context) -> str | None:
    if not value:
        return None
    modules = ctx.modules
    if modules is None:  # no module facts: the UNet and VAE of SD-like pipelines
        return None if {"unet", "vae"} & ctx.components else "the pipeline has no unet or vae component"
    if any(f.channels_last_ok for f in modules.values()):
        return None
    seen = "; ".join(f"{ctx.class_name(n)} has {f.conv_summary()}" for n, f in modules.items() if f.conv_dims)
    return "channels_last needs 2-D convolutions and no rank-5 weights" + (f": {seen}" if seen else "")


#: Fitted in the same run as `planner.calibration.VAE_DECODE_WORKSPACE_FACTOR` (NVIDIA H200, torch
#: 2.11 + CUDA 13.0, builtin:sd15 512x512, benchmarks/results/2026-11-26-nvidia-h200.json): the VAE
#: decode's workspace was 0.30x its traced activation peak with channels_last weights, against
#: 0.70-0.75x with NCHW (no NCHW<->NHWC copies of the feature maps around cuDNN's kernels).
VAE_DECODE_WORKSPACE_FACTOR = 0.30


def _vae_workspace_factor(value: Value) -> float | None:
    return VAE_DECODE_WORKSPACE_FACTOR if value else None


register(Knob(
    name="channels_last", choices=(False, True), default=False, stage=Stage.LOAD,
    help="NHWC memory layout for the components with 2-D convolutions (UNet, 2-D VAE); faster "
         "convolutions on GPUs",
    apply=_apply, unavailable_reason=_reason,
    after=("dtype", "layerwise_fp8"),  # lay out the weights in their final storage dtype
    plan=PlanEffect(vae_workspace_factor=_vae_workspace_factor),
    speed=SpeedPrior(order=8),
))

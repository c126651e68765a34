"""fuse_qkv: one matmul for each attention's query, key and value projections (key and value for
cross-attention) instead of three, through diffusers' `fuse_qkv_projections()` on the denoiser.

Exact (the same weights, concatenated). diffusers keeps the unfused projections beside the fused
ones, so the denoiser holds its attention projection weights twice: the planner builds the fake
denoiser fused and counts them. The speed-up comes with torch.compile on CUDA (diffusers' "speed
up inference" guide); neither is searched on CPU by default.
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.context import DENOISERS, denoiser_module
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    PlanEffect,
    SpeedPrior,
    Stage,
    Value,
    register,
    register_conflict,
)


#: Usually fastest first: fused on CUDA (one larger matmul, with compile); unmeasured on CPU.
SPEED = {"cuda": {True: 0, False: 1}, "cpu": {False: 0, True: 1}}


def _fuse(model: Any, value: Value) -> None:
    if value:
        model.fuse_qkv_projections()


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    _fuse(denoiser_module(pipe), value)


def _reason(value: Value, ctx: Context) -> str | None:
    name = ctx.denoiser()
    facts = ctx.facts(name)
    class_name = facts.class_name if facts else ctx.component_classes.get(name or "", ("", ""))[1]
    if not value or not class_name:
        return None  # the class is unknown (no model index): the apply says it if it cannot
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if isinstance(cls, type) and not callable(getattr(cls, "fuse_qkv_projections", None)):
        return f"{ctx.class_name(name or '')} has no fuse_qkv_projections()"
    return None


def _excluded(value: Value, ctx: Context) -> str | None:
    if value and ctx.device == "cpu":
        return ("fused projections pay off with torch.compile on CUDA; add --include fuse_qkv to "
                "search them on CPU")
    return None


register(Knob(
    name="fuse_qkv", choices=(False, True), default=False, stage=Stage.LOAD,
    help="fuse each attention's q/k/v projections into one matmul (diffusers' fuse_qkv_projections); "
         "exact, keeps the unfused weights too",
    apply=_apply, requires_components=DENOISERS, unavailable_reason=_reason, excluded_by_default=_excluded,
    after=("dtype",), before=("layerwise_fp8",),  # concatenate the weights before they are cast to fp8
    plan=PlanEffect(roles=frozenset({"denoiser"}), modify=_fuse),
    speed=SpeedPrior(order=5, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value]),
))

register_conflict(Conflict(
    "fuse_qkv", frozenset({True}), "attention", frozenset({"sliced", "xformers"}),
    "sliced and xFormers attention processors replace the fused one and run the unfused projections",
))

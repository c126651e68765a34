"""vae_slicing: decode the batch one image at a time (lower VAE peak for batch > 1)."""
from __future__ import annotations

from typing import Any

from autotune.knobs.registry import ApplyContext, Context, Knob, PlanEffect, SpeedPrior, Stage, Value, register


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    _configure(pipe.vae, value)


def _configure(vae: Any, value: Value) -> None:
    (vae.enable_slicing if value else vae.disable_slicing)()


def _reason(value: Value, ctx: Context) -> str | None:
    facts = ctx.facts("vae")
    if value and facts is not None and not facts.slicing:
        return f"{ctx.class_name('vae')} has no enable_slicing()"
    return None


def _excluded(value: Value, ctx: Context) -> str | None:
    """Left out where it would change nothing: a batch of one has nothing to slice."""
    facts = ctx.facts("vae")
    if value and facts is not None and facts.slices_batch and ctx.batch == 1:
        return f"does nothing at batch 1: {ctx.class_name('vae')} slices a batch into single images"
    return None


register(Knob(
    name="vae_slicing", choices=(False, True), default=False, stage=Stage.TUNE,
    help="decode the batch one image at a time (lower VAE peak for batch > 1)",
    apply=_apply, requires_components=("vae",), unavailable_reason=_reason, excluded_by_default=_excluded,
    plan=PlanEffect(roles=frozenset({"vae"}), configure=_configure),
    speed=SpeedPrior(order=6),
))

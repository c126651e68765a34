"""vae_tiling: decode in overlapping tiles (lower VAE peak at large sizes; blends the tile
seams, so pixels change slightly; does nothing below the tile size)."""
from __future__ import annotations

from typing import Any

from autotune.knobs.registry import ApplyContext, Context, Knob, PlanEffect, SpeedPrior, Stage, Value, register


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    _configure(pipe.vae, value)


def _configure(vae: Any, value: Value) -> None:
    (vae.enable_tiling if value else vae.disable_tiling)()


def _reason(value: Value, ctx: Context) -> str | None:
    facts = ctx.facts("vae")
    if value and facts is not None and not facts.tiling:
        return f"{ctx.class_name('vae')} has no enable_tiling()"
    return None


def _excluded(value: Value, ctx: Context) -> str | None:
    """Left out where it would change nothing: the VAE decodes a latent up to its tile whole."""
    facts = ctx.facts("vae")
    limit = facts.untiled_up_to if facts is not None else None
    if value and limit is not None and ctx.height is not None and ctx.width is not None \
            and ctx.height <= limit[0] and ctx.width <= limit[1]:
        return (f"does nothing at {ctx.width}x{ctx.height}: {ctx.class_name('vae')} decodes up to "
                f"{limit[1]}x{limit[0]} in one tile")
    return None


register(Knob(
    name="vae_tiling", choices=(False, True), default=False, stage=Stage.TUNE,
    help="decode in overlapping tiles (lower VAE peak at large sizes; changes pixels slightly, "
         "does nothing below the tile size)",
    apply=_apply, lossy=frozenset({True}), requires_components=("vae",), unavailable_reason=_reason,
    excluded_by_default=_excluded,
    plan=PlanEffect(roles=frozenset({"vae"}), configure=_configure),
    speed=SpeedPrior(order=7),
))

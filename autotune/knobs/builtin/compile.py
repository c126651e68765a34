"""compile: torch.compile the denoiser, whole (`model.compile()`) or only its repeated blocks
(`compile_repeated_blocks`: compiles once per block class, so much faster to compile)."""
from __future__ import annotations

from typing import Any

from autotune.knobs.context import DENOISERS, denoiser_module
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

COMPILED = frozenset({"full", "regional"})
#: Usually fastest first: compiled code wins on CUDA; on CPU the compiled denoiser was not faster.
SPEED = {"cuda": {"full": 0, "regional": 1, "none": 2}, "cpu": {"none": 0, "regional": 1, "full": 2}}


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    model = denoiser_module(pipe)
    if value == "full":
        model.compile()
    elif value == "regional":
        model.compile_repeated_blocks()
    elif value != "none":
        raise ValueError(f"unknown compile mode {value!r}")


def _reason(value: Value, ctx: Context) -> str | None:
    facts = ctx.facts(ctx.denoiser())
    if value == "regional" and facts is not None and not facts.repeated_blocks:
        return (f"{ctx.class_name(ctx.denoiser() or '')} declares no repeated blocks "
                "(_repeated_blocks) for compile_repeated_blocks; compile=full compiles it whole")
    return None


def _excluded(value: Value, ctx: Context) -> str | None:
    if value != "none" and ctx.device == "cpu":
        return "cold torch.compile takes ~50 s per trial on CPU; add --include compile to search it"
    return None


register(Knob(
    name="compile", choices=("none", "full", "regional"), default="none", stage=Stage.COMPILE,
    help="torch.compile the denoiser: whole model, or only its repeated blocks (faster to compile)",
    apply=_apply, requires_components=DENOISERS, unavailable_reason=_reason, excluded_by_default=_excluded,
    process_state=COMPILED, compiles=COMPILED,
    speed=SpeedPrior(order=2, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value]),
))

register_conflict(Conflict(
    "compile", COMPILED, "offload", frozenset({"sequential"}),
    "torch.compile cannot trace through sequential offload's per-layer hooks",
))

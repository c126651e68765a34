"""quantize_text: every text encoder's linear layers quantized by torchao, with the schemes of
the denoiser's `quantize` knob and chosen apart from it.

Why its own knob: the text encoders run once per prompt, not once per step, so quantizing them
costs little time, and they are much of what the big pipelines keep in memory (Flux's T5-XXL
encoder holds about 4.7 billion parameters, 9.5 GB in bf16, beside the transformer's 12
billion), while a user may want the denoiser left in full precision. Lossy, and judged on the
final image: the per-call replay feeds the denoiser the reference's own prompt embeddings, so a
text encoder's error never reaches the calls it replays (`Knob.judged_end_to_end`).
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.builtin.quantize import (
    NONE,
    SCHEMES,
    SPEED,
    excluded_on_cpu,
    quantize_module,
    storage,
    unavailable_reason,
)
from autotune.knobs.registry import ApplyContext, Knob, PlanEffect, SpeedPrior, Stage, Value, register

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value == NONE:
        return
    for name in TEXT_ENCODERS:
        module = getattr(pipe, name, None)
        if module is not None:
            quantize_module(module, value)


register(Knob(
    name="quantize_text", choices=(NONE, *SCHEMES), default=NONE, stage=Stage.LOAD,
    help="quantize the text encoders' linear layers with torchao (int8/float8/int4), apart from the "
         "denoiser; lossy, judged on the final image",
    apply=_apply, lossy=frozenset(SCHEMES), judged_end_to_end=frozenset(SCHEMES),
    requires_components=TEXT_ENCODERS, unavailable_reason=unavailable_reason,
    excluded_by_default=excluded_on_cpu("quantize_text"),
    after=("dtype",),  # quantize the weights in their final dtype
    plan=PlanEffect(roles=frozenset({"text_encoder"}), storage=storage),
    # Decides last: a text encoder runs once per prompt, so its speed matters least.
    speed=SpeedPrior(order=10, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value]),
))

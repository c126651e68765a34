"""compile: torch.compile the denoiser, whole (`model.compile()`) or only its repeated blocks
(`compile_repeated_blocks`: compiles once per block class, so much faster to compile), and the
whole denoiser in two of torch.compile's modes: `max-autotune-no-cudagraphs` (Triton autotunes
each matmul and convolution: minutes more to compile) and `reduce-overhead` (CUDA graphs: one
replay per step instead of thousands of kernel launches; eager SD1.5 at batch 1 is launch-bound,
run-to-run IQR 25-35% on the H100 run in ../shared/measurements). CUDA graphs replay fixed
addresses, so they exclude every offload that moves weights between replays (the offload knob
registers that conflict: it knows its values)."""
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

#: The whole-model values and the torch.compile mode each passes (None: the default mode).
FULL_MODES = {"full": None, "full-max-autotune": "max-autotune-no-cudagraphs", "full-cuda-graphs": "reduce-overhead"}
COMPILED = frozenset({*FULL_MODES, "regional"})
CUDA_GRAPHS = frozenset({"full-cuda-graphs"})
#: Usually fastest first: compiled code wins on CUDA, CUDA graphs most where launches dominate;
#: on CPU the compiled denoiser was not faster.
SPEED = {"cuda": {"full-cuda-graphs": 0, "full": 1, "full-max-autotune": 2, "regional": 3, "none": 4},
         "cpu": {"none": 0, "regional": 1, "full": 2, "full-max-autotune": 3, "full-cuda-graphs": 4}}


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    model = denoiser_module(pipe)
    if value in FULL_MODES:
        mode = FULL_MODES[value]
        model.compile(**({"mode": mode} if mode else {}))
    elif value == "regional":
        model.compile_repeated_blocks()
    elif value != "none":
        raise ValueError(f"unknown compile mode {value!r}")


def _reason(value: Value, ctx: Context) -> str | None:
    if value in CUDA_GRAPHS and ctx.device != "cuda":
        return "CUDA graphs (torch.compile's reduce-overhead mode) need CUDA"
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
    name="compile", choices=("none", "full", "regional", "full-max-autotune", "full-cuda-graphs"), default="none",
    stage=Stage.COMPILE,
    help="torch.compile the denoiser: whole model, only its repeated blocks (faster to compile), "
         "whole with max-autotune, or whole with CUDA graphs (reduce-overhead)",
    apply=_apply, requires_components=DENOISERS, unavailable_reason=_reason, excluded_by_default=_excluded,
    process_state=COMPILED, compiles=COMPILED,
    speed=SpeedPrior(order=2, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value]),
))

register_conflict(Conflict(
    "compile", COMPILED, "offload", frozenset({"sequential"}),
    "torch.compile cannot trace through sequential offload's per-layer hooks",
))

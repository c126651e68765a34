"""layerwise_fp8: denoiser weights stored in float8_e4m3fn, each layer upcast to the compute
dtype while it runs (diffusers' `enable_layerwise_casting`); about halves the denoiser's weights
again, lossy, and cannot be undone on a loaded pipeline."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from autotune.knobs.context import DENOISERS, denoiser_module
from autotune.knobs.registry import ApplyContext, Knob, PlanEffect, SpeedPrior, Stage, Value, register

FP8_BYTES = 1


def _fp8() -> Any:
    import torch

    return torch.float8_e4m3fn


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value:
        model = denoiser_module(pipe)
        model.enable_layerwise_casting(storage_dtype=_fp8(), compute_dtype=model.dtype)


def cast_layers(module: Any) -> set[str]:
    """Qualified names of the layers `enable_layerwise_casting` stores in fp8 (diffusers' own
    layer types and skip patterns, hooks/layerwise_casting.py)."""
    from diffusers.hooks.layerwise_casting import _GO_LC_SUPPORTED_PYTORCH_LAYERS, DEFAULT_SKIP_MODULES_PATTERN

    patterns = [*DEFAULT_SKIP_MODULES_PATTERN, *(getattr(module, "_skip_layerwise_casting_patterns", None) or [])]
    return {name for name, sub in module.named_modules()
            if name and isinstance(sub, _GO_LC_SUPPORTED_PYTORCH_LAYERS)
            and not any(re.search(p, name) for p in patterns)}


def _storage(module: Any, value: Value) -> Mapping[str, int]:
    if not value:
        return {}
    return {f"{layer}.{n}": FP8_BYTES for layer in cast_layers(module)
            for n, _ in module.get_submodule(layer).named_parameters(recurse=False)}


register(Knob(
    name="layerwise_fp8", choices=(False, True), default=False, stage=Stage.LOAD,
    help="store denoiser weights in float8_e4m3fn, upcast each layer as it runs (irreversible)",
    apply=_apply, lossy=frozenset({True}), requires_components=DENOISERS,
    after=("dtype",),  # the compute dtype is the one dtype set
    plan=PlanEffect(roles=frozenset({"denoiser"}), storage=_storage),
    speed=SpeedPrior(order=4),
))

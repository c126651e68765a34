"""quantize_bnb: the denoiser quantized by bitsandbytes while it loads, 4-bit NF4 or 8-bit LLM.int8
(diffusers' `PipelineQuantizationConfig` with its bitsandbytes backends).

Why a load-time knob, unlike `quantize`: diffusers' bitsandbytes quantizer replaces the linear
layers before the weights are read and quantizes them as they are placed, on the GPU (it sets
the device map to the current CUDA device, and raises "No GPU found" without one). So the
pipeline is loaded with it (`load_kwargs`; `load_pipeline(profile)` does that), the worker keeps
no pristine copy of a pipeline already on the device, and a pipeline loaded without it cannot be
quantized afterwards: `apply` says how to load it. Never yet run on a GPU in this project.

Bytes (bitsandbytes' own layout): NF4 keeps half a byte per weight plus an fp32 absmax per
block of 64 (no double quantization); LLM.int8 one byte plus an fp32 scale per row. Only
`nn.Linear` layers are converted; 4-bit layers compute in bf16 (`bnb_4bit_compute_dtype`, as
diffusers' examples set it; their output keeps the input's dtype). Published on an H100,
Flux-dev 1024x1024 50 steps: bf16 36.2 GB / 12 s, NF4 17.3 GB / 12 s, 8-bit 24.4 GB / 27 s.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.knobs.builtin.quantize import NONE, SCHEMES, linear_layers
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

INSTALL = "pip install 'diffusers-autotune[bnb]'"
#: diffusers' backend name and its config's arguments, per value.
BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "nf4": ("bitsandbytes_4bit", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                  "bnb_4bit_compute_dtype": "bfloat16"}),
    "int8": ("bitsandbytes_8bit", {"load_in_8bit": True}),
}
#: (bytes per weight, bytes per group of scales, weights per group; 0: a group per row).
LAYOUT = {"nf4": (0.5, 4, 64), "int8": (1.0, 4, 0)}
#: The linear layers' class names once bitsandbytes converted them.
QUANTIZED_LAYERS = frozenset({"Linear4bit", "Linear8bitLt"})


def quantization_config(value: Value) -> Any:
    """diffusers' `PipelineQuantizationConfig` quantizing the denoiser (whichever it is) with `value`."""
    from diffusers import PipelineQuantizationConfig

    backend, kwargs = BACKENDS[value]
    return PipelineQuantizationConfig(quant_backend=backend, quant_kwargs=dict(kwargs),
                                      components_to_quantize=list(DENOISERS))


def _load_kwargs(value: Value) -> dict[str, Any]:
    return {} if value == NONE else {"quantization_config": quantization_config(value)}


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    """Quantized at load time: here only checked."""
    if value == NONE:
        return
    if not any(type(m).__name__ in QUANTIZED_LAYERS for m in denoiser_module(pipe).modules()):
        raise ValueError(f"bitsandbytes quantizes while the weights load: load the pipeline with "
                         f"quantization_config=autotune.knobs.builtin.quantize_bnb.quantization_config({value!r}) "
                         "(autotune.load_pipeline(profile) does)")


def _storage(module: Any, value: Value) -> Mapping[str, float]:
    if value == NONE:
        return {}
    per_weight, group_bytes, group = LAYOUT[value]
    return {f"{name}.weight": per_weight + group_bytes / (group or layer.in_features)
            for name, layer in linear_layers(module)}


def _reason(value: Value, ctx: Context) -> str | None:
    if value == NONE:
        return None
    if ctx.device != "cuda":
        return "needs CUDA: diffusers' bitsandbytes quantizer loads the weights onto the GPU"
    if not ctx.has_package("bitsandbytes"):
        return f"needs bitsandbytes: {INSTALL}"
    return None


register(Knob(
    name="quantize_bnb", choices=(NONE, *BACKENDS), default=NONE, stage=Stage.LOAD,
    help="quantize the denoiser with bitsandbytes while it loads (4-bit NF4, 8-bit LLM.int8); lossy, CUDA",
    apply=_apply, lossy=frozenset(BACKENDS), requires_components=DENOISERS, unavailable_reason=_reason,
    load_kwargs=_load_kwargs,
    plan=PlanEffect(roles=frozenset({"denoiser"}), storage=_storage),
    # Published: NF4 as fast as bf16 on an H100, LLM.int8 twice as slow.
    speed=SpeedPrior(order=4, rank=lambda value, device: {NONE: 0, "nf4": 1, "int8": 2}[value]),
))

for _other, _values, _why in (
        ("quantize", frozenset(SCHEMES), "the denoiser is quantized once: by bitsandbytes or by torchao"),
        ("layerwise_fp8", frozenset({True}), "layerwise fp8 casting would cast bitsandbytes' quantized weights")):
    register_conflict(Conflict("quantize_bnb", frozenset(BACKENDS), _other, _values, _why))

"""quantize: the denoiser's linear layers quantized by torchao (`quantize_` with one of its configs).

Why torchao's `quantize_` on the loaded module rather than diffusers' `TorchAoConfig`: a profile
is applied to a pipeline the user already loaded (`apply_profile(pipe)`), and `TorchAoConfig` only
acts inside `from_pretrained`; `quantize_` is the call diffusers' own torchao guide uses on a
loaded transformer. Only `nn.Linear` layers are quantized (torchao's default filter), so on a UNet
the convolutions keep their dtype. Lossy; the quantization guard judges every trial.

Weight bytes per scheme, as torchao 0.18 stores them (read off its tensors on this CPU): int8
weight-only and int8 dynamic keep an int8 value per weight plus, per output row, an fp32 scale and
an int8 zero point; float8 weight-only keeps an e4m3 value per weight and an fp32 scale per row;
int4 weight-only (CUDA kernels, unmeasured here) keeps half a byte per weight plus a bf16 scale
and zero point per group of 128. A quantized layer is dequantized while it runs: the planner
counts that as one layer upcast at a time.

bitsandbytes (nf4/int8) is not offered: its diffusers quantizer works at load time only and needs
a GPU (it raises "No GPU found" without one).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from autotune.knobs.context import DENOISERS, denoiser_module
from autotune.knobs.registry import (
    ApplyContext,
    Conflict,
    Context,
    Knob,
    PlanEffect,
    ReasonFn,
    SpeedPrior,
    Stage,
    Value,
    register,
    register_conflict,
)

NONE = "none"
INSTALL = "pip install 'diffusers-autotune[quant]'"


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One torchao scheme: its config class and how it stores a weight of `in_features` columns."""

    config: str
    value_bytes: float
    #: Bytes kept per group of `group` weights of a row (scales, zero points); group 0: per row.
    group_bytes: int
    group: int = 0
    #: Runs only with CUDA kernels (torchao has no CPU path for it).
    cuda_only: bool = False

    def bytes_per_weight(self, in_features: int) -> float:
        per_group = in_features if self.group == 0 else min(self.group, in_features)
        return self.value_bytes + self.group_bytes / per_group


SCHEMES: dict[str, Scheme] = {
    "int8-weight-only": Scheme("Int8WeightOnlyConfig", 1, 4 + 1),
    "int8-dynamic": Scheme("Int8DynamicActivationInt8WeightConfig", 1, 4 + 1),
    "float8-weight-only": Scheme("Float8WeightOnlyConfig", 1, 4),
    "int4-weight-only": Scheme("Int4WeightOnlyConfig", 0.5, 2 + 2, group=128, cuda_only=True),
}
#: Usually fastest first on CUDA (published: torchao int8 15 s vs bf16 12 s for Flux-dev on an
#: H100, int4 109 s); on CPU torchao's kernels are slower than plain matmuls.
SPEED = {"cuda": {NONE: 0, "float8-weight-only": 1, "int8-weight-only": 1, "int8-dynamic": 2, "int4-weight-only": 3},
         "cpu": {NONE: 0, "int8-weight-only": 1, "float8-weight-only": 1, "int8-dynamic": 2, "int4-weight-only": 3}}


def linear_layers(module: Any) -> list[tuple[str, Any]]:
    import torch

    return [(name, sub) for name, sub in module.named_modules()
            if isinstance(sub, torch.nn.Linear) and getattr(sub, "weight", None) is not None]


def quantize_module(module: Any, value: Value) -> None:
    """torchao's `quantize_` of `module`'s linear layers with the scheme named `value`."""
    import torchao.quantization as quantization

    quantization.quantize_(module, getattr(quantization, SCHEMES[value].config)())


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    if value != NONE:
        quantize_module(denoiser_module(pipe), value)


def storage(module: Any, value: Value) -> Mapping[str, float]:
    """The planner's `PlanEffect.storage`: bytes per weight of each quantized linear layer."""
    if value == NONE:
        return {}
    scheme = SCHEMES[value]
    return {f"{name}.weight": scheme.bytes_per_weight(layer.in_features) for name, layer in linear_layers(module)}


def unavailable_reason(value: Value, ctx: Context) -> str | None:
    if value == NONE:
        return None
    if not ctx.has_package("torchao"):
        return f"needs torchao: {INSTALL}"
    scheme = SCHEMES[value]
    if scheme.cuda_only and (ctx.device != "cuda" or not ctx.has_package("mslk")):
        return "needs CUDA and torchao's int4 kernels (the mslk package)"
    return None


def excluded_on_cpu(knob: str) -> ReasonFn:
    """The `excluded_by_default` of a torchao knob named `knob`: its schemes are left out on CPU."""
    def excluded(value: Value, ctx: Context) -> str | None:
        if value != NONE and ctx.device == "cpu":
            return (f"torchao's kernels target GPUs (slower than plain matmuls on CPU); add "
                    f"--include {knob} to search them on CPU")
        return None
    return excluded


register(Knob(
    name="quantize", choices=(NONE, *SCHEMES), default=NONE, stage=Stage.LOAD,
    help="quantize the denoiser's linear layers with torchao (int8/float8/int4); lossy",
    apply=_apply, lossy=frozenset(SCHEMES), requires_components=DENOISERS,
    unavailable_reason=unavailable_reason, excluded_by_default=excluded_on_cpu("quantize"),
    after=("dtype", "fuse_qkv"),  # quantize the weights in their final dtype, fused or not
    plan=PlanEffect(roles=frozenset({"denoiser"}), storage=storage),
    speed=SpeedPrior(order=4, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value]),
))

register_conflict(Conflict(
    "quantize", frozenset(SCHEMES), "layerwise_fp8", frozenset({True}),
    "layerwise fp8 casting would cast torchao's quantized weights again",
))

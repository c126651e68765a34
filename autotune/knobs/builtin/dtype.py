"""dtype: the precision weights are stored and computed in; half precision halves weight memory.

Loaded that way (`torch_dtype=` of `from_pretrained`): converting fp32 weights after loading
costs the time and the memory of both copies.
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.context import denoiser_module
from autotune.knobs.registry import ApplyContext, Knob, SpeedPrior, Stage, Value, register

NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: Usually fastest first: tensor cores make half precision fastest on CUDA; on CPU fp32 is, and
#: fp16 slowest (measured ~10x slower than fp32 on the project's AMD EPYC).
SPEED = {"cuda": {"fp16": 0, "bf16": 0, "fp32": 1}, "cpu": {"fp32": 0, "bf16": 1, "fp16": 2}}


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, NAMES[name])


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    dtype = torch_dtype(value)
    if denoiser_module(pipe).dtype != dtype:
        pipe.to(dtype=dtype)


register(Knob(
    name="dtype", choices=tuple(NAMES), default="fp32", stage=Stage.LOAD,
    help="weight and activation precision; half precision halves weight memory",
    apply=_apply, lossy=frozenset({"fp16", "bf16"}),
    load_kwargs=lambda value: {"torch_dtype": torch_dtype(value)},
    speed=SpeedPrior(order=1, rank=lambda value, device: SPEED.get(device, SPEED["cuda"])[value], spread=True),
))

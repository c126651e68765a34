"""dtype: the precision weights are stored and computed in; half precision halves weight memory.

Loaded that way (`torch_dtype=` of `from_pretrained`): converting fp32 weights after loading
costs the time and the memory of both copies.
"""
from __future__ import annotations

from typing import Any

from autotune.knobs.context import denoiser_module
from autotune.knobs.registry import SLOW, ApplyContext, Knob, SpeedPrior, Stage, Value, register

NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: Usually fastest first: tensor cores make half precision fastest on CUDA; on CPU fp32 is, and
#: fp16 slowest (measured ~10x slower than fp32 on the project's AMD EPYC).
SPEED = {"cuda": {"fp16": 0, "bf16": 0, "fp32": 1}, "cpu": {"fp32": 0, "bf16": 1, "fp16": 2}}


def _speed_rank(value: Value, device: str) -> int:
    """On a CPU without native fp16/bf16 (hardware.cpu_lacks_native_half: 6 s a run against
    0.4 s in fp32 on this project's AVX2 EPYC), half precision is `SLOW`: proposed after the
    fp32 candidates, still searched."""
    from autotune import hardware

    if device == "cpu" and value != "fp32" and hardware.cpu_lacks_native_half():
        return SLOW + SPEED["cpu"][value]
    return SPEED.get(device, SPEED["cuda"])[value]


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
    speed=SpeedPrior(order=1, rank=_speed_rank, spread=True),
))

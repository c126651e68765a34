"""A small search: the tiny target, a two-knob space and a cost model for the fake measurer."""
from __future__ import annotations

from autotune import knobs
from autotune.knobs import Context
from autotune.knobs.space import SearchSpace
from autotune.target import Target

MiB = 2**20
CTX = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))


def target(ceiling: int = 100 * MiB) -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=ceiling)


SEARCHED = ("dtype", "vae_slicing")


def small_space() -> SearchSpace:
    """dtype x vae_slicing only (every other knob left out, whatever knobs there are): 6 on CPU."""
    return SearchSpace(CTX, exclude=[k.name for k in knobs.all_knobs() if k.name not in SEARCHED])


def cost(a):
    """fp16/bf16 are faster and smaller; slicing saves memory, costs time."""
    latency = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.1}[a["dtype"]] + (0.3 if a["vae_slicing"] else 0)
    peak = {"fp32": 80, "fp16": 40, "bf16": 40}[a["dtype"]] * MiB - (10 * MiB if a["vae_slicing"] else 0)
    return latency, peak

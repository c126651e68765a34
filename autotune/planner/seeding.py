"""Which predicted-feasible candidates a search measures first.

The planner predicts memory, not speed, so the order comes from a prior of what is usually faster
on each device. Each knob states its own part (`Knob.speed`, a `SpeedPrior`: e.g. weights kept on
the device beat any offload, half precision beats fp32 on CUDA, every memory saver costs some
time); this module only composes them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from autotune import knobs
from autotune.knobs.space import Assignment


def speed_prior(device: str) -> Callable[[Assignment], tuple]:
    """A sort key: candidates compared knob by knob in the knobs' `speed.order`, each by its rank."""
    ordered = sorted(knobs.all_knobs(), key=lambda k: k.speed.order)

    def key(a: Assignment) -> tuple:
        return tuple(k.speed_rank(a.get(k.name, k.default), device) for k in ordered)
    return key


def spread_key(assignment: Assignment) -> tuple:
    """The values of the knobs that decide most (`speed.spread`: offload, dtype)."""
    return tuple(assignment.get(k.name, k.default) for k in knobs.all_knobs() if k.speed.spread)


def predictably_slow(assignment: Assignment, device: str) -> bool:
    """Whether a value of the assignment is `SLOW` on this device (e.g. fp16 on an AVX2 CPU)."""
    return any(k.speed_rank(assignment.get(k.name, k.default), device) >= knobs.SLOW for k in knobs.all_knobs())


def seed_order(feasible: Iterable[Assignment], device: str, k: int) -> list[Assignment]:
    """Up to k candidates: the likely-fastest of each combination of the spread knobs first
    (leaving out predictably slow values: they come after every likely-fast candidate)."""
    ranked = sorted(feasible, key=speed_prior(device))
    firsts, seen = [], set()
    for a in ranked:
        if predictably_slow(a, device):
            continue
        spread = spread_key(a)
        if spread not in seen:
            seen.add(spread)
            firsts.append(a)
    rest = [a for a in ranked if a not in firsts]
    return (firsts + rest)[:k]

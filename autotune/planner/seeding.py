"""Which predicted-feasible candidates a search measures first.

The planner predicts memory, not speed, so the order comes from a prior that says what is usually
faster on each device, written down here and nowhere else: weights kept on the device beat any
offload (and streamed group offload beats the rest), half precision beats fp32 on CUDA (on CPU,
fp32 is fastest and fp16 slowest), compiled beats eager on CUDA, and every memory saver (sliced
attention, VAE slicing/tiling, fp8 storage) costs some time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

OFFLOAD_RANK = {"none": 0, "group-block-1-stream": 1, "model": 2, "group-block-1": 3,
                "group-leaf-stream": 4, "group-leaf": 5, "sequential": 6}
DTYPE_RANK = {"cuda": {"fp16": 0, "bf16": 0, "fp32": 1}, "cpu": {"fp32": 0, "bf16": 1, "fp16": 2}}
COMPILE_RANK = {"cuda": {"full": 0, "regional": 1, "none": 2}, "cpu": {"none": 0, "regional": 1, "full": 2}}


def speed_prior(device: str) -> Callable[[dict[str, Any]], tuple]:
    dtype_rank, compile_rank = DTYPE_RANK.get(device, DTYPE_RANK["cuda"]), COMPILE_RANK.get(device, COMPILE_RANK["cuda"])

    def key(a: dict[str, Any]) -> tuple:
        return (OFFLOAD_RANK.get(a.get("offload", "none"), 9), dtype_rank.get(a.get("dtype", "fp32"), 9),
                compile_rank.get(a.get("compile", "none"), 9), a.get("attention") == "sliced",
                bool(a.get("layerwise_fp8")), bool(a.get("vae_slicing")), bool(a.get("vae_tiling")),
                bool(a.get("channels_last")))
    return key


def seed_order(feasible: Iterable[dict[str, Any]], device: str, k: int) -> list[dict[str, Any]]:
    """Up to k candidates: the likely-fastest of each (offload, dtype) pair first, for spread."""
    ranked = sorted(feasible, key=speed_prior(device))
    firsts, seen = [], set()
    for a in ranked:
        pair = (a.get("offload"), a.get("dtype"))
        if pair not in seen:
            seen.add(pair)
            firsts.append(a)
    rest = [a for a in ranked if a not in firsts]
    return (firsts + rest)[:k]

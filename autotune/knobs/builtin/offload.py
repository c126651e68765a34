"""offload: where weights live while the pipeline runs. Kept on the device, or in CPU RAM and
moved to the device when needed: per model (accelerate's model offload), per leaf layer
(sequential), or per group of blocks or leaves (diffusers' group offload, optionally overlapping
the copies on a CUDA stream, and then optionally pinning each group's copy only while it moves:
`low_cpu_mem_usage`).

Offloading trades VRAM for host RAM, and the OOM killer ends a run that takes too much of it: the
planner asks this knob for both (`resident_bytes` on the device, `host_bytes` in RAM).

A value is a string in profiles and Optuna ("group-block-1-stream"); `Offload.parse` turns it into
the typed mode once, and everything here (apply, availability, the planner's placement, the
speed prior) reads that.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class Offload:
    """One offload mode. `kind`: none, model, sequential or group; for group offload, diffusers'
    `offload_type` (block_level / leaf_level), `num_blocks_per_group`, `use_stream` and, with a
    stream, `low_cpu_mem_usage` (the value's "-lowmem" suffix)."""

    kind: str
    offload_type: str | None = None
    num_blocks_per_group: int | None = None
    use_stream: bool = False
    low_cpu_mem_usage: bool = False

    @classmethod
    def parse(cls, value: str) -> Offload:
        if value in ("none", "model", "sequential"):
            return cls(value)
        parts = value.split("-")
        lowmem = parts[-2:] == ["stream", "lowmem"]
        stream = lowmem or parts[-1] == "stream"
        body = parts[1:len(parts) - stream - lowmem]
        if parts[0] == "group" and body[:1] == ["block"] and len(body) == 2 and body[1].isdigit():
            if stream and body[1] != "1":
                raise ValueError(f"offload mode {value!r}: with a stream diffusers moves one block at a time "
                                 "(it sets num_blocks_per_group=1, hooks/group_offloading.py); use group-block-1-stream")
            return cls("group", "block_level", int(body[1]), stream, lowmem)
        if parts[0] == "group" and body == ["leaf"]:
            return cls("group", "leaf_level", None, stream, lowmem)
        raise ValueError(f"unknown offload mode {value!r}")

    def group_offload_kwargs(self, device: str) -> dict[str, Any]:
        """The arguments of `DiffusionPipeline.enable_group_offload` for this mode."""
        kwargs: dict[str, Any] = {"onload_device": device, "offload_device": "cpu",
                                  "offload_type": self.offload_type, "use_stream": self.use_stream}
        if self.num_blocks_per_group is not None:
            kwargs["num_blocks_per_group"] = self.num_blocks_per_group
        if self.low_cpu_mem_usage:
            kwargs["low_cpu_mem_usage"] = True
        return kwargs


#: No "group-block-4-stream": with a stream, diffusers 0.42 warns and groups one block anyway.
CHOICES = ("none", "model", "sequential", "group-block-1", "group-block-1-stream", "group-block-1-stream-lowmem",
           "group-block-4", "group-leaf", "group-leaf-stream")
#: Usually fastest first: weights kept on the device beat any offload; a streamed block group
#: hides its copies behind compute, and larger groups make fewer, larger copies (more memory);
#: pinning each group's copy as it moves costs time the stream was there to hide; per-layer
#: copies (sequential) are slowest.
SPEED = {"none": 0, "group-block-1-stream": 1, "model": 2, "group-block-4": 3, "group-block-1": 4,
         "group-block-1-stream-lowmem": 5, "group-leaf-stream": 6, "group-leaf": 7, "sequential": 8}


def _apply(pipe: Any, value: Value, ctx: ApplyContext) -> None:
    mode = Offload.parse(value)
    if mode.kind == "none":
        pipe.to(ctx.device)
    elif mode.kind == "model":
        pipe.enable_model_cpu_offload(device=ctx.device)
    elif mode.kind == "sequential":
        pipe.enable_sequential_cpu_offload(device=ctx.device)
    else:
        _group_offload(pipe, mode.group_offload_kwargs(ctx.device))


def _group_offload(pipe: Any, kwargs: dict[str, Any]) -> None:
    """`DiffusionPipeline.enable_group_offload`, component by component as it does it, except
    that at block level a component diffusers does not know (a transformers text encoder) is
    grouped by its blocks too (planner.stats.offload_block_modules), not moved whole."""
    import torch
    from diffusers.hooks import apply_group_offloading

    from autotune.planner.stats import offload_block_modules

    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        if hasattr(component, "enable_group_offload"):
            component.enable_group_offload(**kwargs)
        elif kwargs["offload_type"] == "block_level":
            apply_group_offloading(component, block_modules=sorted(offload_block_modules(component)) or None, **kwargs)
        else:
            apply_group_offloading(component, **kwargs)


def _reason(value: Value, ctx: Context) -> str | None:
    if value != "none" and ctx.device == "cpu":
        return "needs an accelerator: on cpu, weights and compute share one memory, nothing to save"
    if Offload.parse(value).use_stream and ctx.device != "cuda":
        return "streamed group offload overlaps copies on a CUDA stream; needs --device cuda"
    return None


def resident_bytes(value: Value, component: str, stats: Mapping[str, Any]) -> int:
    """Weight bytes on the device while `component` runs (planner.stats.WeightStats of each):
      none        all weights
      model       the running component's (accelerate moves the previous model off first)
      sequential  its largest leaf layer
      group       its resident group(s): block level keeps the unmatched modules and one group
                  of `num_blocks_per_group` consecutive blocks, leaf level one leaf; with a CUDA
                  stream the next group is prefetched, so two groups are resident.
    """
    mode, own = Offload.parse(value), stats[component]
    if mode.kind == "none":
        return sum(s.total for s in stats.values())
    if mode.kind == "model":
        return own.total
    if mode.kind == "sequential":
        return own.largest_leaf
    copies = 2 if mode.use_stream else 1
    if mode.offload_type == "block_level":
        return own.block_unmatched + copies * own.largest_group(mode.num_blocks_per_group or 1)
    return own.non_leaf + copies * own.largest_leaf


def host_bytes(value: Value, stats: Mapping[str, Any]) -> int:
    """Host RAM the weights take at their peak under this mode (planner.stats.WeightStats of each
    component, as loaded: before any narrower storage, since loading comes first):
      every mode  all weights: they are loaded (or copied from the worker's pristine copy) into
                  RAM before anything moves them, whatever stays there afterwards
      group, streamed  twice that: diffusers pins a copy of every group at setup while the
                  module still holds the unpinned one (hooks/group_offloading.py,
                  `_init_cpu_param_dict`); with `low_cpu_mem_usage` it pins one group at a time
                  as it moves instead, so only the largest group more
    """
    mode = Offload.parse(value)
    loaded = sum(s.loaded_bytes for s in stats.values())
    if mode.kind != "group" or not mode.use_stream:
        return loaded
    if mode.low_cpu_mem_usage:
        return loaded + max(_largest_group(mode, s) for s in stats.values())
    return 2 * loaded


def _largest_group(mode: Offload, stats: Any) -> int:
    if mode.offload_type == "block_level":
        return max(stats.block_unmatched, stats.largest_group(mode.num_blocks_per_group or 1))
    return stats.largest_leaf


register(Knob(
    name="offload", choices=CHOICES, default="none", stage=Stage.PLACE,
    help="keep weights in CPU RAM and move them to the GPU when needed: per model, per leaf "
         "layer (sequential) or per group of 1 or 4 blocks or per leaf (group offload; one block or "
         "leaf at a time can overlap its copies on a CUDA stream; -lowmem pins one group at a time: "
         "less RAM, slower)",
    apply=_apply, unavailable_reason=_reason,
    plan=PlanEffect(resident=resident_bytes, host=host_bytes),
    speed=SpeedPrior(order=0, rank=lambda value, device: SPEED[value], spread=True),
))

register_conflict(Conflict(
    "offload", frozenset(CHOICES) - {"none"}, "compile", frozenset({"full-cuda-graphs"}),
    "CUDA graphs replay fixed addresses: offload hooks move the weights between replays",
))

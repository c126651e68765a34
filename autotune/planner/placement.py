"""Composing a peak from traces: where each offload mode keeps weights while each phase runs.

  none        all weights resident, plus the largest phase's activations
  model       the running component's weights plus its activations (accelerate moves the previous
              model off before the next one comes on)
  sequential  the largest leaf layer plus the activations
  group-*     the resident group(s) of the running component plus its activations: block level
              keeps the component's unmatched modules and one block group, leaf level one leaf;
              with a CUDA stream the next group is prefetched, so two groups are resident.
"""
from __future__ import annotations

import dataclasses

from autotune.planner.stats import WeightStats

PHASE_LABELS = {"text_encoder": "text encoder", "text_encoder_2": "text encoder 2", "text_encoder_3": "text encoder 3",
                "unet": "denoiser step", "transformer": "denoiser step", "vae": "VAE decode"}


@dataclasses.dataclass(frozen=True)
class PhaseCost:
    component: str
    resident_weights: int
    activations: int
    workspace: int

    @property
    def total(self) -> int:
        return self.resident_weights + self.activations + self.workspace


def resident_weights(offload: str, component: str, stats: dict[str, WeightStats]) -> int:
    """Weight bytes on the device while `component` runs."""
    own = stats[component]
    if offload == "none":
        return sum(s.total for s in stats.values())
    if offload == "model":
        return own.total
    if offload == "sequential":
        return own.largest_leaf
    if offload.startswith("group-"):
        copies = 2 if offload.endswith("-stream") else 1
        if "-block-" in offload:
            return own.block_unmatched + copies * own.largest_block
        return own.non_leaf + copies * own.largest_leaf
    raise ValueError(f"no placement model for offload mode {offload!r}")

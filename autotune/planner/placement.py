"""Composing a peak from traces: each phase (a component running) costs the weights resident while
it runs (the placement knob's `PlanEffect.resident`, e.g. knobs/builtin/offload.py) plus its
activations and, on a GPU, its workspace."""
from __future__ import annotations

import dataclasses

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

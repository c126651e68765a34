"""Composing a peak from traces: each phase (a component running) costs the weights resident while
it runs (the placement knob's `PlanEffect.resident`, e.g. knobs/builtin/offload.py) plus its
activations and, on a GPU, its workspace."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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


def peak_phase(phases: Sequence[PhaseCost], cached_fraction: float) -> tuple[PhaseCost, int]:
    """The phase the peak happens in, and what the caching allocator keeps of its transient bytes
    (`cached_fraction` of its activations and workspace; 0 on CPU). Chosen with that cache: a
    phase of large resident weights and few activations (a text encoder on the device whole) must
    not hide a denoiser step whose activations and their cache go higher."""
    def cached(phase: PhaseCost) -> int:
        return int((phase.activations + phase.workspace) * cached_fraction)

    peak = max(phases, key=lambda p: p.total + cached(p))
    return peak, cached(peak)

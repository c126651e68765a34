"""Activation peaks of each component at the target's shapes, from fake-tensor traces.

Each trace runs the component's real forward (the code path the pipeline takes) on fake CPU
tensors under the same live-storage tracker the CPU backend measures with. Fake CPU picks the
fused SDPA kernel, as flash/memory-efficient attention does on a GPU; the meta device would take
the math path and overestimate attention 16x. Inputs are created inside the trace, so the tensors
a phase receives (prompt embeddings, latents) are counted in its peak. What each class is called
with is in planner/inputs.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from autotune.measure.backends.cpu import LiveTensorTracker
from autotune.planner.inputs import CLIP_TOKENS, DenoiserCall, Shapes


@dataclasses.dataclass(frozen=True)
class PhaseTrace:
    """One component's traced run: bytes above its own weights at the peak."""

    component: str
    activation_bytes: int


def _peak_above_weights(module: torch.nn.Module, mode: FakeTensorMode, run: Any) -> int:
    tracker = LiveTensorTracker("cpu")
    tracker.seed([module])
    weights = tracker.current
    with mode, tracker, torch.no_grad():
        run()
    return tracker.peak - weights


def trace_text_encoder(name: str, module: torch.nn.Module, mode: FakeTensorMode,
                       tokens: int = CLIP_TOKENS) -> PhaseTrace:
    """One prompt of `tokens` tokens (the pipeline encodes once, then repeats the embeddings per
    image; T5 encoders run on the pipeline's max_sequence_length)."""
    def run() -> None:
        ids = torch.zeros(1, tokens, dtype=torch.long)
        module(ids, output_hidden_states=True)

    return PhaseTrace(name, _peak_above_weights(module, mode, run))


def trace_denoiser_step(name: str, module: torch.nn.Module, shapes: Shapes, call: DenoiserCall,
                        mode: FakeTensorMode) -> PhaseTrace:
    """One denoiser call with the inputs its pipeline gives it (`planner/inputs.py`)."""
    def run() -> None:
        module(**call.kwargs(module, shapes))

    return PhaseTrace(name, _peak_above_weights(module, mode, run))


def trace_vae_decode(vae: torch.nn.Module, shapes: Shapes, mode: FakeTensorMode) -> PhaseTrace:
    """The decode of all images (or videos), with the VAE's slicing/tiling flags as they are set."""
    def run() -> None:
        vae.decode(shapes.latents())

    return PhaseTrace("vae", _peak_above_weights(vae, mode, run))

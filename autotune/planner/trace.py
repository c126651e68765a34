"""Activation peaks of each component at the target's shapes, from fake-tensor traces.

Each trace runs the component's real forward (the code path the pipeline takes) on fake CPU
tensors under the same live-storage tracker the CPU backend measures with. Fake CPU picks the
fused SDPA kernel, as flash/memory-efficient attention does on a GPU; the meta device would take
the math path and overestimate attention 16x. Inputs are created inside the trace, so the tensors
a phase receives (prompt embeddings, latents) are counted in its peak.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from autotune.backends.cpu import LiveTensorTracker
from autotune.target import Target

PROMPT_TOKENS = 77


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


def latent_shape(target: Target, vae: torch.nn.Module, denoiser: torch.nn.Module) -> tuple[int, int, int]:
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return denoiser.config.in_channels, target.height // scale, target.width // scale


def trace_text_encoder(name: str, module: torch.nn.Module, mode: FakeTensorMode) -> PhaseTrace:
    """One prompt (the pipeline encodes once, then repeats the embeddings per image)."""
    def run() -> None:
        ids = torch.zeros(1, PROMPT_TOKENS, dtype=torch.long)
        module(ids, output_hidden_states=True)

    return PhaseTrace(name, _peak_above_weights(module, mode, run))


def trace_denoiser_step(name: str, module: torch.nn.Module, target: Target, vae: torch.nn.Module,
                        mode: FakeTensorMode, cfg_batch: int) -> PhaseTrace:
    """One UNet call on the classifier-free-guidance batch (2x the images)."""
    config = module.config
    dtype = module.dtype
    channels, h, w = latent_shape(target, vae, module)
    batch = cfg_batch * target.batch

    def run() -> None:
        sample = torch.zeros(batch, channels, h, w, dtype=dtype)
        context = torch.zeros(batch, PROMPT_TOKENS, config.cross_attention_dim, dtype=dtype)
        kwargs: dict[str, Any] = {}
        if config.get("addition_embed_type") == "text_time":  # SDXL: pooled text + size ids
            time_ids = 6
            text_dim = config.projection_class_embeddings_input_dim - time_ids * config.addition_time_embed_dim
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, text_dim, dtype=dtype),
                                           "time_ids": torch.zeros(batch, time_ids, dtype=dtype)}
        module(sample, torch.tensor(999), context, **kwargs)

    return PhaseTrace(name, _peak_above_weights(module, mode, run))


def trace_vae_decode(vae: torch.nn.Module, target: Target, denoiser: torch.nn.Module,
                     mode: FakeTensorMode) -> PhaseTrace:
    """The decode of all images, with the VAE's slicing/tiling flags as they are set."""
    channels, h, w = latent_shape(target, vae, denoiser)

    def run() -> None:
        vae.decode(torch.zeros(target.batch, vae.config.latent_channels, h, w, dtype=vae.dtype))

    return PhaseTrace("vae", _peak_above_weights(vae, mode, run))

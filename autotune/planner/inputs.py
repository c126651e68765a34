"""What each denoiser and VAE is called with, per class, as its pipeline calls it.

A trace needs the real inputs of one step: the latents' shape (frames for video), the prompt
embeddings' length, the extra conditioning a class takes, and how many images one call carries
(pipelines that concatenate the classifier-free-guidance batch run 2x the images per call; Wan
and Flux call the transformer once per branch, or have no negative branch). A class that is not
here cannot be traced: the planner says so and the search goes on without it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional, Union

import torch

#: What a denoiser's forward is called with: tensors, flags, and nested conditioning (SDXL's
#: `added_cond_kwargs` of tensors, PixArt's of Nones); None where a class takes no such input.
CallValue = Union[torch.Tensor, bool, None, dict[str, Optional[torch.Tensor]]]
CallKwargs = dict[str, CallValue]

#: Tokens of a CLIP prompt: every CLIP text encoder pads to its 77 positions.
CLIP_TOKENS = 77


@dataclasses.dataclass(frozen=True)
class Shapes:
    """One denoiser call: images in the call, latent channels, latent frames (None for images),
    latent height and width, prompt tokens the denoiser attends to, and the dtype."""

    batch: int
    channels: int
    frames: int | None
    height: int
    width: int
    text_tokens: int
    dtype: torch.dtype

    def latents(self) -> torch.Tensor:
        spatial = (self.height, self.width) if self.frames is None else (self.frames, self.height, self.width)
        return torch.zeros(self.batch, self.channels, *spatial, dtype=self.dtype)

    def context(self, dim: int) -> torch.Tensor:
        return torch.zeros(self.batch, self.text_tokens, dim, dtype=self.dtype)


@dataclasses.dataclass(frozen=True)
class DenoiserCall:
    #: Images per call for one image of the target: 2 where the pipeline concatenates the
    #: unconditional branch into the same call, 1 where it calls once per branch or has none.
    cfg_batch: int
    #: Prompt tokens the denoiser attends to, given the pipeline's `max_sequence_length` (or None).
    text_tokens: Callable[[int | None], int]
    #: The call's keyword arguments (created inside the trace, so they count in its peak).
    kwargs: Callable[[Any, Shapes], CallKwargs]


def _unet(module: Any, s: Shapes) -> CallKwargs:
    config = module.config
    kwargs: CallKwargs = {"sample": s.latents(), "timestep": torch.tensor(999),
                          "encoder_hidden_states": s.context(config.cross_attention_dim)}
    if config.get("addition_embed_type") == "text_time":  # SDXL: pooled text + 6 size ids
        time_ids = 6
        text_dim = config.projection_class_embeddings_input_dim - time_ids * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(s.batch, text_dim, dtype=s.dtype),
                                       "time_ids": torch.zeros(s.batch, time_ids, dtype=s.dtype)}
    return kwargs


def _pixart(module: Any, s: Shapes) -> CallKwargs:
    return {"hidden_states": s.latents(), "encoder_hidden_states": s.context(module.config.caption_channels),
            "encoder_attention_mask": torch.ones(s.batch, s.text_tokens, dtype=torch.long),
            "timestep": torch.full((s.batch,), 999, dtype=torch.long),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}, "return_dict": False}


def _wan(module: Any, s: Shapes) -> CallKwargs:
    return {"hidden_states": s.latents(), "timestep": torch.full((s.batch,), 999, dtype=torch.long),
            "encoder_hidden_states": s.context(module.config.text_dim), "return_dict": False}


def _sd3(module: Any, s: Shapes) -> CallKwargs:
    config = module.config
    return {"hidden_states": s.latents(), "encoder_hidden_states": s.context(config.joint_attention_dim),
            "pooled_projections": torch.zeros(s.batch, config.pooled_projection_dim, dtype=s.dtype),
            "timestep": torch.full((s.batch,), 999.0, dtype=s.dtype), "return_dict": False}


def _flux(module: Any, s: Shapes) -> CallKwargs:
    """Flux packs 2x2 latent patches into a sequence: [batch, (h/2)(w/2), 4 x channels]."""
    config = module.config
    tokens = (s.height // 2) * (s.width // 2)
    return {"hidden_states": torch.zeros(s.batch, tokens, s.channels, dtype=s.dtype),
            "encoder_hidden_states": s.context(config.joint_attention_dim),
            "pooled_projections": torch.zeros(s.batch, config.pooled_projection_dim, dtype=s.dtype),
            "timestep": torch.full((s.batch,), 1.0, dtype=s.dtype),
            "img_ids": torch.zeros(tokens, 3, dtype=s.dtype), "txt_ids": torch.zeros(s.text_tokens, 3, dtype=s.dtype),
            "guidance": torch.full((s.batch,), 3.5, dtype=torch.float32) if config.guidance_embeds else None,
            "return_dict": False}


def _t5_tokens(default: int) -> Callable[[int | None], int]:
    return lambda max_sequence_length: max_sequence_length or default


DENOISER_CALLS: dict[str, DenoiserCall] = {
    "UNet2DConditionModel": DenoiserCall(2, lambda _: CLIP_TOKENS, _unet),
    # PixArt-Sigma: T5 prompt padded to max_sequence_length (300), CFG concatenated.
    "PixArtTransformer2DModel": DenoiserCall(2, _t5_tokens(300), _pixart),
    # Wan: prompt embeddings padded to max_sequence_length (512); cond and uncond are two calls.
    "WanTransformer3DModel": DenoiserCall(1, _t5_tokens(512), _wan),
    # SD3: 77 CLIP tokens then the T5 prompt (max_sequence_length, 256), CFG concatenated.
    "SD3Transformer2DModel": DenoiserCall(2, lambda n: CLIP_TOKENS + (n or 256), _sd3),
    # Flux: the T5 prompt (max_sequence_length, 512); guidance-distilled, one call per step.
    "FluxTransformer2DModel": DenoiserCall(1, _t5_tokens(512), _flux),
}


def vae_is_video(vae: Any) -> bool:
    """Video VAEs (Wan) decode [batch, channels, frames, height, width] latents."""
    return "temperal_downsample" in vae.config


def vae_latent_channels(vae: Any) -> int:
    config = vae.config
    return config.get("z_dim") or config.get("latent_channels")


def latent_frames(vae: Any, frames: int) -> int:
    """Latent frames of a causal video VAE: the first frame alone, then one per `scale` frames."""
    scale = vae.config.get("scale_factor_temporal") or 2 ** sum(vae.config.temperal_downsample)
    return (frames - 1) // scale + 1


#: VAE classes whose decode the planner traces (any AutoencoderKL-like or Wan-like decode works,
#: but a new class is added here only once checked against the CPU tracker).
VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLWan")


def text_tokens(encoder: Any, max_sequence_length: int | None) -> int:
    """Tokens a text encoder is run on: CLIP pads to 77; T5-like encoders to the pipeline's
    `max_sequence_length`."""
    if "CLIP" in type(encoder).__name__:
        return CLIP_TOKENS
    return max_sequence_length or CLIP_TOKENS

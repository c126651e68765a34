"""A zoo of tiny diffusers pipelines saved as local folders, the way a user brings a model.

Each builder follows diffusers' own `get_dummy_components()`: tiny configs, weights seeded per
component, tokenizers built in memory (no download). `save_pretrained` writes each into a folder
that `DiffusionPipeline.from_pretrained(folder)` loads offline. VAEs downsample 8x (and Wan's 4x in
time) like the real models, so latent shapes and the planner's arithmetic are honest.

Use in tests: `from zoo import zoo  # noqa: F401` (the session fixture), then `zoo["sd"]` is the
folder's Path, built on first use and shared by the whole session. `ZOO_NAMES` lists what exists.
"""
from __future__ import annotations

import logging
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

log = logging.getLogger(__name__)

SEED = 0
_SYMBOLS = string.ascii_lowercase + string.digits + string.punctuation


def clip_tokenizer() -> Any:
    from autotune.models.builtins import offline_clip_tokenizer

    return offline_clip_tokenizer()


def t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over single characters, built from a vocab list: no sentencepiece
    model, no download."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in _SYMBOLS] + [("\u2581" + c, -1.5) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _clip_text(projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=1000, max_position_embeddings=77,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32,
                            hidden_act="gelu")
    torch.manual_seed(SEED)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5_text(vocab_size: int, umt5: bool = False) -> Any:
    """A T5 encoder (UMT5 for Wan, as its pipeline declares)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config = (UMT5Config if umt5 else T5Config)(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(SEED)
    return (UMT5EncoderModel if umt5 else T5EncoderModel)(config).eval()


def _vae_kl(force_upcast: bool = True) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        force_upcast=force_upcast,
    ).eval()


def _sd_unet(in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=in_channels,
        out_channels=4, norm_num_groups=8, attention_head_dim=4, cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ).eval()


def _pndm() -> Any:
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)


def _sd_components(unet_in_channels: int = 4) -> dict[str, Any]:
    return {"unet": _sd_unet(unet_in_channels), "vae": _vae_kl(), "text_encoder": _clip_text(),
            "tokenizer": clip_tokenizer(), "scheduler": _pndm(), "safety_checker": None,
            "feature_extractor": None, "requires_safety_checker": False}


def build_sd() -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**_sd_components())


def build_sd_img2img() -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**_sd_components())


def build_sd_inpaint() -> Any:
    from diffusers import StableDiffusionInpaintPipeline

    return StableDiffusionInpaintPipeline(**_sd_components(unet_in_channels=9))


def build_sdxl() -> Any:
    """diffusers' SDXL dummy: two CLIP encoders (hidden 32 each, 64 cross-attention), text_time."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled text
        cross_attention_dim=64, norm_num_groups=1,
    ).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        unet=unet, vae=_vae_kl(), text_encoder=_clip_text(), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_text(projection=True), tokenizer_2=clip_tokenizer(), scheduler=scheduler,
    )


def build_pixart() -> Any:
    """PixArt-Sigma: a DiT over a T5 encoder and an 8x KL VAE."""
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=_t5_text(len(tokenizer)),
                               vae=_vae_kl(force_upcast=False), transformer=transformer,
                               scheduler=DDIMScheduler())


def build_wan() -> Any:
    """Wan 2.1 text-to-video: a 3-D transformer, a T5 encoder and a causal 3-D VAE (8x space, 4x time)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(SEED)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    torch.manual_seed(SEED)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    return WanPipeline(tokenizer=tokenizer, text_encoder=_t5_text(len(tokenizer), umt5=True), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


def _vae_kl16() -> Any:
    """The 8x KL VAE of SD3 and Flux: 16 latent channels, no quant convs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    return AutoencoderKL(
        block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
        in_channels=3, out_channels=3, latent_channels=16, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
        force_upcast=False,
    ).eval()


def build_sd3() -> Any:
    """SD3: an MMDiT over two CLIP encoders with projection and a T5, a 16-channel 8x VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer_3 = t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=16,
    ).eval()
    return StableDiffusion3Pipeline(
        transformer=transformer, vae=_vae_kl16(), scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_clip_text(projection=True), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_text(projection=True), tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5_text(len(tokenizer_3)), tokenizer_3=tokenizer_3,
    )


def build_flux() -> Any:
    """Flux: a double/single-stream DiT over packed 2x2 latents, a CLIP and a T5 encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer_2 = t5_tokenizer()
    torch.manual_seed(SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    ).eval()
    return FluxPipeline(
        transformer=transformer, vae=_vae_kl16(), scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_clip_text(), tokenizer=clip_tokenizer(),
        text_encoder_2=_t5_text(len(tokenizer_2)), tokenizer_2=tokenizer_2,
    )


BUILDERS: dict[str, Callable[[], Any]] = {
    "sd": build_sd,
    "sd-img2img": build_sd_img2img,
    "sd-inpaint": build_sd_inpaint,
    "sdxl": build_sdxl,
    "pixart": build_pixart,
    "wan": build_wan,
    "sd3": build_sd3,
    "flux": build_flux,
}
ZOO_NAMES = tuple(BUILDERS)
#: The pipeline class each folder holds.
ZOO_CLASSES = {"sd": "StableDiffusionPipeline", "sd-img2img": "StableDiffusionImg2ImgPipeline",
               "sd-inpaint": "StableDiffusionInpaintPipeline", "sdxl": "StableDiffusionXLPipeline",
               "pixart": "PixArtSigmaPipeline", "wan": "WanPipeline", "sd3": "StableDiffusion3Pipeline",
               "flux": "FluxPipeline"}


#: What each pipeline needs beyond the prompt to run once (the worker derives this on its own).
CALL = {
    "sd-img2img": lambda: {"image": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))},
    "sd-inpaint": lambda: {"image": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                           "mask_image": torch.ones(1, 1, 32, 32)},
    "pixart": lambda: {"use_resolution_binning": False},
    "wan": lambda: {"num_frames": 5},
}


def run(pipe: Any, name: str) -> Any:
    """One seeded 32x32, 2-step call of zoo pipeline `name`: its images (frames for wan), as numpy."""
    out = pipe("a red fox", height=32, width=32, num_inference_steps=2, output_type="np",
               generator=torch.Generator("cpu").manual_seed(0), **CALL.get(name, dict)())
    return out.frames if name == "wan" else out.images


def build(name: str) -> Any:
    """The in-memory pipeline `name` (fp32, eval, progress bar off), without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        pipe = BUILDERS[name]()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save(name: str, folder: Path) -> Path:
    """Build `name` and write it to `folder` as safetensors."""
    build(name).save_pretrained(folder, safe_serialization=True)
    return folder


class Zoo:
    """Folders built on first use: `zoo["wan"]` -> Path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in BUILDERS:
            raise KeyError(f"no zoo pipeline {name!r}; there are {', '.join(ZOO_NAMES)}")
        if name not in self._built:
            self._built[name] = save(name, self.root / name)
            log.info("zoo: built %s at %s", name, self._built[name])
        return self._built[name]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def zoo_folder(zoo: Zoo) -> Callable[[str], Path]:
    """`zoo_folder("sd")` -> the folder of the tiny SD pipeline."""
    return zoo.__getitem__

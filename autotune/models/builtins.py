"""Built-in pipelines: the real architectures (configs shipped as package data, or the tiny one
written here) with seeded random weights and an offline tokenizer, so everything runs without a
download. Latent shapes, weight sizes and code paths are those of the real models; the images
are noise. The slow ones are built once and cached as safetensors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import string
import tempfile
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

from autotune.errors import ModelNotFoundError
from autotune.models.trained import TRAINED, load_trained

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
WEIGHT_SEED = 0


def _tiny_configs() -> dict[str, dict[str, Any]]:
    """A tiny SD pipeline whose VAE downsamples 8x like the real one, so latent shapes are honest."""
    return {
        "model_index": {
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "unet": {
            "block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 16,
            "in_channels": 4, "out_channels": 4, "norm_num_groups": 8, "attention_head_dim": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "cross_attention_dim": 32,
        },
        "vae": {
            "block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 128,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        },
        "text_encoder": {
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 77,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
        },
        "scheduler": {
            "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "skip_prk_steps": True, "steps_offset": 1,
            "set_alpha_to_one": False, "clip_sample": False,
        },
    }


def _packaged_configs(name: str) -> dict[str, dict[str, Any]]:
    root = resources.files("autotune") / "model_configs" / name
    configs = {"model_index": json.loads((root / "model_index.json").read_text())}
    for sub in root.iterdir():
        if sub.is_dir():
            filename = "scheduler_config.json" if sub.name == "scheduler" else "config.json"
            configs[sub.name] = json.loads((sub / filename).read_text())
    return configs


def _shapes_configs() -> dict[str, dict[str, Any]]:
    """tiny-sd's architecture; the VAE's scaling factor is the one its trained latents need, and
    its native size is the 64 px it was trained on (its images lose their structure at 128 px)."""
    from autotune.models.trained import weights_meta

    meta = weights_meta("tiny-sd-shapes")
    configs = _tiny_configs()
    configs["vae"]["scaling_factor"] = meta["scaling_factor"]
    configs["vae"]["sample_size"] = meta["image_size"]
    configs["unet"]["sample_size"] = meta["image_size"] // 8  # the VAE downsamples 8x
    return configs


BUILTINS = {
    "tiny-sd": _tiny_configs,
    "tiny-sd-shapes": _shapes_configs,
    "sd15": lambda: _packaged_configs("sd15"),
    "sdxl": lambda: _packaged_configs("sdxl"),
}
#: Built-ins whose random init is slow (SD1.5: ~12 s, SDXL: ~50 s on 2 cores): built once, saved
#: as safetensors in the cache, loaded from there by every later trial (~2 s).
CACHED_BUILTINS = {"sd15", "sdxl"}
CACHE_DIR_ENV = "AUTOTUNE_CACHE_DIR"


def builtin_names() -> list[str]:
    return [BUILTIN_PREFIX + name for name in BUILTINS]


def builtin_configs(model: str) -> dict[str, dict[str, Any]]:
    name = model[len(BUILTIN_PREFIX):]
    if name not in BUILTINS:
        raise ModelNotFoundError(
            f"unknown built-in model {model!r}; built-ins are {', '.join(builtin_names())}"
        )
    return BUILTINS[name]()


def offline_clip_tokenizer() -> Any:
    """A CLIP BPE tokenizer over single characters: built in memory, no vocab download."""
    from transformers import CLIPTokenizer

    symbols = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"]
    tokens += list(symbols) + [f"{c}</w>" for c in symbols] + ["th", "th</w>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(
        vocab=vocab, merges=[("t", "h")], model_max_length=77,
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def build_builtin(model: str, torch_dtype: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
    from diffusers import schedulers as diffusers_schedulers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = builtin_configs(model)
    index = configs["model_index"]
    parts: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        parts["unet"] = UNet2DConditionModel.from_config(configs["unet"])
        parts["vae"] = AutoencoderKL.from_config(configs["vae"])
        for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if name in configs:
                cfg = {k: v for k, v in configs[name].items() if k not in ("architectures", "_name_or_path")}
                parts[name] = cls(CLIPTextConfig(**cfg))
                parts[name.replace("text_encoder", "tokenizer")] = offline_clip_tokenizer()
    name = model[len(BUILTIN_PREFIX):]
    if name in TRAINED:
        load_trained(name, parts)
    scheduler_cfg = configs["scheduler"]
    parts["scheduler"] = getattr(diffusers_schedulers, scheduler_cfg["_class_name"]).from_config(scheduler_cfg)
    pipeline_cls = getattr(__import__("diffusers"), index["_class_name"])
    if "safety_checker" in index or index["_class_name"] == "StableDiffusionPipeline":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe: DiffusionPipeline = pipeline_cls(**parts)
    pipe.register_to_config(_name_or_path=model)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    if torch_dtype is not None and torch_dtype != torch.float32:
        pipe.to(dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "autotune")


def builtin_cache_path(model: str, torch_dtype: Any = None, root: Path | None = None) -> Path:
    """Keyed by the configs, the weight seed, the diffusers version and the dtype: one copy per
    dtype, so a trial reads half the bytes in fp16 and converts nothing (H200 run: ~10 s of each
    trial was loading fp32 weights and casting them)."""
    blob = json.dumps([builtin_configs(model), WEIGHT_SEED, version("diffusers")], sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    dtype = str(torch_dtype or "torch.float32").replace("torch.", "")
    return (root or cache_root()) / "builtin" / f"{model[len(BUILTIN_PREFIX):]}-{digest}-{dtype}"


def load_cached_builtin(model: str, torch_dtype: Any, root: Path | None = None,
                        quantization_config: Any = None) -> Any:
    """The built-in saved once per dtype and loaded with `from_pretrained`, as a hub folder is
    (with `quantization_config`, quantized while it loads: bitsandbytes)."""
    from diffusers import DiffusionPipeline

    path = builtin_cache_path(model, torch_dtype, root)
    if not (path / "model_index.json").exists():
        pipe = build_builtin(model, torch_dtype)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=_mkdir(path.parent)))
        try:
            pipe.save_pretrained(tmp, safe_serialization=True)
            os.replace(tmp, path)  # atomic: a concurrent worker either sees all of it or none
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / "model_index.json").exists():
                raise
        log.info("cached %s at %s", model, path)
    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, **extra)
    pipe.register_to_config(_name_or_path=model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

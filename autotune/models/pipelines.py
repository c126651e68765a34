"""Where pipelines come from: built-in random-weight pipelines, local folders, hub ids.

The built-ins are the real architectures (configs shipped as package data) with seeded random
weights and an offline tokenizer, so everything runs without a download. Latent shapes, weight
sizes and code paths are those of the real models; the images are noise.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import inspect
import os
import re
import shutil
import string
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from autotune.errors import ModelNotFoundError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
WEIGHT_SEED = 0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What is known of a model before building it: enough to plan a search."""

    model: str
    pipeline_class: str
    components: frozenset[str]
    native_height: int
    native_width: int
    #: component name -> (library, class name), as model_index.json declares it.
    component_classes: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    #: Frames a video pipeline makes by default (its `__call__` default), None for images.
    native_frames: int | None = None
    #: `model_identity(model)`: the same for every spelling of the same model.
    identity: str = ""


#: The module that runs every step.
DENOISER_NAMES = ("unet", "transformer")
#: Latent samples per side a denoiser without `sample_size` in its config runs at by default
#: (Flux: `default_sample_size = 128`; UNets default to 64).
_DEFAULT_SAMPLE = {"unet": 64, "transformer": 128}
_REVISION = re.compile(r"[0-9a-f]{40}")
_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<repo>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})(?:/|$)")


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


BUILTINS = {
    "tiny-sd": _tiny_configs,
    "sd15": lambda: _packaged_configs("sd15"),
    "sdxl": lambda: _packaged_configs("sdxl"),
}
#: Built-ins whose random init is slow (SD1.5: ~12 s, SDXL: ~50 s on 2 cores): built once, saved
#: as safetensors in the cache, loaded from there by every later trial (~2 s).
CACHED_BUILTINS = {"sd15", "sdxl"}
CACHE_DIR_ENV = "AUTOTUNE_CACHE_DIR"


def builtin_names() -> list[str]:
    return [BUILTIN_PREFIX + name for name in BUILTINS]


def _builtin_configs(model: str) -> dict[str, dict[str, Any]]:
    name = model[len(BUILTIN_PREFIX):]
    if name not in BUILTINS:
        raise ModelNotFoundError(
            f"unknown built-in model {model!r}; built-ins are {', '.join(builtin_names())}"
        )
    return BUILTINS[name]()


def component_classes(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (library, class name) of every component model_index.json declares (not None)."""
    return {name: (entry[0], entry[1]) for name, entry in index.items()
            if not name.startswith("_") and isinstance(entry, (list, tuple)) and len(entry) == 2
            and entry[0] is not None and entry[1] is not None}


def vae_spatial_scale(vae: dict[str, Any] | None) -> int:
    """Pixels per latent sample along each side: video VAEs say it (`scale_factor_spatial`), KL
    VAEs halve the size in every block but the last, DC autoencoders in every encoder block."""
    if not vae:
        return 8
    if vae.get("scale_factor_spatial"):
        return int(vae["scale_factor_spatial"])
    blocks = vae.get("block_out_channels") or vae.get("encoder_block_out_channels")
    return 2 ** (len(blocks) - 1) if blocks else 8


def call_default(pipeline_class: str, name: str) -> Any:
    """The default of argument `name` of the pipeline class's `__call__` (None if it has none)."""
    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    parameter = inspect.signature(cls.__call__).parameters.get(name) if cls is not None else None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _call_defaults(pipeline_class: str) -> dict[str, int]:
    """The integer defaults of `height`, `width` and `num_frames` in the pipeline's `__call__`."""
    found = {k: call_default(pipeline_class, k) for k in ("height", "width", "num_frames")}
    return {k: v for k, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def _native_size(pipeline_class: str, configs: dict[str, Any]) -> tuple[int, int, int | None]:
    """(height, width, frames): the denoiser's sample_size x the VAE's scale, else what the
    pipeline's `__call__` defaults to (Wan: 480x832, 81 frames), else the pipeline family's default."""
    name = next((n for n in DENOISER_NAMES if n in configs), None)
    denoiser = dict(configs[name]) if name else {}
    scale = vae_spatial_scale(configs.get("vae"))
    defaults = _call_defaults(pipeline_class)
    frames = defaults.get("num_frames")
    sample = denoiser.get("sample_size")
    if sample:
        h, w = (sample, sample) if isinstance(sample, int) else tuple(sample)[:2]
        return int(h) * scale, int(w) * scale, frames
    if "height" in defaults and "width" in defaults:
        return defaults["height"], defaults["width"], frames
    side = _DEFAULT_SAMPLE.get(name or "unet", 64) * scale
    return side, side, frames


def _info_from_configs(model: str, configs: dict[str, Any]) -> ModelInfo:
    index = configs["model_index"]
    classes = component_classes(index)
    height, width, frames = _native_size(index["_class_name"], configs)
    return ModelInfo(model, index["_class_name"], frozenset(classes), height, width,
                     component_classes=classes, native_frames=frames, identity=model_identity(model))


def is_model_class(library: str, class_name: str) -> bool:
    """True for classes with weights and a config: diffusers models, transformers models."""
    if library == "transformers":
        import transformers

        cls = getattr(transformers, class_name, None)
        return cls is not None and hasattr(cls, "config_class") and hasattr(cls, "from_pretrained")
    if library != "diffusers":
        return False
    import diffusers

    cls = getattr(diffusers, class_name, None)
    return isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)


def read_component_config(model: str, name: str, library: str, class_name: str,
                          local_files_only: bool = False) -> Any:
    """`name`'s config read by its own class, for a local folder or a hub id alike: a dict for
    diffusers models (their `config.json`), a `PretrainedConfig` for transformers models.
    Never `DiffusionPipeline.load_config(model, subfolder=name)`: it looks for `model_index.json`
    there and, for a local folder, falls back to the root index."""
    if library == "transformers":
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, subfolder=name, local_files_only=local_files_only)
    import diffusers

    return dict(getattr(diffusers, class_name).load_config(model, subfolder=name, local_files_only=local_files_only))


def _looks_like_a_path(model: str) -> bool:
    return model.startswith(("./", "../", "/", "~")) or model in (".", "..")


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached (a 3 s connect, no retries), or None when it can or when
    HF_HUB_OFFLINE already makes huggingface_hub answer from the cache at once."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=3).close()
    except OSError as exc:
        return f"{url.hostname} is unreachable ({getattr(exc, 'strerror', None) or exc})"
    return None


def load_configs(model: str, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """model_index plus the config of each model component in `names` (all when None).
    Built-ins come from the package; folders and hub ids from their files, configs only."""
    if model.startswith(BUILTIN_PREFIX):
        configs = _builtin_configs(model)
        return {k: v for k, v in configs.items() if k == "model_index" or names is None or k in names}
    from diffusers import DiffusionPipeline

    if _looks_like_a_path(model) and not Path(model).expanduser().exists():
        raise ModelNotFoundError(f"folder {model!r} does not exist; give an existing diffusers folder, "
                                 f"a hub id, or one of {', '.join(builtin_names())}")
    offline = None if Path(model).expanduser().exists() else hub_unreachable()
    try:
        index = dict(DiffusionPipeline.load_config(model, local_files_only=offline is not None))
        if "_class_name" not in index:
            raise ModelNotFoundError(f"{model!r} has no model_index.json: not a diffusers pipeline")
        configs: dict[str, Any] = {"model_index": index}
        for name, (library, class_name) in component_classes(index).items():
            if (names is None or name in names) and is_model_class(library, class_name):
                configs[name] = read_component_config(model, name, library, class_name, offline is not None)
    except (OSError, ValueError) as exc:  # diffusers raises EnvironmentError for missing repos/files
        if offline:
            raise ModelNotFoundError(
                f"cannot find model {model!r}: {offline} and it is not in the local cache; check the "
                f"network, or use a downloaded folder or one of {', '.join(builtin_names())}") from None
        where = "local folder" if Path(model).exists() else "built-in, local folder or hub id"
        raise ModelNotFoundError(
            f"cannot find model {model!r} as a {where} ({str(exc).splitlines()[0][:160]}); "
            f"use a diffusers folder, a hub id you can download, or one of {', '.join(builtin_names())}"
        ) from None
    return configs


@functools.lru_cache(maxsize=32)
def model_info(model: str) -> ModelInfo:
    """Read the model's configs (no weights) or say in one line that it cannot be found. Cached:
    for a hub id this is a download of small JSON files."""
    return _info_from_configs(model, load_configs(model, names=(*DENOISER_NAMES, "vae")))


# ---- identity ---------------------------------------------------------------------------------

def model_identity(model: str, revision: str | None = None) -> str:
    """One name for every spelling of the same model: built-ins as they are; a local folder as its
    resolved absolute path (a hub cache snapshot folder as `org/name@commit`); a hub id as
    `org/name@commit` when the commit is known (given, or the cached snapshot's), else the id."""
    if model.startswith(BUILTIN_PREFIX):
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        snapshot = _SNAPSHOT.search(resolved.as_posix())
        if snapshot:
            return f"{snapshot['repo'].replace('--', '/', 1)}@{snapshot['revision']}"
        return str(resolved)
    commit = _cached_commit(model, revision)
    return f"{model}@{commit}" if commit else model


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    if revision and _REVISION.fullmatch(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", revision=revision)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        return None
    if isinstance(found, str):
        snapshot = _SNAPSHOT.search(Path(found).as_posix())
        return snapshot["revision"] if snapshot else None
    return None


def split_identity(identity: str) -> tuple[str, str | None]:
    """(model, commit or None): hub identities carry `@commit`; paths and built-ins never do."""
    if identity.startswith(BUILTIN_PREFIX) or Path(identity).is_absolute():
        return identity, None
    base, sep, commit = identity.rpartition("@")
    return (base, commit) if sep and _REVISION.fullmatch(commit) else (identity, None)


def same_model(a: str, b: str) -> bool:
    """Two identities name the same model: same path, built-in or hub id, and the same commit
    where both know theirs."""
    (base_a, rev_a), (base_b, rev_b) = split_identity(a), split_identity(b)
    return base_a == base_b and (rev_a is None or rev_b is None or rev_a == rev_b)


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


def _build_builtin(model: str, torch_dtype: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
    from diffusers import schedulers as diffusers_schedulers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = _builtin_configs(model)
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
    from importlib.metadata import version

    blob = json.dumps([_builtin_configs(model), WEIGHT_SEED, version("diffusers")], sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    dtype = str(torch_dtype or "torch.float32").replace("torch.", "")
    return (root or cache_root()) / "builtin" / f"{model[len(BUILTIN_PREFIX):]}-{digest}-{dtype}"


def _load_cached_builtin(model: str, torch_dtype: Any, root: Path | None = None) -> Any:
    from diffusers import DiffusionPipeline

    path = builtin_cache_path(model, torch_dtype, root)
    if not (path / "model_index.json").exists():
        pipe = _build_builtin(model, torch_dtype)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=_mkdir(path.parent)))
        try:
            pipe.save_pretrained(tmp, safe_serialization=True)
            os.replace(tmp, path)  # atomic: a concurrent worker either sees all of it or none
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / "model_index.json").exists():
                raise
        log.info("cached %s at %s", model, path)
    pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype)
    pipe.register_to_config(_name_or_path=model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_pipeline(model: str, torch_dtype: Any = None) -> Any:
    """Build the pipeline on CPU in `torch_dtype` (placement is the offload knob's job)."""
    if model.startswith(BUILTIN_PREFIX):
        if model[len(BUILTIN_PREFIX):] in CACHED_BUILTINS:
            return _load_cached_builtin(model, torch_dtype)
        return _build_builtin(model, torch_dtype)
    from diffusers import DiffusionPipeline

    model_info(model)  # one-line error if it cannot be found
    pipe = DiffusionPipeline.from_pretrained(model, dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe

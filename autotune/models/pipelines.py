"""Where pipelines come from, read once into one spec: a model's configs (built-in, local folder
or hub id; configs only, no weights) give its `ModelInfo`, and `build_pipeline` builds it.

Built-ins live in builtins.py, model identity in identity.py.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import socket
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

from autotune.errors import ModelNotFoundError
from autotune.models.builtins import (
    BUILTIN_PREFIX,
    CACHED_BUILTINS,
    build_builtin,
    builtin_configs,
    builtin_names,
    load_cached_builtin,
)
from autotune.models.identity import model_identity


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
        configs = builtin_configs(model)
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


def build_pipeline(model: str, torch_dtype: Any = None, quantization_config: Any = None) -> Any:
    """Build the pipeline on CPU in `torch_dtype` (placement is the offload knob's job). With
    diffusers' `quantization_config`, through `from_pretrained` (a built-in is saved first): a
    load-time quantizer (bitsandbytes) quantizes as it loads, onto the GPU."""
    if model.startswith(BUILTIN_PREFIX):
        if model[len(BUILTIN_PREFIX):] in CACHED_BUILTINS or quantization_config is not None:
            return load_cached_builtin(model, torch_dtype, quantization_config=quantization_config)
        return build_builtin(model, torch_dtype)
    from diffusers import DiffusionPipeline

    model_info(model)  # one-line error if it cannot be found
    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    pipe = DiffusionPipeline.from_pretrained(model, dtype=torch_dtype, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""Pipeline components built as fake tensors: real module structure and sizes, no weights, no
compute. Built from configs only, so a hub model is planned without downloading its weights."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from autotune.pipelines import BUILTIN_PREFIX, _builtin_configs

TRACED_COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "transformer", "vae")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Modules are created directly in `dtype`: `.to(dtype)` cannot swap fake parameters."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _configs(model: str) -> dict[str, Any]:
    """model_index plus each traced component's config, from the package or the model source."""
    if model.startswith(BUILTIN_PREFIX):
        return _builtin_configs(model)
    from diffusers import DiffusionPipeline
    from transformers import AutoConfig

    index = dict(DiffusionPipeline.load_config(model))
    configs: dict[str, Any] = {"model_index": index}
    for name in TRACED_COMPONENTS:
        entry = index.get(name)
        if not entry or entry[0] is None:
            continue
        if entry[0] == "transformers":
            configs[name] = AutoConfig.from_pretrained(model, subfolder=name)
        else:
            configs[name] = dict(DiffusionPipeline.load_config(model, subfolder=name))
    return configs


def _build(library: str, class_name: str, config: Any) -> torch.nn.Module:
    if library == "transformers":
        import transformers

        cls = getattr(transformers, class_name)
        if isinstance(config, dict):
            config_cls = cls.config_class
            config = config_cls(**{k: v for k, v in config.items() if k not in ("architectures", "_name_or_path")})
        return cls(config)
    import diffusers

    return getattr(diffusers, class_name).from_config(config)


def fake_components(model: str, dtype: torch.dtype, mode: FakeTensorMode) -> dict[str, torch.nn.Module]:
    """The traced components of `model`, with fake parameters in `dtype`, in eval mode."""
    configs = _configs(model)
    index = configs["model_index"]
    modules = {}
    with default_dtype(dtype), mode:
        for name in TRACED_COMPONENTS:
            entry = index.get(name)
            if name in configs and entry and entry[0] is not None:
                modules[name] = _build(entry[0], entry[1], configs[name]).eval()
    return modules

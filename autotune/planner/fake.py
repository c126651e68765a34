"""Pipeline components built as fake tensors: real module structure and sizes, no weights, no
compute. Built from configs only, so a hub model is planned without downloading its weights."""
from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from autotune.models.pipelines import component_classes, load_configs


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Modules are created directly in `dtype`: `.to(dtype)` cannot swap fake parameters."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def traced_names(index: Collection[str]) -> list[str]:
    """The components a pipeline runs, in the order it runs them: text encoders, denoiser, VAE."""
    names = sorted(n for n in index if n.startswith("text_encoder"))
    return [*names, *(n for n in ("unet", "transformer", "vae") if n in index)]


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


def fake_components(model: str, dtype: torch.dtype, mode: FakeTensorMode,
                    names: tuple[str, ...] | None = None) -> dict[str, torch.nn.Module]:
    """The traced components of `model` (those in `names`, all when None), with fake parameters in
    `dtype`, in eval mode. Each is built from its own config (read by its own class), so sizes are
    those of the model's weights."""
    classes = component_classes(load_configs(model, names=())["model_index"])
    names = tuple(n for n in traced_names(classes) if names is None or n in names)
    configs = load_configs(model, names=names)
    return {name: fake_component(*classes[name], configs[name], dtype, mode) for name in names if name in configs}


def fake_component(library: str, class_name: str, config: Any, dtype: torch.dtype,
                   mode: FakeTensorMode) -> torch.nn.Module:
    """One component from its config, with fake parameters in `dtype`, in eval mode."""
    with default_dtype(dtype), mode:
        return _build(library, class_name, config).eval()

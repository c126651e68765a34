"""Facts for knob availability, read off the component modules themselves.

Two sources, one reader (`module_facts`): a loaded pipeline (`pipeline_context`, used when a
profile is applied), or each diffusers component built from its own config on the meta device
with `accelerate.init_empty_weights()` (`model_context`, used before a search: no weights are
read; an SDXL UNet takes ~0.3 s). Text encoders and other non-diffusers components are not
probed: no knob depends on them.
"""
from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from autotune.knobs.context import Context, ModuleFacts
from autotune.errors import ModelNotFoundError
from autotune.models.pipelines import ModelInfo, component_classes, load_configs, model_info

log = logging.getLogger(__name__)

ComponentClasses = Mapping[str, tuple[str, str]]


def module_facts(module: Any) -> ModuleFacts:
    """What the knobs need to know of one module (real or on the meta device)."""
    import torch
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention, MochiAttention

    attention_classes = (Attention, MochiAttention, AttentionModuleMixin)
    conv_dims, dispatch = set(), False
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            conv_dims.add(len(sub.kernel_size))
        elif isinstance(sub, attention_classes):
            # the test diffusers' own set_attention_backend applies before touching a processor
            dispatch = dispatch or hasattr(getattr(sub, "processor", None), "_attention_backend")
    ranks = [t.dim() for t in itertools.chain(module.parameters(), module.buffers())]
    cls = type(module)
    untiled_up_to = _untiled_up_to(module)
    return ModuleFacts(
        class_name=cls.__name__,
        conv_dims=frozenset(conv_dims),
        max_tensor_rank=max(ranks, default=0),
        attention_slicing=callable(getattr(cls, "set_attention_slice", None)),
        attention_dispatch=dispatch,
        slicing=callable(getattr(cls, "enable_slicing", None)),
        tiling=callable(getattr(cls, "enable_tiling", None)),
        repeated_blocks=tuple(getattr(cls, "_repeated_blocks", None) or ()),
        untiled_up_to=untiled_up_to,
        slices_batch=untiled_up_to is not None,
    )


def _untiled_up_to(module: Any) -> tuple[int, int] | None:
    """The largest (height, width) in pixels a VAE whose rules were read in diffusers' source
    decodes whole with tiling on; None for any other module. AutoencoderKL (SD, SDXL, SD3, Flux)
    tiles a latent larger than `tile_sample_min_size` either way, AutoencoderKLWan one wider than
    `tile_sample_min_width` or taller than `tile_sample_min_height` (frame by frame either way);
    both slice only a batch of more than one."""
    from diffusers import AutoencoderKL, AutoencoderKLWan

    if isinstance(module, AutoencoderKL) and isinstance(getattr(module, "tile_sample_min_size", None), int):
        return (module.tile_sample_min_size,) * 2
    if isinstance(module, AutoencoderKLWan):
        height, width = getattr(module, "tile_sample_min_height", None), getattr(module, "tile_sample_min_width", None)
        if isinstance(height, int) and isinstance(width, int):
            return height, width
    return None


def pipeline_context(pipe: Any, device: str) -> Context:
    """The context of a loaded pipeline: facts from its own modules."""
    from diffusers import ModelMixin

    parts = {name: module for name, module in pipe.components.items() if module is not None}
    classes = {name: (type(m).__module__.split(".")[0], type(m).__name__) for name, m in parts.items()}
    modules = {name: module_facts(m) for name, m in parts.items() if isinstance(m, ModelMixin)}
    return Context(device=device, components=frozenset(parts), component_classes=classes, modules=modules,
                   pipeline_class=type(pipe).__name__)


def model_context(model: str, device: str, info: ModelInfo | None = None,
                  size: tuple[int, int, int] | None = None) -> Context:
    """The context of a model before loading it: its components and classes from `model_info`
    (or its model_index), facts from each diffusers component built on the meta device; `size`
    is the target's (height, width, batch). A model whose components cannot be built so gets a
    context without facts (rules by name), logged."""
    info = info or model_info(model)
    classes = dict(info.component_classes or component_classes(load_configs(model, names=())["model_index"]))
    modules = probe_model(model, tuple(sorted(classes.items())))
    height, width, batch = size if size is not None else (None, None, None)
    return Context(device=device, components=info.components, component_classes=classes, modules=modules,
                   pipeline_class=info.pipeline_class, height=height, width=width, batch=batch)


@functools.lru_cache(maxsize=32)
def probe_model(model: str, classes: tuple[tuple[str, tuple[str, str]], ...]) -> Mapping[str, ModuleFacts] | None:
    """Facts of each diffusers model component, built from its config (read by `load_configs`, the
    one reader of a model's configs) on the meta device."""
    import diffusers
    from accelerate import init_empty_weights

    models = {name: getattr(diffusers, class_name, None) for name, (library, class_name) in classes
              if library == "diffusers"}
    models = {name: cls for name, cls in models.items()
              if isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)}
    facts: dict[str, ModuleFacts] = {}
    name = "the configs"
    try:
        configs = load_configs(model, names=tuple(models)) if models else {}
        for name, cls in models.items():
            with init_empty_weights():
                facts[name] = module_facts(cls.from_config(configs[name]))
    # what reading a config (missing file, offline hub) or building from it raises
    except (ModelNotFoundError, OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("cannot probe %s of %s (%s): knob availability falls back to component names",
                    name, model, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__)
        return None
    return facts

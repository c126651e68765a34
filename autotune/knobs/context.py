"""What knob availability is decided from: the device, the pipeline's components, and facts read
off the component modules themselves (not their names).

Plain data, torch-free to build. `autotune.knobs.probe` fills in the module facts, from a loaded
pipeline or from each component's config built on the meta device; a `Context` without them
(`modules=None`) falls back to rules by component name.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping

#: Where diffusers pipelines keep the module that runs every step, in lookup order.
DENOISERS = ("unet", "transformer")


def role_of(component: str) -> str | None:
    """What a pipeline component does ('denoiser', 'vae', 'text_encoder'), the word knobs use to
    say which components they change; None for the rest (tokenizers, schedulers, ...)."""
    if component in DENOISERS:
        return "denoiser"
    if component == "vae":
        return "vae"
    if component.startswith("text_encoder"):
        return "text_encoder"
    return None


def denoiser_module(pipe: object) -> object:
    """The module that runs every step (UNet for SD/SDXL, transformer for DiT pipelines)."""
    for name in DENOISERS:
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise AttributeError(f"{type(pipe).__name__} has neither a unet nor a transformer")


@dataclasses.dataclass(frozen=True)
class ModuleFacts:
    """One component module as the knobs see it (read by `probe.module_facts`)."""

    class_name: str
    #: Spatial dimensions of its convolutions: {2} for Conv2d only, {2, 3} with Conv3d too.
    conv_dims: frozenset[int] = frozenset()
    #: Highest rank among its parameters and buffers (channels_last converts rank 4, fails on 5).
    max_tensor_rank: int = 0
    #: Implements `set_attention_slice` (UNets): `enable_attention_slicing` reaches it.
    attention_slicing: bool = False
    #: Its attention processors dispatch through diffusers' `set_attention_backend`.
    attention_dispatch: bool = False
    #: Has `enable_slicing` / `enable_tiling` (VAEs).
    slicing: bool = False
    tiling: bool = False
    #: Block classes `compile_repeated_blocks` compiles (`_repeated_blocks`).
    repeated_blocks: tuple[str, ...] = ()
    #: VAEs whose tiling and slicing rules are known (AutoencoderKL: SD, SDXL, SD3, Flux; and
    #: AutoencoderKLWan): the largest (height, width) in pixels it decodes whole with tiling on
    #: (its `_decode` tiles only a latent larger than its tile), and that slicing splits only a
    #: batch of more than one.
    untiled_up_to: tuple[int, int] | None = None
    slices_batch: bool = False

    @property
    def channels_last_ok(self) -> bool:
        """2-D convolutions to speed up, and no rank-5 tensor that channels_last would refuse."""
        return 2 in self.conv_dims and self.max_tensor_rank <= 4

    def conv_summary(self) -> str:
        """'3-D convolutions (rank-5 weights)': what channels_last looked at."""
        if not self.conv_dims:
            return "no convolutions"
        text = " and ".join(f"{d}-D" for d in sorted(self.conv_dims)) + " convolutions"
        return text + (f" (rank-{self.max_tensor_rank} weights)" if self.max_tensor_rank > 4 else "")


@dataclasses.dataclass(frozen=True)
class Context:
    """What availability depends on: the device trials run on, the pipeline's components, their
    classes `{name: (library, class_name)}`, and, once probed, facts of each diffusers model
    component (`None`: not probed, knobs fall back to rules by component name)."""

    device: str
    components: frozenset[str]
    component_classes: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict, hash=False)
    modules: Mapping[str, ModuleFacts] | None = dataclasses.field(default=None, hash=False)
    #: The pipeline's class name (`StableDiffusionPipeline`), where known: some knobs act only
    #: through code the pipeline's `__call__` runs (the caching hooks' cache context).
    pipeline_class: str | None = None
    #: The target's output size and batch, where the context is one target's (a search): some
    #: values change nothing at that size. None: any size (a profile applied to a pipeline).
    height: int | None = None
    width: int | None = None
    batch: int | None = None

    def has_package(self, name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    @property
    def probed(self) -> bool:
        return self.modules is not None

    def denoiser(self) -> str | None:
        """The component that runs every step ('unet' or 'transformer'), if any."""
        return next((name for name in DENOISERS if name in self.components), None)

    def facts(self, name: str | None) -> ModuleFacts | None:
        if name is None or self.modules is None:
            return None
        return self.modules.get(name)

    def class_name(self, name: str) -> str:
        """'vae (AutoencoderKLWan)': a component named with its class, for reasons shown to users."""
        facts = self.facts(name)
        cls = facts.class_name if facts else self.component_classes.get(name, ("", ""))[1]
        return f"{name} ({cls})" if cls else name

"""Peak memory prediction for any assignment, on any machine, without running the pipeline.

Traces (planner/trace.py) give each component's activation peak at the target's shapes; weight
statistics (planner/stats.py) give what each placement keeps resident; placement.py composes the
peak per offload mode; calibration.py adds what a trace cannot see on a GPU. Traces are cached per
(component, dtype, knobs that change them), so a whole space plans in seconds.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from autotune.errors import PlannerUnsupportedError
from autotune.planner import calibration
from autotune.planner.placement import PHASE_LABELS, PhaseCost, resident_weights
from autotune.target import Target

log = logging.getLogger(__name__)

#: The knobs each trace depends on (text encoders: dtype only); every other knob is modelled.
_TRACE_KNOBS = {"unet": ("dtype", "attention"), "transformer": ("dtype", "attention"),
                "vae": ("dtype", "vae_slicing", "vae_tiling")}


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted peak of one assignment, in the unit of the device's own peak metric."""

    total_bytes: int
    peak_phase: str
    resident_weights_bytes: int
    activation_bytes: int
    workspace_bytes: int
    allocator_bytes: int
    runtime_bytes: int
    phases: dict[str, int]
    metric: str
    context_floor_bytes: int = 0

    @property
    def lower_bound_bytes(self) -> int:
        """Traced weights + activations + the smallest possible CUDA context: what a run needs at
        the very least. No fitted term is in it, so pruning on it never drops a candidate because
        of a calibration that does not carry over to another card or shape."""
        return self.resident_weights_bytes + self.activation_bytes + self.context_floor_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lower_bound_bytes": self.lower_bound_bytes}

    def over(self, ceiling: int) -> float:
        """Relative excess of the prediction over the ceiling (<= 0 fits)."""
        return (self.total_bytes - ceiling) / ceiling

    def surely_over(self, ceiling: int, margin: float) -> bool:
        """True when even the lower bound exceeds the ceiling by more than `margin`."""
        return self.lower_bound_bytes > ceiling * (1 + margin)


class Planner:
    """Predicts the peak memory of assignments for one target."""

    def __init__(self, target: Target) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        from autotune.pipelines import call_default, model_info

        info = model_info(target.model)
        self._denoiser = _supported(target.model, info)
        self._frames = getattr(target, "frames", None) or info.native_frames
        call_args = getattr(target, "call_args", None) or {}
        self._max_sequence_length = call_args.get("max_sequence_length") or call_default(
            info.pipeline_class, "max_sequence_length")
        self.target = target
        self._upcasts_vae = info.pipeline_class.startswith("StableDiffusionXL")
        self._mode = FakeTensorMode(allow_non_fake_inputs=True)
        self._modules: dict[str, dict[str, Any]] = {}
        self._traces: dict[tuple, int] = {}
        self._stats: dict[tuple, Any] = {}
        self._processors: dict[int, Any] = {}

    # -- cached building blocks ----------------------------------------------------------------

    def _components(self, dtype: str) -> dict[str, Any]:
        if dtype not in self._modules:
            from autotune.knobs.builtin import torch_dtype
            from autotune.planner.fake import fake_components

            self._modules[dtype] = fake_components(self.target.model, torch_dtype(dtype), self._mode)
        return self._modules[dtype]

    def _dtype(self, component: str, assignment: dict[str, Any]) -> str:
        """The dtype a component runs in: SDXL pipelines upcast an fp16 VAE with `force_upcast`
        to fp32 for the decode (its fp16 activations overflow), doubling the decode's memory."""
        dtype = assignment.get("dtype", "fp32")
        if (component == "vae" and dtype == "fp16" and self._upcasts_vae
                and self._components(dtype)["vae"].config.get("force_upcast")):
            return "fp32"
        return dtype

    def _activation(self, component: str, assignment: dict[str, Any]) -> int:
        key = (component, self._dtype(component, assignment), *(assignment.get(k) for k in _TRACE_KNOBS.get(component, ("dtype",))))
        if key not in self._traces:
            self._traces[key] = self._trace(component, assignment)
        return self._traces[key]

    def _trace(self, component: str, assignment: dict[str, Any]) -> int:
        from autotune.planner import inputs, trace

        modules = self._components(self._dtype(component, assignment))
        module = modules[component]
        if component.startswith("text_encoder"):
            tokens = inputs.text_tokens(module, self._max_sequence_length)
            return trace.trace_text_encoder(component, module, self._mode, tokens).activation_bytes
        if component == "vae":
            (module.enable_slicing if assignment.get("vae_slicing") else module.disable_slicing)()
            (module.enable_tiling if assignment.get("vae_tiling") else module.disable_tiling)()
            shapes = self._shapes(module, inputs.vae_latent_channels(module), 1, module.dtype)
            return trace.trace_vae_decode(module, shapes, self._mode).activation_bytes
        call = inputs.DENOISER_CALLS[type(module).__name__]
        self._set_attention(module, assignment.get("attention"))
        shapes = self._shapes(modules["vae"], module.config.in_channels, call.cfg_batch, module.dtype,
                              call.text_tokens(self._max_sequence_length))
        return trace.trace_denoiser_step(component, module, shapes, call, self._mode).activation_bytes

    def _shapes(self, vae: Any, channels: int, cfg_batch: int, dtype: Any, tokens: int = 0) -> Any:
        """One call on the target's latents, as `vae` shapes them (frames for a video VAE)."""
        from autotune.pipelines import vae_spatial_scale
        from autotune.planner import inputs

        scale = vae_spatial_scale(dict(vae.config))
        frames = inputs.latent_frames(vae, self._frames or 1) if inputs.vae_is_video(vae) else None
        return inputs.Shapes(batch=cfg_batch * self.target.batch, channels=channels, frames=frames,
                             height=self.target.height // scale, width=self.target.width // scale,
                             text_tokens=tokens, dtype=dtype)

    def _set_attention(self, module: Any, attention: Any) -> None:
        """Sliced attention where the denoiser implements it; otherwise the processors it was
        built with (the fake modules are shared between traces: undo an earlier sliced one)."""
        original = self._processors.setdefault(id(module), dict(getattr(module, "attn_processors", {})))
        if attention == "sliced" and callable(getattr(module, "set_attention_slice", None)):
            module.set_attention_slice("auto")
        elif original and any(p is not original[k] for k, p in module.attn_processors.items()):
            module.set_attn_processor(dict(original))

    def _weight_stats(self, component: str, assignment: dict[str, Any]) -> Any:
        from autotune.planner.stats import weight_stats

        fp8 = bool(assignment.get("layerwise_fp8")) and component in ("unet", "transformer")
        key = (component, self._dtype(component, assignment), fp8)
        if key not in self._stats:
            self._stats[key] = weight_stats(self._components(key[1])[component], fp8=fp8)
        return self._stats[key]

    # -- prediction ----------------------------------------------------------------------------

    def predict(self, assignment: dict[str, Any]) -> Prediction:
        components = list(self._components(assignment.get("dtype", "fp32")))
        stats = {c: self._weight_stats(c, assignment) for c in components}
        offload = assignment.get("offload", "none")
        on_gpu = self.target.device == "cuda"
        phases = []
        for component in components:
            activations = self._activation(component, assignment)
            if component in ("unet", "transformer"):
                activations += stats[component].largest_fp8_layer_upcast
            workspace = int(activations * _workspace_factor(assignment)) if on_gpu and component == "vae" else 0
            phases.append(PhaseCost(component, resident_weights(offload, component, stats), activations, workspace))
        peak = max(phases, key=lambda p: p.total)
        allocator = runtime = 0
        if on_gpu:
            allocator = int((peak.activations + peak.workspace) * calibration.ALLOCATOR_CACHED_FRACTION)
            runtime = calibration.CUDA_RUNTIME_BYTES
        return Prediction(
            total_bytes=peak.total + allocator + runtime, peak_phase=PHASE_LABELS.get(peak.component, peak.component),
            resident_weights_bytes=peak.resident_weights, activation_bytes=peak.activations,
            workspace_bytes=peak.workspace, allocator_bytes=allocator, runtime_bytes=runtime,
            phases={PHASE_LABELS.get(p.component, p.component): p.total for p in phases},
            metric="cuda_process_peak" if on_gpu else "cpu_live_tensor_peak",
            context_floor_bytes=calibration.CUDA_CONTEXT_FLOOR_BYTES if on_gpu else 0,
        )


def _workspace_factor(assignment: dict[str, Any]) -> float:
    if assignment.get("channels_last"):
        return calibration.VAE_DECODE_WORKSPACE_FACTOR_CHANNELS_LAST
    return calibration.VAE_DECODE_WORKSPACE_FACTOR


def _supported(model: str, info: Any) -> str:
    """The denoiser's component name, or PlannerUnsupportedError saying what cannot be traced."""
    from autotune.planner import inputs

    classes = info.component_classes
    denoiser = next((n for n in ("unet", "transformer") if n in classes), None)
    if denoiser is None or "vae" not in classes:
        raise PlannerUnsupportedError(
            f"the planner traces pipelines with a denoiser (unet or transformer) and a vae; {model} has "
            f"{', '.join(sorted(info.components))}"
        )
    reasons = []
    if classes[denoiser][1] not in inputs.DENOISER_CALLS:
        reasons.append(f"its {denoiser} is a {classes[denoiser][1]} (traced: {', '.join(inputs.DENOISER_CALLS)})")
    if classes["vae"][1] not in inputs.VAE_CLASSES:
        reasons.append(f"its vae is a {classes['vae'][1]} (traced: {', '.join(inputs.VAE_CLASSES)})")
    extra = sorted(n for n in classes if n.startswith("transformer_") or n.startswith("unet_"))
    if extra:
        reasons.append(f"it has a second denoiser ({', '.join(extra)}) the planner does not model")
    if reasons:
        raise PlannerUnsupportedError(f"the planner cannot trace {model}: " + "; ".join(reasons))
    return denoiser


__all__ = ["Planner", "Prediction", "calibration"]

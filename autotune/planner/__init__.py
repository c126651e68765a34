"""Peak memory prediction for any assignment, on any machine, without running the pipeline.

Traces (planner/trace.py) give each component's activation peak at the target's shapes; weight
statistics (planner/stats.py) give what each placement keeps resident; placement.py composes the
peak of each phase; calibration.py adds what a trace cannot see on a GPU. What a knob changes is
asked of the knob (`Knob.plan`, a `PlanEffect`: its load arguments, how it modifies, configures
or stores a component, where it places weights), never decided here by its name. Fake modules
and traces are cached per (component, the values of the knobs that change them), so a whole
space plans in seconds.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from autotune import knobs
from autotune.errors import PlannerUnsupportedError
from autotune.knobs import Value
from autotune.knobs.context import DENOISERS, role_of
from autotune.knobs.space import Assignment
from autotune.planner import calibration
from autotune.planner.placement import PHASE_LABELS, PhaseCost, peak_phase
from autotune.planner.prediction import Prediction
from autotune.target import Target

if TYPE_CHECKING:
    import torch

    from autotune.models.pipelines import ModelInfo
    from autotune.planner.inputs import Shapes
    from autotune.planner.stats import WeightStats

log = logging.getLogger(__name__)


class Planner:
    """Predicts the peak memory of assignments for one target."""

    def __init__(self, target: Target) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        from autotune.models.pipelines import call_default, load_configs, model_info
        from autotune.planner.fake import traced_names

        info = model_info(target.model)
        self._denoiser = _supported(target.model, info)
        self._frames = getattr(target, "frames", None) or info.native_frames
        call_args = getattr(target, "call_args", None) or {}
        self._max_sequence_length = call_args.get("max_sequence_length") or call_default(
            info.pipeline_class, "max_sequence_length")
        self.target = target
        # Read once: every fake module is built from these (a hub id's are downloads).
        self._classes = info.component_classes
        self._configs = load_configs(target.model, names=tuple(traced_names(self._classes)))
        self._names = [n for n in traced_names(self._classes) if n in self._configs]
        self._vae_upcasts_fp16 = (info.pipeline_class.startswith("StableDiffusionXL")
                                  and bool(dict(self._configs.get("vae") or {}).get("force_upcast")))
        self._knobs = knobs.all_knobs()
        self._placement = next((k for k in self._knobs if k.plan.resident is not None), None)
        self._mode = FakeTensorMode(allow_non_fake_inputs=True)
        self._modules: dict[tuple, torch.nn.Module] = {}
        self._traces: dict[tuple, int] = {}
        self._stats: dict[tuple, WeightStats] = {}

    # -- what each knob does to a component ----------------------------------------------------

    def _with(self, hook: str, component: str, assignment: Assignment) -> list[tuple[knobs.Knob, Value]]:
        """(knob, value) of every knob whose PlanEffect has `hook` for this component's role."""
        role = role_of(component)
        return [(k, assignment.get(k.name, k.default)) for k in self._knobs
                if getattr(k.plan, hook) is not None and role is not None and k.plan.touches(role)]

    def _torch_dtype(self, component: str, assignment: Assignment) -> torch.dtype:
        """The dtype a component runs in: the one a knob sets for it (vae_dtype), else the one its
        weights load in, except that SDXL pipelines upcast an fp16 VAE with `force_upcast` to
        fp32 for the decode (its fp16 activations overflow), doubling the decode's memory."""
        import torch

        for knob, value in self._with("own_dtype", component, assignment):
            own = knob.plan.own_dtype(value)
            if own is not None:
                return own
        dtype = knobs.load_dtype(assignment)
        if component == "vae" and dtype == torch.float16 and self._vae_upcasts_fp16:
            return torch.float32
        return dtype

    def _module_key(self, component: str, assignment: Assignment) -> tuple:
        return (component, self._torch_dtype(component, assignment),
                *((k.name, v) for k, v in self._with("modify", component, assignment)))

    # -- cached building blocks ----------------------------------------------------------------

    def _module(self, component: str, assignment: Assignment) -> torch.nn.Module:
        """The fake module of a component, built in its dtype and modified by the knobs that
        change its weights (one module per distinct set of those values)."""
        key = self._module_key(component, assignment)
        if key not in self._modules:
            from autotune.planner.fake import default_dtype, fake_component

            module = fake_component(*self._classes[component], self._configs[component], key[1], self._mode)
            with default_dtype(key[1]), self._mode:
                for knob, value in self._with("modify", component, assignment):
                    knob.plan.modify(module, value)
            self._modules[key] = module
        return self._modules[key]

    def _activation(self, component: str, assignment: Assignment) -> int:
        key = (*self._module_key(component, assignment), *(v for _, v in self._with("configure", component, assignment)))
        if key not in self._traces:
            self._traces[key] = self._trace(component, assignment)
        return self._traces[key]

    def _trace(self, component: str, assignment: Assignment) -> int:
        from autotune.planner import inputs, trace

        module = self._module(component, assignment)
        for knob, value in self._with("configure", component, assignment):
            knob.plan.configure(module, value)
        if component.startswith("text_encoder"):
            tokens = inputs.text_tokens(module, self._max_sequence_length)
            return trace.trace_text_encoder(component, module, self._mode, tokens).activation_bytes
        if component == "vae":
            shapes = self._shapes(module, inputs.vae_latent_channels(module), 1, module.dtype)
            return trace.trace_vae_decode(module, shapes, self._mode).activation_bytes
        call = inputs.DENOISER_CALLS[type(module).__name__]
        shapes = self._shapes(self._module("vae", assignment), module.config.in_channels, call.cfg_batch,
                              module.dtype, call.text_tokens(self._max_sequence_length))
        return trace.trace_denoiser_step(component, module, shapes, call, self._mode).activation_bytes

    def _shapes(self, vae: torch.nn.Module, channels: int, cfg_batch: int, dtype: torch.dtype,
                tokens: int = 0) -> Shapes:
        """One call on the target's latents, as `vae` shapes them (frames for a video VAE)."""
        from autotune.models.pipelines import vae_spatial_scale
        from autotune.planner import inputs

        scale = vae_spatial_scale(dict(vae.config))
        frames = inputs.latent_frames(vae, self._frames or 1) if inputs.vae_is_video(vae) else None
        return inputs.Shapes(batch=cfg_batch * self.target.batch, channels=channels, frames=frames,
                             height=self.target.height // scale, width=self.target.width // scale,
                             text_tokens=tokens, dtype=dtype)

    def _weight_stats(self, component: str, assignment: Assignment) -> WeightStats:
        from autotune.planner.stats import weight_stats

        storing = self._with("storage", component, assignment)
        key = (*self._module_key(component, assignment), *(v for _, v in storing))
        if key not in self._stats:
            module = self._module(component, assignment)
            storage: dict[str, float] = {}
            at_load: dict[str, float] = {}  # narrowed while loading (bitsandbytes), not after it
            for knob, value in storing:
                narrowed = knob.plan.storage(module, value)
                storage.update(narrowed)
                if knob.loads_differently(value):
                    at_load.update(narrowed)
            stats = weight_stats(module, storage=storage)
            if at_load:
                stats = dataclasses.replace(stats, as_loaded=weight_stats(module, storage=at_load).total)
            self._stats[key] = stats
        return self._stats[key]

    def _workspace_factor(self, assignment: Assignment) -> float:
        factors = [k.plan.vae_workspace_factor(assignment.get(k.name, k.default)) for k in self._knobs
                   if k.plan.vae_workspace_factor is not None]
        return min((f for f in factors if f is not None), default=calibration.VAE_DECODE_WORKSPACE_FACTOR)

    # -- prediction ----------------------------------------------------------------------------

    def predict(self, assignment: Assignment) -> Prediction:
        stats = {c: self._weight_stats(c, assignment) for c in self._names}
        on_gpu = self.target.device == "cuda"
        phases = []
        for component in self._names:
            activations = self._activation(component, assignment) + stats[component].largest_upcast_layer
            workspace = int(activations * self._workspace_factor(assignment)) if on_gpu and component == "vae" else 0
            phases.append(PhaseCost(component, self._resident(component, stats, assignment), activations, workspace))
        peak, allocator = peak_phase(phases, calibration.ALLOCATOR_CACHED_FRACTION if on_gpu else 0.0)
        runtime = calibration.CUDA_RUNTIME_BYTES if on_gpu else 0
        host = self._host(stats, assignment)
        if not on_gpu:  # what the CPU runs on lives in RAM: loading's peak, or the run's if that is higher
            host = max(host, peak.total)
        return Prediction(
            total_bytes=peak.total + allocator + runtime, peak_phase=PHASE_LABELS.get(peak.component, peak.component),
            resident_weights_bytes=peak.resident_weights, activation_bytes=peak.activations,
            workspace_bytes=peak.workspace, allocator_bytes=allocator, runtime_bytes=runtime,
            phases={PHASE_LABELS.get(p.component, p.component): p.total for p in phases},
            metric="cuda_process_peak" if on_gpu else "cpu_live_tensor_peak",
            context_floor_bytes=calibration.CUDA_CONTEXT_FLOOR_BYTES if on_gpu else 0,
            host_bytes=host,
        )

    def _resident(self, component: str, stats: dict[str, WeightStats], assignment: Assignment) -> int:
        """Weight bytes on the device while `component` runs: the placement knob says (all of
        them without one)."""
        if self._placement is None:
            return sum(s.total for s in stats.values())
        value = assignment.get(self._placement.name, self._placement.default)
        return self._placement.plan.resident(value, component, stats)

    def _host(self, stats: dict[str, WeightStats], assignment: Assignment) -> int:
        """Host RAM the weights take at their peak: the placement knob says (without one, all of
        them as loaded: they pass through RAM on their way to the device)."""
        if self._placement is None or self._placement.plan.host is None:
            return sum(s.loaded_bytes for s in stats.values())
        return self._placement.plan.host(assignment.get(self._placement.name, self._placement.default), stats)


def _supported(model: str, info: ModelInfo) -> str:
    """The denoiser's component name, or PlannerUnsupportedError saying what cannot be traced."""
    from autotune.planner import inputs

    classes = info.component_classes
    denoiser = next((n for n in DENOISERS if n in classes), None)
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

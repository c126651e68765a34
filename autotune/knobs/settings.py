"""The one way settings go on a pipeline: `apply_settings`, all or nothing.

Both the measuring worker and `apply_profile` in production call it, so a profile reapplies
exactly what was measured: the registry's canonical stage order, missing knobs at their default,
and on any knob failure the pipeline is put back (`PipelineSnapshot`) and the error names the knob.
"""
from __future__ import annotations

import collections
import time
from typing import Any

from autotune import knobs
from autotune.errors import KnobApplyError
from autotune.knobs.probe import pipeline_context
from autotune.knobs.registry import ApplyContext, Value
from autotune.knobs.space import check_available, check_values


def pipeline_components(pipe: Any) -> frozenset[str]:
    return frozenset(name for name, module in pipe.components.items() if module is not None)


def hooked_modules(pipe: Any) -> list[str]:
    """Names of modules carrying accelerate or diffusers hooks (offload, casting, ...)."""
    import torch

    found = []
    for comp_name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for name, module in component.named_modules():
            if _has_hooks(module):
                found.append(f"{comp_name}.{name}" if name else comp_name)
    return found


def _has_hooks(module: Any) -> bool:
    """An accelerate hook, or a diffusers hook registry that holds a hook: running a transformer
    with a cache context (Wan, Flux...) leaves an empty registry behind, which changes nothing."""
    if getattr(module, "_hf_hook", None) is not None:
        return True
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and bool(getattr(registry, "hooks", True))


#: What a knob's `apply` raises when it cannot do its job on this pipeline (a module it does not
#: fit, a missing accelerator or package, a conflicting hook): turned into one line naming the knob.
KNOB_FAILURES = (RuntimeError, ValueError, TypeError, AttributeError, NotImplementedError, KeyError,
                 ImportError, AssertionError)


def apply_settings(pipe: Any, settings: dict[str, Value], device: str,
                   stage_seconds: dict[str, float] | None = None) -> tuple[tuple[str, Value], ...]:
    """Apply knob values (missing knobs take their default) in canonical order, all or nothing:
    if a knob raises, every change made so far is undone and `KnobApplyError` names the knob (an
    out-of-memory error is re-raised as it is, after the undo, so callers can tell it apart).
    With `stage_seconds`, the time of each stage is added to it (`place` is the device transfer)."""
    full = check_values({**{k.name: k.default for k in knobs.all_knobs()}, **settings})
    check_available(full, pipeline_context(pipe, device))
    ctx = ApplyContext(device=device)
    snapshot = PipelineSnapshot(pipe)
    applied: list[tuple[str, Value]] = []
    knob = None
    try:
        for knob in knobs.all_knobs():
            start = time.perf_counter()
            knob.apply(pipe, full[knob.name], ctx)
            if stage_seconds is not None:
                stage = knob.stage.name.lower()
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - start
            applied.append((knob.name, full[knob.name]))
    except BaseException as exc:
        restored = snapshot.restore()
        if knob is None or not isinstance(exc, KNOB_FAILURES) or _is_oom(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        state = ("the pipeline is as it was before" if restored else
                 "the pipeline could not be put back as it was: load it again before using it")
        done = f" (after {', '.join(f'{k}={v}' for k, v in applied)})" if applied else ""
        raise KnobApplyError(
            f"knob {knob.name}={full[knob.name]!r} failed{done}: {type(exc).__name__}: {first}; {state}; "
            f"exclude it (`--exclude {knob.name}`) or apply a profile without it"
        ) from exc
    return tuple(applied)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


class PipelineSnapshot:
    """Everything a knob can change on a pipeline, kept by reference (no tensor is copied):
    each parameter's data, and each module's and the pipeline's attribute dicts (parameters,
    buffers, hooks, wrapped `forward`s, processors' backends, flags such as VAE slicing).
    `restore()` puts them back and says whether the state now matches the snapshot. While a
    snapshot lives, tensors a knob replaced (a dtype or device move) stay in memory."""

    def __init__(self, pipe: Any) -> None:
        import torch

        self.pipe = pipe
        self._pipe_dict = _copy_attrs(vars(pipe))
        self._modules: list[tuple[Any, dict[str, Any]]] = []
        self._data: list[tuple[Any, Any]] = []
        seen: set[int] = set()
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for module in component.modules():
                if id(module) in seen:
                    continue
                seen.add(id(module))
                self._modules.append((module, _copy_attrs(vars(module))))
                self._data.extend((p, p.data) for p in module._parameters.values() if p is not None)
            for processor in _processors(component):
                if id(processor) not in seen:
                    seen.add(id(processor))
                    self._modules.append((processor, _copy_attrs(vars(processor))))
        self.signature = state_signature(pipe)

    def restore(self) -> bool:
        for param, data in self._data:
            param.data = data
        for obj, attrs in self._modules:
            vars(obj).clear()
            vars(obj).update(_copy_attrs(attrs))
        vars(self.pipe).clear()
        vars(self.pipe).update(_copy_attrs(self._pipe_dict))
        return state_signature(self.pipe) == self.signature


#: Exactly these types (not subclasses such as diffusers' immutable FrozenDict configs).
_CONTAINERS = (dict, collections.OrderedDict, list, set)


def _copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A copy one level deep: the containers modules keep (parameters, buffers, submodules, hook
    dicts) are copied, so adding or replacing an entry later does not reach the copy."""
    return {k: (v.copy() if type(v) in _CONTAINERS else v) for k, v in attrs.items()}


def _processors(component: Any) -> list[Any]:
    processors = getattr(component, "attn_processors", None)
    return list(processors.values()) if isinstance(processors, dict) else []


def _storage(tensor: Any) -> int | None:
    try:
        return tensor.data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without one storage
        return None


def state_signature(pipe: Any) -> list[Any]:
    """What identifies a pipeline's state: each tensor's storage, dtype, device and layout, the
    modules carrying hooks or a wrapped forward, each processor and its backend, and the plain
    flags of each component (e.g. `use_slicing`)."""
    import torch

    signature: list[Any] = []
    for name, component in sorted(pipe.components.items()):
        if not isinstance(component, torch.nn.Module):
            signature.append((name, type(component).__name__))
            continue
        for key, t in [*component.named_parameters(), *component.named_buffers()]:
            signature.append((name, key, t.dtype, t.device, t.stride(), _storage(t)))
        signature.append((name, [key for key, m in component.named_modules() if "forward" in vars(m) or _has_hooks(m)]))
        signature.append((name, [(type(p).__name__, getattr(p, "_attention_backend", None))
                                 for p in _processors(component)]))
        signature.append((name, sorted((k, v) for k, v in vars(component).items()
                                       if isinstance(v, (bool, int, float, str)) or v is None)))
    return signature

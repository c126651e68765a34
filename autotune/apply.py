"""Reapplying a profile in production: `load_pipeline(profile)` then `apply_profile(pipe, profile)`.

Settings go on in the registry's canonical stage order, the same order the search used, so two
fresh pipelines with one profile end up in identical module state. Applying is all or nothing: if
a knob fails, the pipeline is put back as it was (see `PipelineSnapshot`) and the error names the
knob. A profile matches a pipeline by model identity (`pipelines.model_identity`), so every
spelling of the same folder or hub id finds its profile.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from autotune import knobs
from autotune.errors import (
    InvalidTargetError,
    NoMatchingProfileError,
    PipelineStateError,
    ProfileError,
    ProfileMismatchError,
)
from autotune.knobs import ApplyContext, Value
from autotune.profile import Profile
from autotune.space import check_available, check_values

log = logging.getLogger(__name__)

PROFILE_DIR_ENV = "AUTOTUNE_PROFILE_DIR"
DEFAULT_PROFILE_DIR = "profiles"


@dataclasses.dataclass(frozen=True)
class AppliedProfile:
    """What `apply_profile` did, in order."""

    profile: Profile
    applied: tuple[tuple[str, Value], ...]
    device: str
    source: str | None = None

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.applied)
        return f"applied on {self.device}: {settings}"


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


class KnobApplyError(PipelineStateError):
    """A knob failed while a profile was applied; the message says whether the pipeline was restored."""


def apply_settings(pipe: Any, settings: dict[str, Value], device: str) -> tuple[tuple[str, Value], ...]:
    """Apply knob values (missing knobs take their default) in canonical order, all or nothing:
    if a knob raises, every change made so far is undone and `KnobApplyError` names the knob (an
    out-of-memory error is re-raised as it is, after the undo, so callers can tell it apart)."""
    from autotune.knobs.probe import pipeline_context

    full = check_values({**{k.name: k.default for k in knobs.all_knobs()}, **settings})
    check_available(full, pipeline_context(pipe, device))
    ctx = ApplyContext(device=device)
    snapshot = PipelineSnapshot(pipe)
    applied: list[tuple[str, Value]] = []
    knob = None
    try:
        for knob in knobs.all_knobs():
            knob.apply(pipe, full[knob.name], ctx)
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


def load_pipeline(profile: Profile | str | os.PathLike[str]) -> Any:
    """Build the pipeline the profile was tuned for, from the same model, in its dtype."""
    from autotune.knobs.builtin import torch_dtype
    from autotune.pipelines import build_pipeline

    profile = _as_profile(profile)
    return build_pipeline(profile_model_source(profile), torch_dtype=torch_dtype(profile.settings.get("dtype", "fp32")))


def profile_model_source(profile: Profile) -> str:
    """Where to load the profile's model from: its `target.model` as written where that still
    names it (a built-in, a hub id, a folder relative to here), else the folder its recorded
    identity names (a relative path written from another working directory)."""
    from pathlib import Path

    from autotune.pipelines import BUILTIN_PREFIX

    model = profile.target.model
    stored = profile.fingerprint.get(MODEL_IDENTITY_KEY)
    if (not model.startswith(BUILTIN_PREFIX) and not Path(model).expanduser().exists()
            and isinstance(stored, str) and Path(stored).is_absolute() and Path(stored).is_dir()):
        return stored
    return model


def apply_profile(
    pipe: Any,
    profile: Profile | str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    profile_dir: str | os.PathLike[str] | None = None,
    strict: bool = True,
) -> AppliedProfile:
    """Apply a profile's settings to a fresh pipeline.

    With no profile, the one matching this pipeline (model, pipeline class, and the given
    height/width/batch) is looked up in `profile_dir`, else $AUTOTUNE_PROFILE_DIR, else ./profiles.
    A model or pipeline-class mismatch raises (a warning with strict=False); another device warns.
    """
    source = None
    if profile is None:
        source = str(find_profile(pipe, height=height, width=width, batch=batch, profile_dir=profile_dir))
        profile = source
    elif not isinstance(profile, Profile):
        source = str(profile)
    profile = _as_profile(profile)
    hooked = hooked_modules(pipe)
    if hooked:
        raise PipelineStateError(
            f"the pipeline already carries offload/casting hooks ({', '.join(hooked[:3])}"
            f"{', ...' if len(hooked) > 3 else ''}); apply the profile to a freshly loaded pipeline"
        )
    _check_fingerprint(pipe, profile, strict)
    device = device or profile.target.device
    require_device(device)
    applied = apply_settings(pipe, profile.settings, device)
    log.info("applied profile %s: %s", source or "(in memory)", dict(applied))
    return AppliedProfile(profile=profile, applied=applied, device=device, source=source)


def require_device(device: str) -> None:
    """A one-line error when `device` cannot run here."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidTargetError(
                "this profile runs on cuda, but no CUDA GPU is usable here; apply it on a GPU "
                "machine, or pass device='cpu' (`--device cpu`) if its settings can run on CPU"
            )
    elif device != "cpu":
        raise InvalidTargetError(f"device must be 'cuda' or 'cpu', got {device!r}")


def _as_profile(profile: Profile | str | os.PathLike[str]) -> Profile:
    return profile if isinstance(profile, Profile) else Profile.load(profile)


def _check_fingerprint(pipe: Any, profile: Profile, strict: bool) -> None:
    problems = []
    expected_class = profile.target.pipeline_class
    if expected_class and type(pipe).__name__ != expected_class:
        problems.append(f"it was tuned for a {expected_class}, not a {type(pipe).__name__}")
    name = getattr(pipe, "name_or_path", None)
    if name and profile.target.model and not matches_model(profile, pipe_identity(pipe)):
        problems.append(f"it was tuned for model {profile.target.model!r} ({profile_identities(profile)[0]}), "
                        f"not {name!r} ({pipe_identity(pipe)})")
    if problems:
        message = "profile does not match this pipeline: " + "; ".join(problems)
        if strict:
            raise ProfileMismatchError(message + " (pass strict=False to apply it anyway)")
        warnings.warn(message, stacklevel=3)
    here = _current_device_name(profile.target.device)
    there = profile.fingerprint.get("device_name")
    if here and there and here != there:
        warnings.warn(
            f"profile was measured on {there!r}, this is {here!r}: its latency and memory numbers "
            "may not hold here; re-run `autotune search` on this device to be sure",
            stacklevel=3,
        )


#: The fingerprint key a search may record the model's identity under (an absolute folder path,
#: or `org/name@commit`), so a relative `target.model` still matches from another directory.
MODEL_IDENTITY_KEY = "model_identity"


def pipe_identity(pipe: Any) -> str:
    """The identity of the model a pipeline was loaded from (what diffusers kept as `name_or_path`)."""
    from autotune.pipelines import model_identity

    return model_identity(str(getattr(pipe, "name_or_path", "") or ""))


def profile_identities(profile: Profile) -> list[str]:
    """The identities a profile's model may have: `target.model` resolved here, and the identity
    recorded when it was made (if any)."""
    from autotune.pipelines import model_identity

    found = [model_identity(profile.target.model)]
    stored = profile.fingerprint.get(MODEL_IDENTITY_KEY)
    if isinstance(stored, str) and stored and stored not in found:
        found.append(stored)
    return found


def matches_model(profile: Profile, identity: str) -> bool:
    from autotune.pipelines import same_model

    return any(same_model(candidate, identity) for candidate in profile_identities(profile))


def _current_device_name(device: str) -> str | None:
    from autotune import hardware

    if device == "cuda":
        gpus = hardware.probe_gpus()
        return gpus[0].name if gpus else None
    return hardware.cpu_name()


def profile_dir_default() -> Path:
    return Path(os.environ.get(PROFILE_DIR_ENV) or DEFAULT_PROFILE_DIR)


def find_profile(
    pipe: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    profile_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The best-matching profile file for this pipeline and size (see `rank` for the order)."""
    folder = Path(profile_dir) if profile_dir else profile_dir_default()
    model = getattr(pipe, "name_or_path", None)
    identity = pipe_identity(pipe)
    pipeline_class = type(pipe).__name__
    candidates: list[tuple[Profile, Path]] = []
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        try:
            prof = Profile.load(path)
        except ProfileError as exc:
            log.warning("skipping unreadable profile: %s", exc)
            continue
        t = prof.target
        if (matches_model(prof, identity) and t.pipeline_class in (None, pipeline_class)
                and height in (None, t.height) and width in (None, t.width) and batch in (None, t.batch)):
            candidates.append((prof, path))
    if not candidates:
        wanted = ", ".join(f"{k}={v}" for k, v in
                           (("model", model), ("pipeline", pipeline_class), ("height", height),
                            ("width", width), ("batch", batch)) if v is not None)
        raise NoMatchingProfileError(
            f"no profile in {str(folder)!r} matches {wanted}; run `autotune search --model {model} "
            f"--out {folder}/NAME.yaml` or pass a profile path"
        )
    devices = {p.target.device for p, _ in candidates}
    here = {d: _current_device_name(d) for d in devices}
    capacity = {d: _current_device_memory(d) for d in devices}

    def rank(candidate: tuple[Profile, Path]) -> tuple:
        """Measured on this device first; then a ceiling this device can hold, the largest such
        (the most memory it may use is the fastest it can be); then the fastest."""
        prof, path = candidate
        card = capacity[prof.target.device]
        fits = card is None or prof.target.max_vram <= card
        return (prof.fingerprint.get("device_name") != here[prof.target.device], not fits,
                -prof.target.max_vram if fits else prof.target.max_vram, prof.best.latency_median_s, str(path))

    return min(candidates, key=rank)[1]


def _current_device_memory(device: str) -> int | None:
    from autotune import hardware

    if device == "cuda":
        gpus = hardware.probe_gpus()
        return gpus[0].total_bytes if gpus else None
    return hardware.total_ram_bytes()

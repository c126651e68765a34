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
import time
import warnings
from pathlib import Path
from typing import Any

from autotune import knobs
from autotune.errors import (
    InvalidTargetError,
    KnobApplyError,
    NoMatchingProfileError,
    PipelineStateError,
    ProfileError,
    ProfileMismatchError,
)
from autotune.knobs import ApplyContext, Value
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.knobs.space import check_available, check_values
from autotune.units import format_size, parse_size

log = logging.getLogger(__name__)

PROFILE_DIR_ENV = "AUTOTUNE_PROFILE_DIR"
DEFAULT_PROFILE_DIR = "profiles"


@dataclasses.dataclass(frozen=True)
class AppliedProfile:
    """What `apply_profile` did: which file, which of its entries, the settings in the order they
    were applied, and what changed on the pipeline's dtype or device. `str()` says it all."""

    profile: Profile
    applied: tuple[tuple[str, Value], ...]
    device: str
    #: The profile file (None for a `Profile` object passed in).
    source: str | None = None
    #: The entry whose settings were applied: the profile's best, or an alternative for `max_vram`.
    entry: ProfileEntry | None = None
    #: "best" or "alternative N" (1-based, in the profile's order).
    choice: str = "best"
    #: The ceiling the entry was picked for (bytes), when `max_vram` was given.
    max_vram: int | None = None
    #: Why this file was chosen among the matching ones (auto-discovery only).
    reason: str | None = None
    #: Each component whose dtype or device changed: "unet: float32 -> bfloat16".
    changes: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Value]:
        return dict(self.applied)

    def __str__(self) -> str:
        defaults = {k.name: k.default for k in knobs.all_knobs()}
        changed = " ".join(f"{k}={v}" for k, v in self.applied if defaults.get(k) != v)
        lines = [f"profile  {self.source or '(in memory)'}"]
        if self.reason:
            lines.append(f"chosen   {self.reason}")
        entry = self.entry or self.profile.best
        why = f", the fastest under max_vram {format_size(self.max_vram)}" if self.max_vram is not None else ""
        lines.append(f"entry    {self.choice}{why}: {entry.latency_median_s:.3f} s median, "
                     f"peak {format_size(entry.peak_bytes)} ({entry.peak_metric})")
        lines.append(f"settings {changed or 'all defaults'}{' (others at defaults)' if changed else ''} "
                     f"on {self.device}")
        if self.changes:
            lines.append(f"changed  {'; '.join(self.changes)}")
        return "\n".join(lines)


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
    from autotune.knobs.probe import pipeline_context

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


def load_pipeline(profile: Profile | str | os.PathLike[str], *, max_vram: str | int | None = None) -> Any:
    """Build the pipeline the profile was tuned for, from the same model, in its dtype (with
    `max_vram`, in the dtype of the entry `apply_profile` picks for that ceiling)."""
    from autotune.models.pipelines import build_pipeline

    profile = _as_profile(profile)
    entry = choose_entry(profile, ceiling_bytes(max_vram) if max_vram is not None else None)[1]
    return build_pipeline(profile_model_source(profile), **knobs.load_kwargs(entry.settings))


def profile_model_source(profile: Profile) -> str:
    """Where to load the profile's model from: its `target.model` as written where that still
    names it (a built-in, a hub id, a folder relative to here), else the folder its recorded
    identity names (a relative path written from another working directory)."""
    from pathlib import Path

    from autotune.models.pipelines import BUILTIN_PREFIX

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
    max_vram: str | int | None = None,
    device: str | None = None,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    profile_dir: str | os.PathLike[str] | None = None,
    strict: bool = True,
    compile_artifacts: bool = True,
) -> AppliedProfile:
    """Apply a profile's settings to a fresh pipeline.

    With no profile, the one matching this pipeline (model, pipeline class, and the given
    height/width/batch) is looked up in `profile_dir`, else $AUTOTUNE_PROFILE_DIR, else ./profiles,
    and a log line says why it was chosen. A model or pipeline-class mismatch raises (a warning
    with strict=False); another device warns.

    `max_vram` ("6GB", or bytes) picks, without a new search, the fastest of the profile's entries
    (its best and its stored alternatives) whose measured peak fits that lower ceiling; a ceiling
    no entry fits raises `NoMatchingProfileError` naming the smallest entry's peak.
    Every change to a component's dtype or device is logged (and a half-precision pipeline turned
    into float32 warns); the returned handle says what was applied, from where and why.

    A compiled profile's artifacts (`autotune warmup`, compile_cache.py) are loaded before the
    first call when their key matches this machine (`compile_artifacts=False` skips them); else
    the first call compiles cold, with a warning naming what differs.
    """
    ceiling = ceiling_bytes(max_vram) if max_vram is not None else None
    source, reason = None, None
    if profile is None:
        path, reason = discover_profile(pipe, height=height, width=width, batch=batch,
                                        profile_dir=profile_dir, max_vram=ceiling)
        log.info("apply_profile: %s", reason)
        profile = source = str(path)
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
    choice, entry = choose_entry(profile, ceiling)
    if ceiling is not None:
        log.info("apply_profile: %s of %s fits max_vram %s: %.3f s median, peak %s", choice,
                 source or "the profile", format_size(ceiling), entry.latency_median_s, format_size(entry.peak_bytes))
    device = device or profile.target.device
    require_device(device)
    before = placement(pipe)
    applied = apply_settings(pipe, entry.settings, device)
    changes = placement_changes(before, placement(pipe))
    for change in changes:
        log.info("apply_profile changed %s", change)
    _warn_upcast(before, placement(pipe), dict(applied))
    log.info("applied profile %s (%s): %s", source or "(in memory)", choice, dict(applied))
    if compile_artifacts and source and choice == "best" and profile.compile_artifacts \
            and knobs.compiles(entry.settings):
        from autotune.profiles import compile_cache

        key = compile_cache.artifact_key(entry.settings, profile.target, device)
        compile_cache.load(profile.compile_artifacts, Path(source), key)
    return AppliedProfile(profile=profile, applied=applied, device=device, source=source, entry=entry,
                          choice=choice, max_vram=ceiling, reason=reason, changes=tuple(changes))


def ceiling_bytes(max_vram: str | int) -> int:
    """`max_vram` as bytes: a size like '6GB' (GiB, see units.py) or a positive int."""
    if isinstance(max_vram, str):
        return parse_size(max_vram, what="max_vram")
    if isinstance(max_vram, bool) or not isinstance(max_vram, int) or max_vram <= 0:
        raise InvalidTargetError(f"max_vram must be a size like '6GB' or a number of bytes > 0, got {max_vram!r}")
    return max_vram


def profile_entries(profile: Profile) -> list[tuple[str, ProfileEntry]]:
    """The profile's best and its alternatives, labelled as `AppliedProfile.choice` names them."""
    return [("best", profile.best)] + [(f"alternative {i}", alt) for i, alt in enumerate(profile.alternatives, 1)]


def choose_entry(profile: Profile, max_vram: int | None) -> tuple[str, ProfileEntry]:
    """The best entry, or under a lower ceiling the fastest entry whose measured peak fits it (the
    best itself when it fits: it is the search's confirmed answer)."""
    entries = profile_entries(profile)
    if max_vram is None:
        return entries[0]
    fitting = [(label, e) for label, e in entries if e.peak_bytes <= max_vram]
    if not fitting:
        label, smallest = min(entries, key=lambda item: item[1].peak_bytes)
        raise NoMatchingProfileError(
            f"no entry of this profile fits max_vram {format_size(max_vram)} ({max_vram} bytes): the "
            f"smallest, {label} ({_changed(smallest.settings)}), peaks at {format_size(smallest.peak_bytes)} "
            f"({smallest.peak_bytes} bytes); raise max_vram or run `autotune search --max-vram "
            f"{_gib(max_vram)}` for this ceiling"
        )
    if fitting[0][0] == "best":
        return fitting[0]
    if max_vram > profile.target.max_vram:
        log.info("max_vram %s is above the %s the profile was searched under: a search with the higher "
                 "ceiling may find faster settings", format_size(max_vram), format_size(profile.target.max_vram))
    return min(fitting, key=lambda item: item[1].latency_median_s)


def _changed(settings: dict[str, Value]) -> str:
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    return " ".join(f"{k}={v}" for k, v in settings.items() if defaults.get(k) != v) or "defaults"


def _gib(num_bytes: int) -> str:
    """A size as `--max-vram` takes it: '6GB', '3.35MB' (binary units, see units.py)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if num_bytes >= size:
            return f"{num_bytes / size:.3g}{unit}"
    return f"{num_bytes}B"


#: component -> (dtypes of its parameters, devices of its parameters), e.g. ("bfloat16", "cpu")
Placement = dict[str, tuple[str, str]]


def placement(pipe: Any) -> Placement:
    """Each torch component's parameter dtypes and devices, joined ("float8_e4m3fn+float32")."""
    import torch

    found: Placement = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            params = list(component.parameters())
            if params:
                dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
                devices = sorted({p.device.type for p in params})
                found[name] = ("+".join(dtypes), "+".join(devices))
    return found


def placement_changes(before: Placement, after: Placement) -> list[str]:
    """'unet: dtype float32 -> bfloat16', 'vae: device cpu -> cuda' for each component that changed."""
    changes = []
    for name in sorted(set(before) & set(after)):
        for i, what in enumerate(("dtype", "device")):  # not a knob: a tensor's properties
            if before[name][i] != after[name][i]:
                changes.append(f"{name}: {what} {before[name][i]} -> {after[name][i]}")
    return changes


_HALF = {"float16", "bfloat16"}


def _warn_upcast(before: Placement, after: Placement, settings: dict[str, Value]) -> None:
    """A user's half-precision pipeline turned into float32 by the profile costs twice the memory:
    say so (naming the settings that decide how weights are stored), and how to keep it."""
    upcast = sorted(name for name in set(before) & set(after)
                    if before[name][0] in _HALF and after[name][0] == "float32")
    if upcast:
        was = before[upcast[0]][0]
        storing = " ".join(f"{k}={v}" for k, v in knobs.load_key(settings))
        warnings.warn(
            f"the profile's {storing} converted {', '.join(upcast)} from {was} to float32 (about "
            f"twice the weight memory); to keep {was}, apply a profile searched and won in that dtype, "
            "or load the pipeline with load_pipeline(profile)",
            stacklevel=3,
        )


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
    from autotune.models.pipelines import model_identity

    return model_identity(str(getattr(pipe, "name_or_path", "") or ""))


def profile_identities(profile: Profile) -> list[str]:
    """The identities a profile's model may have: `target.model` resolved here, and the identity
    recorded when it was made (if any)."""
    from autotune.models.pipelines import model_identity

    found = [model_identity(profile.target.model)]
    stored = profile.fingerprint.get(MODEL_IDENTITY_KEY)
    if isinstance(stored, str) and stored and stored not in found:
        found.append(stored)
    return found


def matches_model(profile: Profile, identity: str) -> bool:
    from autotune.models.pipelines import same_model

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
    max_vram: int | None = None,
) -> Path:
    """The best-matching profile file for this pipeline and size (see `rank_profiles`)."""
    return discover_profile(pipe, height=height, width=width, batch=batch, profile_dir=profile_dir,
                            max_vram=max_vram)[0]


def discover_profile(
    pipe: Any,
    *,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    profile_dir: str | os.PathLike[str] | None = None,
    max_vram: int | None = None,
) -> tuple[Path, str]:
    """The best-matching profile file and one sentence saying why it won over the others."""
    folder = Path(profile_dir) if profile_dir else profile_dir_default()
    candidates = matching_profiles(pipe, folder, height=height, width=width, batch=batch)
    ranked = rank_profiles(candidates, max_vram)
    if not ranked:  # none has an entry under max_vram
        assert max_vram is not None
        peak, path = min((min(e.peak_bytes for _, e in profile_entries(p)), path) for p, path in candidates)
        raise NoMatchingProfileError(
            f"no profile in {str(folder)!r} for this pipeline has an entry that fits max_vram "
            f"{format_size(max_vram)} ({max_vram} bytes): the smallest peak is {format_size(peak)} in "
            f"{path.name}; raise max_vram or run `autotune search --max-vram {_gib(max_vram)}`"
        )
    return ranked[0].path, ranked[0].explain(ranked, folder)


def matching_profiles(pipe: Any, folder: Path, *, height: int | None = None, width: int | None = None,
                      batch: int | None = None) -> list[tuple[Profile, Path]]:
    """Readable profiles in `folder` for this pipeline's model and class (and size, where given)."""
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
    return candidates


@dataclasses.dataclass(frozen=True)
class RankedProfile:
    """A candidate profile and the facts it is ranked by."""

    profile: Profile
    path: Path
    here: bool          # measured on this device
    fits: bool          # its ceiling fits this device's memory (unknown counts as fits)
    capacity: int | None
    latency_s: float    # of the entry that would be applied
    #: What decides the order, most important first (see rank_profiles).
    key: tuple

    def explain(self, ranked: list[RankedProfile], folder: Path) -> str:
        """'b.yaml, 1 of 3 matching profiles in 'profiles': measured on this device, unlike a.yaml'."""
        head = f"chose {self.path.name}"
        if len(ranked) == 1:
            return f"{head}, the only profile in {str(folder)!r} for this pipeline{self._trials()}"
        runner = ranked[1]
        why = self._why(runner)
        others = ", ".join(f"{r.path.name} ({r.latency_s:.3f} s{r._trials(short=True)})" for r in ranked[1:4])
        more = f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""
        return (f"{head} ({self.latency_s:.3f} s{self._trials(short=True)}) among {len(ranked)} matching "
                f"profiles in {str(folder)!r}: {why}; the others: {others}{more}")

    def _why(self, runner: RankedProfile) -> str:
        index = next((i for i, (a, b) in enumerate(zip(self.key, runner.key)) if a != b), len(self.key))
        name, t = runner.path.name, self.profile.target
        if index == 0:
            return (f"measured on this device, unlike {name} "
                    f"({runner.profile.fingerprint.get('device_name')})")
        if len(self.key) == 3:  # ranked for an explicit max_vram: fastest entry under it
            return (f"its fastest entry under max_vram is faster ({self.latency_s:.3f} s vs "
                    f"{runner.latency_s:.3f} s for {name})" if index == 1 else f"same numbers as {name}; first by name")
        if index == 1:
            return (f"its {format_size(t.max_vram)} ceiling fits this device's {format_size(self.capacity)}, "
                    f"{name}'s {format_size(runner.profile.target.max_vram)} does not")
        if index == 2:
            return (f"the largest ceiling this device holds ({format_size(t.max_vram)}; {name}: "
                    f"{format_size(runner.profile.target.max_vram)}), so the most memory it may use")
        if index == 3:
            return f"the fastest at this ceiling ({self.latency_s:.3f} s vs {runner.latency_s:.3f} s for {name})"
        return f"same numbers as {name}; first by name"

    def _trials(self, short: bool = False) -> str:
        search = self.profile.search
        if not search.get("trials_measured"):
            return ""
        stopped = search.get("stopped_by")
        note = f", stopped by {stopped}" if stopped and stopped != "trials" else ""
        return f", {search['trials_measured']} trials{note}" if short else \
            f" ({search['trials_measured']} trials measured{note})"


def rank_profiles(candidates: list[tuple[Profile, Path]], max_vram: int | None = None) -> list[RankedProfile]:
    """Candidates best first. Measured on this device first; then a ceiling this device can hold,
    the largest such (the most memory it may use is the fastest it can be); then the fastest.
    With an explicit `max_vram`, the device's capacity no longer decides: after "this device",
    the fastest entry under `max_vram` wins, and a profile with none is left out."""
    devices = {p.target.device for p, _ in candidates}
    here = {d: _current_device_name(d) for d in devices}
    capacity = {d: _current_device_memory(d) for d in devices}
    ranked = []
    for prof, path in candidates:
        t = prof.target
        on_here = prof.fingerprint.get("device_name") == here[t.device]
        card = capacity[t.device]
        fits = card is None or t.max_vram <= card
        if max_vram is None:
            latency = prof.best.latency_median_s
            key: tuple = (not on_here, not fits, -t.max_vram if fits else t.max_vram, latency, str(path))
        else:
            try:
                latency = choose_entry(prof, max_vram)[1].latency_median_s
            except NoMatchingProfileError:
                continue
            key = (not on_here, latency, str(path))
        ranked.append(RankedProfile(prof, path, on_here, fits, card, latency, key))
    return sorted(ranked, key=lambda r: r.key)


def _current_device_memory(device: str) -> int | None:
    from autotune import hardware

    if device == "cuda":
        gpus = hardware.probe_gpus()
        return gpus[0].total_bytes if gpus else None
    return hardware.total_ram_bytes()

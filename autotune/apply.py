"""Reapplying a profile in production: `load_pipeline(profile)` then `apply_profile(pipe, profile)`.

Settings go on in the registry's canonical stage order, the same order the search used, so two
fresh pipelines with one profile end up in identical module state.
"""
from __future__ import annotations

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
from autotune.knobs import ApplyContext, Context, Value
from autotune.profile import Profile
from autotune.space import check_available, check_values

log = logging.getLogger(__name__)

PROFILE_DIR_ENV = "AUTOTUNE_PROFILE_DIR"
DEFAULT_PROFILE_DIR = "profiles"
_HOOK_ATTRS = ("_hf_hook", "_diffusers_hook")


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
            if any(getattr(module, attr, None) is not None for attr in _HOOK_ATTRS):
                found.append(f"{comp_name}.{name}" if name else comp_name)
    return found


def apply_settings(pipe: Any, settings: dict[str, Value], device: str) -> tuple[tuple[str, Value], ...]:
    """Apply knob values (missing knobs take their default) in canonical order."""
    full = check_values({**{k.name: k.default for k in knobs.all_knobs()}, **settings})
    check_available(full, Context(device=device, components=pipeline_components(pipe)))
    ctx = ApplyContext(device=device)
    applied = []
    for knob in knobs.all_knobs():
        knob.apply(pipe, full[knob.name], ctx)
        applied.append((knob.name, full[knob.name]))
    return tuple(applied)


def load_pipeline(profile: Profile | str | os.PathLike[str]) -> Any:
    """Build the pipeline the profile was tuned for, from the same model, in its dtype."""
    from autotune.knobs.builtin import torch_dtype
    from autotune.pipelines import build_pipeline

    profile = _as_profile(profile)
    return build_pipeline(profile.target.model, torch_dtype=torch_dtype(profile.settings.get("dtype", "fp32")))


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
    if name and profile.target.model and name != profile.target.model:
        problems.append(f"it was tuned for model {profile.target.model!r}, not {name!r}")
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
    pipeline_class = type(pipe).__name__
    candidates: list[tuple[Profile, Path]] = []
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        try:
            prof = Profile.load(path)
        except ProfileError as exc:
            log.warning("skipping unreadable profile: %s", exc)
            continue
        t = prof.target
        if (t.model == model and t.pipeline_class in (None, pipeline_class)
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

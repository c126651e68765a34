"""Reapplying a profile in production: `load_pipeline(profile)` then `apply_profile(pipe, profile)`.

Thin on purpose: the profile is found (discovery.py), an entry chosen for the ceiling
(entries.py), and its settings go on through `knobs.settings.apply_settings`, the same code the
search measured with, so two fresh pipelines with one profile end up in identical module state.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from autotune import hardware, knobs
from autotune.errors import InvalidTargetError, PipelineStateError, ProfileMismatchError
from autotune.knobs import Value
from autotune.knobs.settings import apply_settings, hooked_modules
from autotune.models.builtins import BUILTIN_PREFIX
from autotune.models.identity import matches_model, pipe_identity, profile_identities
from autotune.models.pipelines import build_pipeline
from autotune.profiles.discovery import ChoiceReason, discover_profile
from autotune.profiles.entries import choose_entry
from autotune.profiles.placement_diff import placement, placement_changes, warn_upcast
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.units import format_size, size_bytes

log = logging.getLogger(__name__)


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
    #: Why this file was chosen among the matching ones, in a sentence (auto-discovery only).
    reason: str | None = None
    #: The same reason as a `ChoiceReason` (auto-discovery only).
    why: ChoiceReason | None = None
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


def load_pipeline(profile: Profile | str | os.PathLike[str], *, max_vram: str | int | None = None) -> Any:
    """Build the pipeline the profile was tuned for, from the same model, in its dtype (with
    `max_vram`, in the dtype of the entry `apply_profile` picks for that ceiling)."""
    profile = _as_profile(profile)
    entry = choose_entry(profile, size_bytes(max_vram) if max_vram is not None else None)[1]
    return build_pipeline(profile_model_source(profile), **knobs.load_kwargs(entry.settings))


def profile_model_source(profile: Profile) -> str:
    """Where to load the profile's model from: its `target.model` as written where that still
    names it (a built-in, a hub id, a folder relative to here), else the folder its recorded
    identity names (a relative path written from another working directory)."""
    model = profile.target.model
    stored = profile.fingerprint.model_identity
    if (not model.startswith(BUILTIN_PREFIX) and not Path(model).expanduser().exists()
            and stored and Path(stored).is_absolute() and Path(stored).is_dir()):
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
    ceiling = size_bytes(max_vram) if max_vram is not None else None
    source, reason, why = None, None, None
    if profile is None:
        found = discover_profile(pipe, height=height, width=width, batch=batch,
                                 profile_dir=profile_dir, max_vram=ceiling)
        log.info("apply_profile: %s", found.explanation)
        profile, source, reason, why = found.profile, str(found.path), found.explanation, found.reason
    elif not isinstance(profile, Profile):
        source = str(profile)
    profile = _as_profile(profile)
    _require_fresh(pipe)
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
    warn_upcast(before, placement(pipe), dict(applied))
    log.info("applied profile %s (%s): %s", source or "(in memory)", choice, dict(applied))
    if compile_artifacts and source and choice == "best":
        _load_compile_artifacts(profile, entry, Path(source), device)
    return AppliedProfile(profile=profile, applied=applied, device=device, source=source, entry=entry,
                          choice=choice, max_vram=ceiling, reason=reason, why=why,
                          changes=tuple(changes))


def _require_fresh(pipe: Any) -> None:
    """Settings go on a freshly loaded pipeline: offload or casting hooks already there would
    stack with the profile's."""
    hooked = hooked_modules(pipe)
    if hooked:
        raise PipelineStateError(
            f"the pipeline already carries offload/casting hooks ({', '.join(hooked[:3])}"
            f"{', ...' if len(hooked) > 3 else ''}); apply the profile to a freshly loaded pipeline"
        )


def _load_compile_artifacts(profile: Profile, entry: ProfileEntry, source: Path, device: str) -> None:
    """Load a compiled profile's artifacts before the first call (warns when their key differs)."""
    if profile.compile_artifacts and knobs.compiles(entry.settings):
        from autotune.profiles import compile_cache  # imports torch

        key = compile_cache.artifact_key(entry.settings, profile.target, device)
        compile_cache.load(profile.compile_artifacts, source, key)


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
    here = hardware.device_name(profile.target.device)
    there = profile.fingerprint.device_name
    if here and there and here != there:
        warnings.warn(
            f"profile was measured on {there!r}, this is {here!r}: its latency and memory numbers "
            "may not hold here; re-run `autotune search` on this device to be sure",
            stacklevel=3,
        )

"""autotune: measure, don't guess, the memory/speed settings of a diffusers pipeline.

Light on import (no torch, no diffusers, no CUDA init); the public API loads on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune._version import __version__

__all__ = ["AppliedProfile", "Profile", "apply_profile", "find_profile", "load_pipeline", "__version__"]

if TYPE_CHECKING:
    from autotune.profiles.apply import AppliedProfile, apply_profile, load_pipeline
    from autotune.profiles.discovery import find_profile
    from autotune.profiles.profile import Profile


def __getattr__(name: str) -> Any:
    if name in ("AppliedProfile", "apply_profile", "load_pipeline"):
        from autotune.profiles import apply

        return getattr(apply, name)
    if name == "find_profile":
        from autotune.profiles.discovery import find_profile

        return find_profile
    if name == "Profile":
        from autotune.profiles.profile import Profile

        return Profile
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")

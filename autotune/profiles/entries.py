"""Which of a profile's entries to apply: its best, or under a lower ceiling the fastest stored
entry whose measured peak fits it, without a new search."""
from __future__ import annotations

import logging

from autotune import knobs
from autotune.errors import NoMatchingProfileError
from autotune.knobs import Value
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.units import format_size, size_arg

log = logging.getLogger(__name__)


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
            f"smallest, {label} ({changed_settings(smallest.settings)}), peaks at "
            f"{format_size(smallest.peak_bytes)} ({smallest.peak_bytes} bytes); raise max_vram or run "
            f"`autotune search --max-vram {size_arg(max_vram)}` for this ceiling"
        )
    if fitting[0][0] == "best":
        return fitting[0]
    if max_vram > profile.target.max_vram:
        log.info("max_vram %s is above the %s the profile was searched under: a search with the higher "
                 "ceiling may find faster settings", format_size(max_vram), format_size(profile.target.max_vram))
    return min(fitting, key=lambda item: item[1].latency_median_s)


def smallest_peak(profile: Profile) -> int:
    """The lowest measured peak among the profile's entries (bytes)."""
    return min(e.peak_bytes for _, e in profile_entries(profile))


def changed_settings(settings: dict[str, Value]) -> str:
    """'dtype=bf16 vae_tiling=True': the values that differ from the knobs' defaults."""
    defaults = {k.name: k.default for k in knobs.all_knobs()}
    return " ".join(f"{k}={v}" for k, v in settings.items() if defaults.get(k) != v) or "defaults"

"""Finding the profile for a pipeline: the readable profiles in a folder that match its model,
class and size, ranked, with the reason the winner was chosen (a `ChoiceReason`, and a sentence).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
from pathlib import Path
from typing import Any

from autotune import hardware
from autotune.errors import NoMatchingProfileError, ProfileError
from autotune.models.identity import matches_model, pipe_identity
from autotune.profiles.entries import choose_entry, smallest_peak
from autotune.profiles.profile import Profile
from autotune.units import format_size, size_arg

log = logging.getLogger(__name__)

PROFILE_DIR_ENV = "AUTOTUNE_PROFILE_DIR"
DEFAULT_PROFILE_DIR = "profiles"


class ChoiceReason(enum.Enum):
    """Why discovery chose a profile over the runner-up (the first ranking key that differs)."""

    ONLY = "the only matching profile"
    THIS_DEVICE = "measured on this device"
    FITS_DEVICE = "its ceiling fits this device"
    LARGEST_CEILING = "the largest ceiling this device holds"
    FASTEST = "the fastest at this ceiling"
    FASTEST_UNDER_MAX_VRAM = "the fastest entry under max_vram"
    FIRST_BY_NAME = "same numbers; first by name"


@dataclasses.dataclass(frozen=True)
class Discovery:
    """The profile discovery chose, why (`reason`), and the sentence that says it to a user."""

    path: Path
    profile: Profile
    reason: ChoiceReason
    explanation: str


def profile_dir_default() -> Path:
    return Path(os.environ.get(PROFILE_DIR_ENV) or DEFAULT_PROFILE_DIR)


def find_profile(pipe: Any, *, height: int | None = None, width: int | None = None, batch: int | None = None,
                 profile_dir: str | os.PathLike[str] | None = None, max_vram: int | None = None) -> Path:
    """The best-matching profile file for this pipeline and size (see `rank_profiles`)."""
    return discover_profile(pipe, height=height, width=width, batch=batch, profile_dir=profile_dir,
                            max_vram=max_vram).path


def discover_profile(pipe: Any, *, height: int | None = None, width: int | None = None,
                     batch: int | None = None, profile_dir: str | os.PathLike[str] | None = None,
                     max_vram: int | None = None) -> Discovery:
    """The best-matching profile and why it won over the others."""
    folder = Path(profile_dir) if profile_dir else profile_dir_default()
    candidates = matching_profiles(pipe, folder, height=height, width=width, batch=batch)
    ranked = rank_profiles(candidates, max_vram)
    if not ranked:  # none has an entry under max_vram
        assert max_vram is not None
        peak, path = min((smallest_peak(p), path) for p, path in candidates)
        raise NoMatchingProfileError(
            f"no profile in {str(folder)!r} for this pipeline has an entry that fits max_vram "
            f"{format_size(max_vram)} ({max_vram} bytes): the smallest peak is {format_size(peak)} in "
            f"{path.name}; raise max_vram or run `autotune search --max-vram {size_arg(max_vram)}`"
        )
    winner = ranked[0]
    reason = winner.reason(ranked[1]) if len(ranked) > 1 else ChoiceReason.ONLY
    return Discovery(winner.path, winner.profile, reason, winner.explain(ranked, folder))


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

    @property
    def for_max_vram(self) -> bool:
        """Ranked for an explicit max_vram (a shorter key: this device, then the fastest entry)."""
        return len(self.key) == 3

    def reason(self, runner: RankedProfile) -> ChoiceReason:
        """The first ranking key on which this profile beats `runner`."""
        index = next((i for i, (a, b) in enumerate(zip(self.key, runner.key)) if a != b), len(self.key))
        if index == 0:
            return ChoiceReason.THIS_DEVICE
        if self.for_max_vram:
            return ChoiceReason.FASTEST_UNDER_MAX_VRAM if index == 1 else ChoiceReason.FIRST_BY_NAME
        return {1: ChoiceReason.FITS_DEVICE, 2: ChoiceReason.LARGEST_CEILING,
                3: ChoiceReason.FASTEST}.get(index, ChoiceReason.FIRST_BY_NAME)

    def explain(self, ranked: list[RankedProfile], folder: Path) -> str:
        """'b.yaml, 1 of 3 matching profiles in 'profiles': measured on this device, unlike a.yaml'."""
        head = f"chose {self.path.name}"
        if len(ranked) == 1:
            return f"{head}, the only profile in {str(folder)!r} for this pipeline{self._trials()}"
        why = self._why(ranked[1])
        others = ", ".join(f"{r.path.name} ({r.latency_s:.3f} s{r._trials(short=True)})" for r in ranked[1:4])
        more = f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""
        return (f"{head} ({self.latency_s:.3f} s{self._trials(short=True)}) among {len(ranked)} matching "
                f"profiles in {str(folder)!r}: {why}; the others: {others}{more}")

    def _why(self, runner: RankedProfile) -> str:
        name, t, theirs = runner.path.name, self.profile.target, runner.profile.target
        reason = self.reason(runner)
        if reason is ChoiceReason.THIS_DEVICE:
            return f"measured on this device, unlike {name} ({runner.profile.fingerprint.device_name})"
        if reason is ChoiceReason.FASTEST_UNDER_MAX_VRAM:
            return (f"its fastest entry under max_vram is faster ({self.latency_s:.3f} s vs "
                    f"{runner.latency_s:.3f} s for {name})")
        if reason is ChoiceReason.FITS_DEVICE:
            return (f"its {format_size(t.max_vram)} ceiling fits this device's {format_size(self.capacity)}, "
                    f"{name}'s {format_size(theirs.max_vram)} does not")
        if reason is ChoiceReason.LARGEST_CEILING:
            return (f"the largest ceiling this device holds ({format_size(t.max_vram)}; {name}: "
                    f"{format_size(theirs.max_vram)}), so the most memory it may use")
        if reason is ChoiceReason.FASTEST:
            return f"the fastest at this ceiling ({self.latency_s:.3f} s vs {runner.latency_s:.3f} s for {name})"
        return f"same numbers as {name}; first by name"

    def _trials(self, short: bool = False) -> str:
        search = self.profile.search
        if not search.trials_measured:
            return ""
        stopped = search.stopped_by
        note = f", stopped by {stopped}" if stopped and stopped != "trials" else ""
        return f", {search.trials_measured} trials{note}" if short else \
            f" ({search.trials_measured} trials measured{note})"


def rank_profiles(candidates: list[tuple[Profile, Path]], max_vram: int | None = None) -> list[RankedProfile]:
    """Candidates best first. Measured on this device first; then a ceiling this device can hold,
    the largest such (the most memory it may use is the fastest it can be); then the fastest.
    With an explicit `max_vram`, the device's capacity no longer decides: after "this device",
    the fastest entry under `max_vram` wins, and a profile with none is left out."""
    devices = {p.target.device for p, _ in candidates}
    here = {d: hardware.device_name(d) for d in devices}
    capacity = {d: hardware.device_memory(d) for d in devices}
    ranked = []
    for prof, path in candidates:
        t = prof.target
        on_here = prof.fingerprint.device_name == here[t.device]
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

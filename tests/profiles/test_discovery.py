"""Profile discovery: which matching profile wins, and the reason as a `ChoiceReason`."""
from __future__ import annotations

from pathlib import Path

import pytest

from autotune.profiles.discovery import ChoiceReason, rank_profiles
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target


def profile(latency: float, *, device_name: str = "This CPU", ceiling: int = 2**30) -> Profile:
    return Profile(
        target=Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=ceiling,
                      device="cpu"),
        fingerprint={"device": "cpu", "device_name": device_name},
        best=ProfileEntry(settings={}, latency_median_s=latency, latency_p90_s=latency,
                          peak_bytes=2**20, peak_metric="cpu_live_tensor_peak", runs=3),
    )


@pytest.fixture(autouse=True)
def this_cpu(monkeypatch):
    from autotune import hardware

    monkeypatch.setattr(hardware, "device_name", lambda device: "This CPU")
    monkeypatch.setattr(hardware, "device_memory", lambda device: 8 * 2**30)


def winner_and_reason(*candidates: Profile, max_vram: int | None = None) -> tuple[str, ChoiceReason]:
    ranked = rank_profiles([(p, Path(f"{i}.yaml")) for i, p in enumerate(candidates)], max_vram)
    return ranked[0].path.name, ranked[0].reason(ranked[1])


def test_this_device_decides_first():
    assert winner_and_reason(profile(0.5, device_name="Other"), profile(0.9)) == ("1.yaml", ChoiceReason.THIS_DEVICE)


def test_a_ceiling_this_device_holds_then_the_largest_then_the_fastest():
    assert winner_and_reason(profile(0.5, ceiling=16 * 2**30), profile(0.9)) == ("1.yaml", ChoiceReason.FITS_DEVICE)
    assert winner_and_reason(profile(0.5), profile(0.9, ceiling=4 * 2**30)) == ("1.yaml", ChoiceReason.LARGEST_CEILING)
    assert winner_and_reason(profile(0.9), profile(0.5)) == ("1.yaml", ChoiceReason.FASTEST)
    assert winner_and_reason(profile(0.5), profile(0.5)) == ("0.yaml", ChoiceReason.FIRST_BY_NAME)


def test_under_an_explicit_max_vram_the_fastest_fitting_entry_wins():
    assert winner_and_reason(profile(0.9), profile(0.5), max_vram=2**30) == ("1.yaml", ChoiceReason.FASTEST_UNDER_MAX_VRAM)


def test_every_reason_reads_as_words():
    assert all(isinstance(r.value, str) and r.value for r in ChoiceReason)

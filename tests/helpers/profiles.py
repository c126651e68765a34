"""Small profiles written by hand, for the tests of the profile, its discovery and the CLI."""
from __future__ import annotations

from autotune import knobs
from autotune.hardware import cpu_name
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target


def tiny_profile(settings: dict | None = None, *, max_vram: int = 2**30, latency: float = 1.0,
                 peak: int = 2**20, device: str = "cpu", device_name: str = "Test CPU",
                 height: int = 64, batch: int = 1, versions: dict | None = None) -> Profile:
    full = {**{k.name: k.default for k in knobs.all_knobs()}, **(settings or {})}
    return Profile(
        target=Target(model="builtin:tiny-sd", height=height, width=64, batch=batch, steps=2,
                      max_vram=max_vram, device=device, pipeline_class="StableDiffusionPipeline"),
        fingerprint={"device": device, "device_name": device_name,
                     "versions": versions or {"torch": "2.13.0", "diffusers": "0.42.1"}},
        best=ProfileEntry(settings=full, latency_median_s=latency, latency_p90_s=latency * 1.1,
                          peak_bytes=peak, peak_metric="cpu_live_tensor_peak", runs=3),
        search={"trials_measured": 4},
    )


def make_profile(settings=None, *, model="builtin:tiny-sd", height=64, width=64, batch=1,
                 device_name=None, latency=1.0) -> Profile:
    full = {**{k.name: k.default for k in knobs.all_knobs()}, **(settings or {})}
    return Profile(
        target=Target(model=model, height=height, width=width, batch=batch, steps=2, max_vram=2**30,
                      device="cpu", pipeline_class="StableDiffusionPipeline"),
        fingerprint={"device": "cpu", "device_name": device_name or cpu_name()},
        best=ProfileEntry(settings=full, latency_median_s=latency, latency_p90_s=latency,
                          peak_bytes=2**20, peak_metric="cpu_live_tensor_peak", runs=3),
    )

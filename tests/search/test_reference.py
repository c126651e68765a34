"""The quality reference: made once per target without the ceiling, with offload where it does
not fit the device, and said missing (with why) when it cannot be made."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers.fakes import fake_measurement

from autotune.measure import quality
from autotune.search import reference
from autotune.knobs.space import SearchSpace
from autotune.knobs import Context
from autotune.target import NO_CEILING, Target

MiB = 2**20
TARGET = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=8 * MiB)
DEFAULT = SearchSpace(Context(device="cpu", components=frozenset({"unet", "vae"}))).default()
IMAGE = np.linspace(0, 1, 3 * 16 * 16, dtype=np.float32).reshape(1, 16, 16, 3)


class Device:
    """Runs out of memory without offload when `fits_without_offload` is False."""

    def __init__(self, fits_without_offload=True, output=IMAGE):
        self.jobs, self.fits, self.output = [], fits_without_offload, output

    def __call__(self, job, *, timeout_s=None):
        self.jobs.append(job)
        if not self.fits and job.assignment.get("offload", "none") == "none":
            return fake_measurement(job, status="oom", error="OutOfMemoryError: CUDA out of memory")
        quality.save_reference(Path(job.save_reference), self.output, None)
        return fake_measurement(job)


def located(tmp_path):
    return reference.locate(tmp_path, TARGET, DEFAULT, "fp32", 0, "AMD EPYC 7B13")


def test_made_without_the_ceiling_once_then_found(tmp_path):
    device = Device()
    made = reference.make(located(tmp_path), TARGET, device, warmup=1, seed=0, can_offload=True)
    assert made.exists and made.made == "without the memory ceiling"
    [job] = device.jobs
    assert job.target == TARGET and job.runs == 1 and job.assignment == made.settings  # CPU: never enforced
    assert made.settings["dtype"] == "fp32" and "amd-epyc-7b13" in made.key and "-fp32-seed0-" in made.key
    again = reference.make(located(tmp_path), TARGET, device, warmup=1, seed=0, can_offload=True)
    assert len(device.jobs) == 1 and again.exists and again.settings == made.settings


def test_on_cuda_it_runs_without_the_ceiling():
    import dataclasses

    cuda = dataclasses.replace(TARGET, device="cuda")
    assert reference.without_ceiling(cuda).max_vram == NO_CEILING
    assert reference.without_ceiling(TARGET) == TARGET


def test_the_key_ignores_the_ceiling_but_not_the_dtype_or_seed(tmp_path):
    import dataclasses

    key = reference.reference_key(TARGET, "fp32", 0, "gpu")
    assert reference.reference_key(dataclasses.replace(TARGET, max_vram=2**30), "fp32", 0, "gpu") == key
    assert reference.reference_key(TARGET, "fp16", 0, "gpu") != key
    assert reference.reference_key(TARGET, "fp32", 1, "gpu") != key


def test_offload_when_it_does_not_fit_the_device(tmp_path):
    device = Device(fits_without_offload=False)
    made = reference.make(located(tmp_path), TARGET, device, warmup=1, seed=0, can_offload=True)
    assert made.exists and made.settings["offload"] == reference.FALLBACK_OFFLOAD
    assert "offload=sequential" in made.made and len(device.jobs) == 2
    found = reference.make(located(tmp_path), TARGET, Device(), warmup=1, seed=0, can_offload=True)
    assert found.settings["offload"] == reference.FALLBACK_OFFLOAD  # read back from its sidecar


def test_says_why_when_it_cannot_be_made(tmp_path):
    missing = reference.make(located(tmp_path), TARGET, Device(fits_without_offload=False), warmup=1, seed=0,
                             can_offload=False)
    assert not missing.exists and "ended in oom: OutOfMemoryError" in missing.problem
    flat = reference.make(located(tmp_path / "flat"), TARGET, Device(output=np.zeros_like(IMAGE)), warmup=1,
                          seed=0, can_offload=False)
    assert not flat.exists and flat.problem == "the reference output is one flat colour"
    torn = located(tmp_path / "torn")
    torn.path.parent.mkdir()
    torn.path.write_bytes(b"")
    read = reference.make(torn, TARGET, Device(), warmup=1, seed=0, can_offload=False)
    assert not read.exists and "cannot be read" in read.problem

"""One reference of builtin:tiny-sd and two trials scored against it (an exact knob, a lossy
dtype), shared by the per-call tests of the denoiser and the VAE decode: three pipeline runs once."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from autotune.knobs import all_knobs
from autotune.measure import quality
from autotune.measure import worker as _worker
from autotune.measure.measurer import TrialJob
from autotune.measure.records import Measurement
from autotune.target import NO_CEILING, Target

DEFAULTS = {k.name: k.default for k in all_knobs()}
TARGET = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=3, max_vram=NO_CEILING)


@dataclasses.dataclass(frozen=True)
class ScoredTrials:
    stored: dict[str, Any]  # the reference file, as quality.load_reference reads it
    exact: Measurement  # channels_last
    lossy: Measurement  # bf16


@pytest.fixture(scope="session")
def scored_trials(tmp_path_factory: pytest.TempPathFactory) -> ScoredTrials:
    ref = tmp_path_factory.mktemp("reference") / "ref.npz"
    _worker.measure(TrialJob(TARGET, DEFAULTS, runs=1, max_runs=1, save_reference=str(ref)))

    def trial(**settings: Any) -> Measurement:
        return _worker.measure(TrialJob(TARGET, {**DEFAULTS, **settings}, runs=1, max_runs=1, reference=str(ref)))

    return ScoredTrials(quality.load_reference(ref), trial(channels_last=True), trial(dtype="bf16"))  # the knob on purpose

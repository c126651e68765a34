"""Shared fixtures. Tests run offline: HF_HUB_OFFLINE makes unknown hub ids fail at once."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from autotune.measure import Measurement, TrialJob  # noqa: E402

TINY = "builtin:tiny-sd"


@pytest.fixture
def tiny_pipe():
    """A fresh tiny SD pipeline (seeded random weights, ~0.1 s to build after the first import)."""
    from autotune.pipelines import build_pipeline

    return build_pipeline(TINY)


def fake_measurement(job: TrialJob, *, latency: float = 1.0, peak: int = 2**20,
                     status: str = "ok", error: str | None = None) -> Measurement:
    return Measurement(status=status, backend="fake", device_name="fake", peak_metric="fake_peak",
                       latencies_s=[latency] * 3 if status == "ok" else [],
                       peak_bytes=peak if status == "ok" else None, error=error)


class FakeMeasurer:
    """Deterministic stand-in for the worker: latency and peak are functions of the assignment."""

    def __init__(self, cost=None):
        self.jobs: list[TrialJob] = []
        self.cost = cost or (lambda a: (1.0, 2**20))

    def __call__(self, job: TrialJob) -> Measurement:
        self.jobs.append(job)
        result = self.cost(job.assignment)
        if isinstance(result, Measurement):
            return result
        latency, peak = result
        return fake_measurement(job, latency=latency, peak=peak)

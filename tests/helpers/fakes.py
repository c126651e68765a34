"""Fakes of the search's collaborators: a deterministic measurer and its measurements."""
from __future__ import annotations

from autotune.measure.records import Measurement, TrialJob


def fake_measurement(job: TrialJob, *, latency: float = 1.0, peak: int = 2**20,
                     status: str = "ok", error: str | None = None) -> Measurement:
    return Measurement(status=status, backend="fake", device_name="fake", peak_metric="fake_peak",
                       latencies_s=[latency] * 3 if status == "ok" else [],
                       peak_bytes=peak if status == "ok" else None, error=error)


class FakeMeasurer:
    """Deterministic stand-in for the worker: latency and peak are functions of the assignment.

    With `rounds_cost` it can also confirm: `rounds_cost(assignment, round)` is the block median
    of that candidate in that round of the interleaved re-measurement."""

    def __init__(self, cost=None, rounds_cost=None):
        self.jobs: list[TrialJob] = []
        self.timeouts: list[float | None] = []
        self.cost = cost or (lambda a: (1.0, 2**20))
        self.compared: list[list[TrialJob]] = []
        self.groups: list[list[list[int]]] = []  # the workers of each session (job indices)
        if rounds_cost is not None:
            self.rounds_cost = rounds_cost
            self.compare = self._compare

    def __call__(self, job: TrialJob, *, timeout_s: float | None = None) -> Measurement:
        self.jobs.append(job)
        self.timeouts.append(timeout_s)
        result = self.cost(job.assignment)
        if isinstance(result, Measurement):
            return result
        latency, peak = result
        return fake_measurement(job, latency=latency, peak=peak)

    def _compare(self, jobs, rounds, runs_per_round, deadline, groups=None):
        self.compared.append(list(jobs))
        self.groups.append([list(g) for g in groups] if groups is not None else [[i] for i in range(len(jobs))])
        return {i: [self.rounds_cost(job.assignment, r) for r in range(rounds)] for i, job in enumerate(jobs)}, ""

"""The worker seam: a trial's crash, hang or kill becomes a FAIL with the reason, never a hang."""
from __future__ import annotations

import dataclasses
import sys

import pytest

from autotune.errors import InvalidTargetError
from autotune.measure import Measurement, SubprocessMeasurer, TrialJob
from autotune.target import Target


@pytest.fixture
def job() -> TrialJob:
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    return TrialJob(target, {"dtype": "fp32"}, warmup=1, runs=2)


def measurer(code: str, **kwargs) -> SubprocessMeasurer:
    return SubprocessMeasurer(worker_command=[sys.executable, "-c", code], **kwargs)


def test_timeout_is_a_failure_with_the_reason(job):
    result = measurer("import time; time.sleep(30)", timeout_s=1)(job)
    assert result.status == "failed"
    assert "timed out after 1 s" in result.error


def test_killed_worker_names_the_signal(job):
    result = measurer("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")(job)
    assert result.status == "failed"
    assert result.error == "worker killed by SIGKILL"


def test_crashing_worker_reports_its_last_line_and_its_log(job, tmp_path):
    numbered = dataclasses.replace(job, number=7)
    result = measurer("raise ValueError('boom in apply')", log_dir=tmp_path)(numbered)
    assert result.status == "failed"
    assert result.error.startswith("worker exited with code 1")
    assert "ValueError: boom in apply" in result.error
    assert result.log_path == str(tmp_path / "trial-0007.log")  # named by the study's trial number
    assert "boom in apply" in (tmp_path / "trial-0007.log").read_text()


def test_a_target_no_trial_can_run_stops_the_search(job):
    code = ("import json, sys; open(sys.argv[2], 'w').write(json.dumps("
            "{'unrunnable': '--max-vram is below the CUDA context'})); sys.exit(3)")
    with pytest.raises(InvalidTargetError, match="below the CUDA context"):
        measurer(code)(job)


def test_job_round_trips_through_json(job):
    assert TrialJob.from_dict(job.to_dict()) == job


def test_measurement_statistics():
    m = Measurement(status="ok", backend="x", device_name="x", peak_metric="p",
                    latencies_s=[3.0, 1.0, 2.0, 10.0, 4.0])
    assert m.latency_median_s == 3.0
    assert m.latency_p90_s == 10.0
    assert Measurement.from_dict(m.to_dict()) == m


def test_real_worker_measures_the_tiny_pipeline(job, tmp_path):
    result = SubprocessMeasurer(timeout_s=300, log_dir=tmp_path)(job)
    assert result.status == "ok", result.error
    assert result.backend == "cpu" and result.peak_metric == "cpu_live_tensor_peak"
    assert len(result.latencies_s) == 2 and all(t > 0 for t in result.latencies_s)
    # The tracker is seeded with the weights: the peak is at least the resident weights.
    assert result.peak_bytes >= result.memory["resident_weights"] > 0
    assert result.memory["peak_rss"] > result.peak_bytes


def test_unnumbered_runs_never_overwrite_earlier_logs(job, tmp_path):
    measurer("raise ValueError('first')", log_dir=tmp_path)(job)
    measurer("raise ValueError('second')", log_dir=tmp_path)(job)  # a new measurer, same folder
    assert "first" in (tmp_path / "run-0001.log").read_text()
    assert "second" in (tmp_path / "run-0002.log").read_text()

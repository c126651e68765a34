"""The worker seam: a trial's crash, hang or kill becomes a FAIL with the reason, never a hang."""
from __future__ import annotations

import dataclasses
import statistics
import sys
import types

import pytest

from autotune.errors import InvalidTargetError
from autotune.measure.measurer import Measurement, SubprocessMeasurer, TrialJob
from autotune.measure.timing import NEW_WORKER_WARMUP
from autotune.target import Target


@pytest.fixture
def job() -> TrialJob:
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**30)
    return TrialJob(target, {"dtype": "fp32"}, warmup=1, runs=2, max_runs=2)


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
    code = ("import json, os, sys; sys.stdin.readline(); os.write(int(sys.argv[1]), json.dumps("
            "{'unrunnable': '--max-vram is below the CUDA context'}).encode() + b'\\n')")
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
    assert result.peak_bytes >= result.memory.resident_weights > 0
    assert result.memory.peak_rss > result.peak_bytes
    # The parent sampled the worker's resident set during the trial: this trial's own peak.
    assert result.memory.host_rss_peak >= result.memory.host_rss_before > result.peak_bytes


def test_unnumbered_runs_never_overwrite_earlier_logs(job, tmp_path):
    measurer("raise ValueError('first')", log_dir=tmp_path)(job)
    measurer("raise ValueError('second')", log_dir=tmp_path)(job)  # a new measurer, same folder
    assert "first" in (tmp_path / "run-0001.log").read_text()
    assert "second" in (tmp_path / "run-0002.log").read_text()


# ---- the warm worker ------------------------------------------------------------------------------

@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_a_warm_worker_measures_trial_after_trial_and_says_where_the_time_went(job, tmp_path):
    with SubprocessMeasurer(timeout_s=300, log_dir=tmp_path) as measure:
        first = measure(dataclasses.replace(job, number=0))
        second = measure(dataclasses.replace(job, number=1, assignment={"dtype": "bf16"}))
    assert first.status == second.status == "ok"
    assert first.device_info.worker_pid == second.device_info.worker_pid
    assert first.phases.spawn_s > 0 and second.phases.spawn_s is None  # start-up paid once
    assert first.phases.import_s is not None and second.phases.import_s is None
    # A new worker's first runs read slow: its trial discards more of them than a warm one's.
    assert len(first.phases.warmup_s) == NEW_WORKER_WARMUP and second.phases.warmup_s == ()
    p = second.phases
    for phase in ("build_s", "apply_s", "first_run_s", "timed_s", "wall_s"):
        assert getattr(p, phase) > 0, phase
    # The phases happened inside the wall: what is not the runs is overhead, and some of it is
    # real (the build and the settings are not runs).
    assert p.first_run_s + p.timed_s < p.wall_s
    assert 0 < p.build_s + p.apply_s <= p.overhead_s < p.wall_s
    # The timed runs took at least their latencies; the statistics are those of the latencies.
    assert sum(second.latencies_s) <= p.timed_s
    assert second.timing.runs == len(second.latencies_s) == 2
    assert second.timing.median_s == pytest.approx(statistics.median(second.latencies_s))
    assert second.timing.min_s == min(second.latencies_s) and second.timing.max_s == max(second.latencies_s)
    assert "trial bf16" not in (tmp_path / "trial-0000.log").read_text()  # each trial its own log
    assert "'bf16'" in (tmp_path / "trial-0001.log").read_text()


@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_a_trial_that_leaves_state_behind_gets_a_fresh_worker_next(job, tmp_path, monkeypatch):
    from autotune.measure import measurer as measure_module

    monkeypatch.setattr(measure_module, "leaves_process_state", lambda a: a.get("dtype") == "bf16")
    with SubprocessMeasurer(timeout_s=300) as measure:
        a = measure(job)
        b = measure(dataclasses.replace(job, assignment={"dtype": "bf16"}))  # taints its worker
        c = measure(job)
    assert a.device_info.worker_pid == b.device_info.worker_pid != c.device_info.worker_pid
    assert c.phases.spawn_s is not None


def test_compile_is_the_knob_that_needs_a_fresh_process():
    assert measure_module_leaves({"compile": "full"}) and not measure_module_leaves({"dtype": "fp16"})


def measure_module_leaves(assignment):
    from autotune.measure.measurer import leaves_process_state

    return leaves_process_state(assignment)


def test_a_budget_stop_is_named_as_such(job):
    result = measurer("import sys, time; sys.stdin.readline(); time.sleep(30)", timeout_s=60)(job, timeout_s=1)
    assert result.status == "failed" and result.error == "stopped at the time budget after 1 s"


@pytest.mark.slow  # 15-30 s on 2 CPU cores: the fast tier keeps under 5 minutes
def test_compare_times_loaded_candidates_in_rounds(job, tmp_path, monkeypatch):
    import time

    jobs = [dataclasses.replace(job, number=1), dataclasses.replace(job, number=2, assignment={"dtype": "bf16"})]
    medians, note = SubprocessMeasurer(log_dir=tmp_path).compare(jobs, rounds=2, runs_per_round=2,
                                                                  deadline=time.monotonic() + 300)
    assert note == "" and sorted(medians) == [0, 1]
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in medians.values())
    assert (tmp_path / "trial-0002-confirm.log").exists()
    # grouped, both load into one worker: it starts once and times both
    started = []
    real_start = SubprocessMeasurer._start

    def start(self, *args):
        started.append(args[0].number)
        return real_start(self, *args)

    monkeypatch.setattr(SubprocessMeasurer, "_start", start)
    medians, note = SubprocessMeasurer(log_dir=tmp_path / "shared").compare(
        jobs, rounds=2, runs_per_round=1, deadline=time.monotonic() + 300, groups=[[0, 1]])
    assert note == "" and sorted(medians) == [0, 1] and all(len(v) == 2 for v in medians.values())
    assert started == [1]
    # after a trial, the first group takes the search's warm worker (no start), which the
    # comparison closes: the next one runs in a process of its own
    warm = SubprocessMeasurer(log_dir=tmp_path / "warm")
    trial = warm(dataclasses.replace(job, number=0))
    started.clear()
    medians, note = warm.compare(jobs, rounds=2, runs_per_round=1, deadline=time.monotonic() + 300, groups=[[0, 1]])
    assert note == "" and sorted(medians) == [0, 1] and started == [] and warm._worker is None
    warm.compare(jobs, rounds=1, runs_per_round=1, deadline=time.monotonic() + 300, groups=[[0, 1]])
    assert started == [1] and trial.device_info.worker_pid is not None


def test_a_comparison_never_takes_a_warm_worker_its_arm_would_leave_state_in(job, monkeypatch):
    from autotune.measure import measurer as measure_module

    measure = SubprocessMeasurer()
    fake = types.SimpleNamespace(tainted=False, alive=True)
    measure._worker, measure._worker_key = fake, (job.target.device, job.target.max_vram)
    monkeypatch.setattr(measure_module, "leaves_process_state", lambda a: a.get("dtype") == "bf16")
    assert measure._take_warm([dataclasses.replace(job, assignment={"dtype": "bf16"})]) is None
    assert measure._worker is fake
    assert measure._take_warm([job]) is fake and measure._worker is None  # handed over once
    assert measure._take_warm([job]) is None


def test_the_in_process_measurer_keeps_its_worker_warm(job):
    from autotune.measure.measurer import InProcessMeasurer

    measure = InProcessMeasurer()
    first = measure(job)
    second = measure(dataclasses.replace(job, assignment={"dtype": "bf16"}))
    assert first.status == second.status == "ok" and first.backend == "cpu"
    assert first.phases.device_setup_s is not None and second.phases.device_setup_s is None  # set up once
    assert len(first.phases.warmup_s) == NEW_WORKER_WARMUP and second.phases.warmup_s == ()
    for m in (first, second):
        assert len(m.latencies_s) == 2 and m.peak_bytes >= m.memory.resident_weights > 0
        assert 0 <= m.overhead_s < m.phases.wall_s


SHARED_WORKER = """
import os, sys
from autotune.measure import protocol
from autotune.measure.records import Measurement
channel = os.fdopen(int(sys.argv[-1]), "wb")
def say(answer):
    channel.write(protocol.encode(answer)); channel.flush()
for line in sys.stdin.buffer:
    request = protocol.decode_request(line)
    if isinstance(request, protocol.Setup):
        say(protocol.Ready(0.0, 0.0, os.getpid()))
    elif isinstance(request, protocol.Load) and request.slot == 1 and "{second}" == "failed":
        say(protocol.Failed("ValueError: boom")); sys.exit(1)
    elif isinstance(request, protocol.Load):
        status = "oom" if request.slot == 1 else "ok"
        say(protocol.Measured(Measurement(status=status, backend="fake", device_name="x", peak_metric="p")))
    elif isinstance(request, protocol.Runs):
        say(protocol.Latencies([0.1 * (request.slot + 1)]))
    else:
        break
"""


@pytest.mark.parametrize("second", ["oom", "failed"])
def test_a_candidate_that_cannot_load_in_a_shared_worker(job, second):
    # out of memory: that arm is out, the one loaded beside it is timed; a failure ends the
    # worker, and the arm it held before goes with it
    import time

    jobs = [dataclasses.replace(job, number=1), dataclasses.replace(job, number=2)]
    medians, note = measurer(SHARED_WORKER.format(second=second)).compare(
        jobs, rounds=2, runs_per_round=1, deadline=time.monotonic() + 60, groups=[[0, 1]])
    if second == "oom":
        assert medians == {0: [0.1, 0.1]} and note == "trial 2 could not be reloaded (oom)"
    else:
        assert medians == {} and note == "trial 2 could not be reloaded (ValueError: boom)"


def test_each_arm_leads_a_round_in_turn_and_only_complete_rounds_are_kept():
    from autotune.measure.measurer import complete_rounds, round_order

    orders = [round_order([4, 7, 9], r) for r in range(3)]
    assert orders == [[4, 7, 9], [7, 9, 4], [9, 4, 7]]
    assert [o[0] for o in orders] == [4, 7, 9] and round_order([], 2) == []
    kept = complete_rounds({4: [1.0, 1.1, 1.2], 7: [2.0, 2.1], 9: [3.0]}, loaded={4, 7})
    assert kept == {4: [1.0, 1.1], 7: [2.0, 2.1]}  # 9 never loaded; 4's third round unpaired
    assert complete_rounds({4: [1.0], 7: []}, loaded={4, 7}) == {}

"""The worker's trial on CPU: memory is tracked in a short warm-up run that reaches the full run's peak
(but for the scheduler's per-step arrays)."""
from __future__ import annotations

import pytest

from autotune.measure import worker as worker_module
from autotune.measure.backends import get_backend
from autotune.measure.records import TrialJob
from autotune.target import Target


@pytest.fixture
def target() -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=4, max_vram=2**30, device="cpu")


def _worker() -> worker_module.Worker:
    backend = get_backend("cpu", 2**30)
    backend.setup()
    return worker_module.Worker(backend)


def test_the_tracked_warm_up_makes_the_memory_steps_and_the_timed_runs_all_steps(target, monkeypatch):
    steps: list[int | None] = []
    real = worker_module.run_pipeline

    def recording(pipe, job, steps_=None, **kwargs):
        steps.append(kwargs.pop("steps", steps_))
        return real(pipe, job, steps=steps[-1], **kwargs)

    monkeypatch.setattr(worker_module, "run_pipeline", lambda pipe, job, steps=None, **kw: recording(pipe, job, steps, **kw))
    result = _worker().trial(TrialJob(target, {"dtype": "fp32"}, warmup=1, runs=2, max_runs=2))
    assert result.status == "ok" and len(result.latencies_s) == 2
    assert steps == [worker_module.MEMORY_RUN_STEPS, None, None]  # the warm-up, then two full timed runs
    assert result.phases.memory_run_s is None  # memory rode along the warm-up: no run of its own


@pytest.mark.parametrize("settings", [{"dtype": "fp32"}, {"dtype": "fp32", "vae_tiling": True},
                                      {"dtype": "fp32", "layerwise_fp8": True}])
def test_the_short_tracked_run_reaches_the_peak_of_the_full_one(target, settings, monkeypatch):
    short = _worker().trial(TrialJob(target, settings, warmup=1, runs=1, max_runs=1))
    monkeypatch.setattr(worker_module, "MEMORY_RUN_STEPS", target.steps)
    full = _worker().trial(TrialJob(target, settings, warmup=1, runs=1, max_runs=1))
    # The scheduler's per-step arrays are all that differ (2 KiB of 7 MiB here): never above the
    # full run's peak, and within 0.1% of it.
    assert short.peak_bytes is not None and full.peak_bytes is not None
    assert 0 <= full.peak_bytes - short.peak_bytes <= 0.001 * full.peak_bytes


def test_held_candidates_stay_loaded_side_by_side_until_the_release(target):
    from autotune.measure.timing import StoppingRule

    worker = _worker()
    one = StoppingRule(min_runs=1, max_runs=1, time_cap_s=1e9)
    plain, tiled = TrialJob(target, {"dtype": "fp32"}, warmup=1), TrialJob(target, {"vae_tiling": True}, warmup=1)
    assert worker.hold(0, plain).status == worker.hold(1, tiled).status == "ok"
    pipes = {}
    for slot, job in ((0, plain), (1, tiled), (0, plain)):
        worker.select(slot)
        assert worker.job is job and len(worker.timed_runs(one)) == 1
        pipes.setdefault(slot, worker.pipe)
        assert worker.pipe is pipes[slot]  # the same loaded pipeline each time: nothing is rebuilt
    assert pipes[0] is not pipes[1]
    worker.release()
    with pytest.raises(RuntimeError, match="slot 1, which holds no candidate"):
        worker.select(1)


def test_a_loaded_pipeline_is_kept_out_of_the_collectors_scans_until_its_release(target):
    """The collection before each block of timed runs scans what the runs made, not the loaded
    pipeline (it is frozen: gc.freeze); the release unfreezes it, so a pipeline dropped with a
    reference cycle is still collected."""
    import gc
    import weakref

    worker = _worker()
    assert worker.load(TrialJob(target, {"dtype": "fp32"}, warmup=1)).status == "ok"
    pipe = worker.pipe
    assert gc.get_freeze_count() > 0 and not any(obj is pipe.unet for obj in gc.get_objects())  # frozen
    pipe.cycle = pipe  # a cycle only the collector can free
    dropped = weakref.ref(pipe)
    del pipe
    worker.release()
    assert gc.get_freeze_count() == 0 and dropped() is None

"""The trial worker's state and its one job: measure a trial (build from the host weights, apply
the knobs, warm up, time, release), and hold a confirmation's candidates side by side. The
process around it, requests in and answers out, is serve.py; `measure` runs one trial in this
process (tests, benchmarks).

Only the device's out-of-memory error is caught here (a measured outcome); anything else goes up
to serve.py, which answers it as a failure and ends the process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from typing import Any

from autotune.measure import protocol
from autotune.measure.backends import DeviceBackend, MemoryReading, math_flags
from autotune.measure.records import Measurement, TrialJob
from autotune.measure.timing import StoppingRule, timing_stats
from autotune.measure.weights import HostWeights, run_pipeline

__all__ = ["HostWeights", "Worker", "measure", "run_pipeline"]


#: Steps of the run that measures CPU memory (the tracked warm-up, or its own run after a
#: compiled trial's timed runs): every denoising step allocates the same shapes, so two steps
#: reach the peak of all of them (the text encoder and the VAE decode run once either way), but
#: for the scheduler's per-step arrays: builtin:tiny-sd at 64 px read 7017664 bytes at 2 steps
#: against 7019712 at 4 (tests/measure/test_worker.py holds it within 0.1%), for a fraction of
#: the full run's time.
MEMORY_RUN_STEPS = 2


class Worker:
    """The state of one worker process: its device backend, the weights, the loaded trial."""

    def __init__(self, backend: DeviceBackend) -> None:
        self.backend = backend
        self.weights = HostWeights()
        self.pipe: Any = None
        self.job: TrialJob | None = None
        self.result: Measurement | None = None
        self._tracked_warmup = False
        from autotune.measure.judge import TrialJudge  # numpy: only in a process that measures

        self.judging = TrialJudge()
        #: A confirmation's candidates, loaded side by side in this process (`hold`, `select`).
        self._held: dict[int, tuple[Any, TrialJob, Measurement]] = {}

    # -- one trial in three steps ---------------------------------------------------------------

    def load(self, job: TrialJob) -> Measurement:
        """Build from the host weights, apply the assignment, warm up. OOM ends in status 'oom'."""
        self.release()
        return self._load(job)

    def _load(self, job: TrialJob) -> Measurement:
        from autotune.knobs.settings import apply_settings

        backend = self.backend
        result = Measurement(status="ok", backend=backend.name, device_name=backend.device_name(),
                             peak_metric=backend.peak_metric, device_info=dataclasses.replace(backend.info))
        result.device_info.math_flags = math_flags.current()
        self.job, self.result = job, result
        phases = result.phases
        try:
            start = time.perf_counter()
            self.pipe = self.weights.fresh(job.target.model, job.assignment, phases)
            result.memory.host_pristine_bytes = self.weights.pristine_bytes
            phases.build_s = time.perf_counter() - start
            start = time.perf_counter()
            stages: dict[str, float] = {}
            apply_settings(self.pipe, job.assignment, device=job.target.device, stage_seconds=stages)
            backend.prepare(self.pipe)
            phases.apply_s = time.perf_counter() - start
            phases.to_device_s = stages.get("place", 0.0)  # the offload knob places the weights
            self._warm_up(job, result)
            # what is alive now lives as long as the trial: out of the collector's way, so the
            # collection before each block of timed runs scans only what the runs made (a full
            # pass over a loaded pipeline took 65-85 ms on this CPU, per block of a confirmation)
            gc.collect()
            gc.freeze()
        except BaseException as exc:
            self._record_oom(exc)
        return result

    def hold(self, slot: int, job: TrialJob) -> Measurement:
        """Load `job` into `slot`, the candidates of other slots staying loaded beside it: a
        confirmation's arms share a process, so whatever makes this process fast or slow is
        common to all of them and cancels in their ratios."""
        self._held.pop(slot, None)
        self.pipe = self.job = self.result = None  # the candidate loaded last is held, not dropped
        gc.unfreeze()  # what was dropped can be collected
        gc.collect()
        result = self._load(job)
        if result.status == "ok" and self.pipe is not None:
            self._held[slot] = (self.pipe, job, result)
        return result

    def select(self, slot: int) -> None:
        """Make the candidate held in `slot` the loaded one: the next runs time it."""
        if slot not in self._held:
            raise RuntimeError(f"runs requested of slot {slot}, which holds no candidate")
        self.pipe, self.job, self.result = self._held[slot]

    def _warm_up(self, job: TrialJob, result: Measurement) -> None:
        """The first run holds compile and autotuning time: reported, never mixed into latency.
        Where tracking memory is slow (CPU) and nothing is compiled, the first run also measures
        memory, so no extra run is paid for it, and it makes only `MEMORY_RUN_STEPS` steps: it
        runs every kernel the timed runs will, and an untimed run of the full steps would buy
        nothing but time (on a CPU without native half precision: 6 s of a bf16 trial)."""
        self._tracked_warmup = False
        self.judging.start(job)
        for i in range(max(1, job.warmup)):
            track = i == 0 and not self.backend.track_timed_runs and not _compiles(job)
            start = time.perf_counter()
            if track:  # a dispatch mode may pick other kernels: its output is not judged
                with self.backend.track(self.pipe) as reading:
                    run_pipeline(self.pipe, job, steps=memory_run_steps(job))
                    self.backend.synchronize()
                self._store_reading(reading)
                self._tracked_warmup = True
            else:
                latents: list[Any] = []
                with self.judging.judged_run(self.pipe, job, result) as recorder:
                    output = run_pipeline(self.pipe, job, capture_latents=latents if self.judging.pending else None)
                    self.backend.synchronize()
                self.judging.judge(self.pipe, job, result, output, latents, recorder)
            if i == 0:
                result.phases.first_run_s = time.perf_counter() - start
            else:
                result.phases.warmup_s += (time.perf_counter() - start,)

    def time(self, rule: StoppingRule) -> Measurement:
        """Timed runs until `rule` is satisfied; memory too, where that is free (CUDA)."""
        result, job = self.result, self.job
        if result is None or job is None or self.pipe is None:
            raise RuntimeError("time requested before a successful load")
        if result.status != "ok":
            return result
        try:
            result.conditions_before = self.backend.conditions()
            start = time.perf_counter()
            if self.backend.track_timed_runs:
                with self.backend.track(self.pipe) as reading:
                    result.latencies_s = self.timed_runs(rule)
                self._store_reading(reading)
            else:
                result.latencies_s = self.timed_runs(rule)
            result.phases.timed_s = time.perf_counter() - start
            result.conditions_after = self.backend.conditions()
            if not self._tracked_warmup and result.peak_bytes is None:
                start = time.perf_counter()
                with self.backend.track(self.pipe) as reading:
                    run_pipeline(self.pipe, job, steps=memory_run_steps(job))
                    self.backend.synchronize()
                self._store_reading(reading)
                result.phases.memory_run_s = time.perf_counter() - start
            result.timing = timing_stats(result.latencies_s)
            if _compiles(job) and result.phases.first_run_s is not None:
                result.phases.compile_s = max(0.0, result.phases.first_run_s - result.timing.median_s)
        except BaseException as exc:
            self._record_oom(exc)
        return result

    def timed_runs(self, rule: StoppingRule) -> list[float]:
        """Runs of the loaded pipeline until `rule` says enough. Synchronised per run; garbage
        collection off while timing (a collection in the middle of a run is noise, not the
        pipeline's cost)."""
        if self.pipe is None or self.job is None:
            raise RuntimeError("timed runs requested with no pipeline loaded")
        latencies: list[float] = []
        judged: tuple[Any, list[Any], Any] | None = None
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            while not rule.done(latencies, time.perf_counter() - start):
                # The first timed run's output is judged when no earlier run could be (CPU: the
                # warm-up ran under the memory tracker); keeping a reference costs nothing.
                captured: list[Any] = []
                first = judged is None  # the run whose output is judged, where none was yet
                around = self.judging.judged_run(self.pipe, self.job, self.result) if first else contextlib.nullcontext(None)
                with around as recorder:
                    t0 = time.perf_counter()
                    output = run_pipeline(self.pipe, self.job, capture_latents=captured if self.judging.pending else None)
                    self.backend.synchronize()
                    latencies.append(time.perf_counter() - t0)
                if self.judging.pending and judged is None:
                    judged = (output, captured, recorder)
        finally:
            gc.enable()
        if judged is not None and self.result is not None:
            self.judging.judge(self.pipe, self.job, self.result, *judged)
        return latencies

    def release(self) -> protocol.Released:
        """Drop the trial's pipeline (and any held beside it); say whether the device is back to
        where it started."""
        start = time.perf_counter()
        self.pipe = self.job = None
        self._held.clear()
        gc.unfreeze()  # what was dropped can be collected
        gc.collect()
        clean = self.backend.release()
        return protocol.Released(release_s=time.perf_counter() - start, clean=clean)

    def _store_reading(self, reading: MemoryReading) -> None:
        assert self.result is not None
        self.result.peak_bytes = reading.peak_bytes
        self.result.memory.fill(reading.memory)

    def _record_oom(self, exc: BaseException) -> None:
        if not self.backend.is_oom(exc):
            raise exc
        result = self.result
        assert result is not None
        result.status = "oom"
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        result.memory = self.backend.oom_details(exc)
        result.latencies_s = []
        result.peak_bytes = None
        self.pipe = None

    # -- the whole trial ------------------------------------------------------------------------

    def trial(self, job: TrialJob) -> Measurement:
        result = self.load(job)
        if result.status == "ok":
            result = self.time(job.stopping_rule())
        released = self.release()
        result.phases.release_s = released.release_s
        result.device_info.worker_clean_after = released.clean
        return result


def memory_run_steps(job: TrialJob) -> int:
    """The steps of the run whose memory is tracked: as few as reach the peak of the full run."""
    return min(job.target.steps, MEMORY_RUN_STEPS)


def _compiles(job: TrialJob) -> bool:
    from autotune import knobs

    return knobs.compiles(job.assignment)


def measure(job: TrialJob, backend: DeviceBackend | None = None) -> Measurement:
    """One trial in this process (tests, benchmarks); `SubprocessMeasurer` is the isolated path."""
    from autotune.measure.backends import get_backend

    backend = backend or get_backend(job.target.device, job.target.max_vram)
    backend.setup()
    return Worker(backend).trial(job)

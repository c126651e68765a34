"""What a trial measures, and the seam that measures it.

`Measurer` is anything that turns a `TrialJob` into a `Measurement`; the real one
(`SubprocessMeasurer`) runs trials in a worker process of its own and can also confirm
(`Comparer`); `InProcessMeasurer` runs them here, and tests inject a fake.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Container, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from autotune.errors import InvalidTargetError
from autotune.knobs import Value
from autotune.measure import protocol, timing
from autotune.measure.backends.host_memory import HostPeak
from autotune.measure.process import WorkerGone, WorkerProcess, WorkerTimeout
from autotune.measure.records import Measurement, Phases, Status, TrialJob
from autotune.measure.timing import StoppingRule

if TYPE_CHECKING:  # the worker's module: imported where a trial runs in this process
    from autotune.measure.worker import Worker

__all__ = ["Comparer", "InProcessMeasurer", "Measurement", "Measurer", "Status", "SubprocessMeasurer", "TrialJob",
           "WORKER_COMMAND"]

log = logging.getLogger(__name__)


def new_worker_job(job: TrialJob) -> TrialJob:
    """The job as a newly started worker runs it: `timing.NEW_WORKER_WARMUP` more untimed runs."""
    return dataclasses.replace(job, warmup=job.warmup + timing.NEW_WORKER_WARMUP)


class Measurer(Protocol):
    def __call__(self, job: TrialJob, *, timeout_s: float | None = None) -> Measurement: ...


#: The worker's command; the answer pipe's file descriptor is appended.
WORKER_COMMAND = (sys.executable, "-m", "autotune.measure.serve")


def leaves_process_state(assignment: dict[str, Value]) -> bool:
    """True when a trial of `assignment` leaves state in its process that a later trial would
    inherit (the knob says so: e.g. torch.compile's caches)."""
    from autotune import knobs

    return any(assignment.get(k.name, k.default) in k.process_state for k in knobs.all_knobs())


def round_order(order: Sequence[int], r: int) -> list[int]:
    """The arms of round `r` of an interleaved comparison: `order` rotated by `r`, so that each
    arm runs first, and after each other arm, equally often over a multiple of len(order) rounds."""
    if not order:
        return []
    shift = r % len(order)
    return [*order[shift:], *order[:shift]]


def complete_rounds(medians: dict[int, list[float]], loaded: Container[int]) -> dict[int, list[float]]:
    """The block medians of the loaded arms, cut to the rounds every one of them completed (a
    round cut short by a deadline or a failure is dropped for all, so the arms stay paired)."""
    complete = min((len(v) for i, v in medians.items() if i in loaded), default=0)
    return {i: v[:complete] for i, v in medians.items() if i in loaded and complete}


class SubprocessMeasurer:
    """Measures trials in a warm worker process, kept across trials while that is safe.

    The same process measures the next trial unless the last one left state behind in it (a
    knob that says so, an out-of-memory error, a failure, a timeout, a device not clean after
    the release), or the next trial needs another device or ceiling. Then a fresh process is
    started and its start-up is charged to that trial (`spawn_s`). On CUDA the NVML process peak
    is sampled from here, by the worker's PID, so no sampling thread runs inside the measured
    process.
    """

    def __init__(self, timeout_s: float = timing.TRIAL_TIMEOUT_S, log_dir: Path | None = None,
                 env: dict[str, str] | None = None,
                 worker_command: Sequence[str] = WORKER_COMMAND, reuse: bool = True) -> None:
        self.timeout_s = timeout_s
        self.worker_command = list(worker_command)
        self.log_dir = log_dir
        self.env = env
        self.reuse = reuse
        self._count = 0
        self._worker: WorkerProcess | None = None
        self._worker_key: tuple[str, int] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="autotune-trials-")

    # -- logs -------------------------------------------------------------------------------------

    def _log_path(self, job: TrialJob, suffix: str = "") -> Path:
        folder = self.log_dir or Path(self._tmp.name)
        if job.number is not None:
            return folder / f"trial-{job.number:04d}{suffix}.log"
        self._count += 1  # no trial number (benchmarks): the next name not yet taken
        while (folder / f"run-{self._count:04d}{suffix}.log").exists():
            self._count += 1
        return folder / f"run-{self._count:04d}{suffix}.log"

    # -- workers ----------------------------------------------------------------------------------

    def _start(self, job: TrialJob, log_path: Path, deadline: float) -> tuple[WorkerProcess, float]:
        start = time.monotonic()
        worker = WorkerProcess(self.worker_command, log_path, self.env)
        answer = worker.request(protocol.Setup(job.target.device, job.target.max_vram), deadline)
        if isinstance(answer, protocol.Unrunnable):
            worker.close()
            raise InvalidTargetError(answer.message)
        if not isinstance(answer, protocol.Ready):
            worker.kill()
            raise WorkerGone(f"worker failed to start: {_message(answer)}")
        worker.startup = Phases(import_s=answer.import_s, device_setup_s=answer.setup_s)
        worker.device_baseline_bytes = answer.device_baseline_bytes
        return worker, time.monotonic() - start

    def _reusable(self, job: TrialJob) -> WorkerProcess | None:
        """The warm worker if `job` may run in it; one that may not is closed."""
        worker = self._worker
        if worker is not None and (not self.reuse or worker.tainted or not worker.alive
                                   or self._worker_key != (job.target.device, job.target.max_vram)):
            worker.close()
            worker = self._worker = None
        return worker

    def _worker_for(self, job: TrialJob, log_path: Path, deadline: float) -> tuple[WorkerProcess, Phases]:
        key = (job.target.device, job.target.max_vram)
        worker = self._reusable(job)
        if worker is not None:
            return worker, Phases()
        worker, spawn_s = self._start(job, log_path, deadline)
        self._worker, self._worker_key = worker, key
        spawned = Phases(spawn_s=spawn_s)
        spawned.fill(worker.startup)
        return worker, spawned

    def close(self) -> None:
        """End the warm worker (a search calls this when it is done)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> SubprocessMeasurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one trial --------------------------------------------------------------------------------

    def __call__(self, job: TrialJob, *, timeout_s: float | None = None) -> Measurement:
        """Measure one trial; `timeout_s` (e.g. what is left of a time budget) can only shorten
        the measurer's own per-trial timeout."""
        limit = self.timeout_s if timeout_s is None else max(0.0, min(self.timeout_s, timeout_s))
        stopped_by = "timed out" if timeout_s is None or self.timeout_s <= timeout_s else "stopped at the time budget"
        start = time.monotonic()
        log_path = self._log_path(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spawned = Phases()
        try:
            worker, spawned = self._worker_for(job, log_path, start + limit)
            if spawned.spawn_s is not None:
                job = new_worker_job(job)
            result = self._trial(worker, job, log_path, start + limit)
        except WorkerTimeout:
            self._worker = None
            result = Measurement.failure(f"{stopped_by} after {limit:.0f} s")
        except WorkerGone as exc:
            self._worker = None
            result = Measurement.failure(str(exc))
        wall = time.monotonic() - start
        result.phases.fill(spawned)
        result.phases.wall_s = wall
        result.phases.overhead_s = max(0.0, wall - result.phases.measured_s)
        if self.log_dir:
            result.log_path = str(log_path)
        return result

    def _trial(self, worker: WorkerProcess, job: TrialJob, log_path: Path, deadline: float) -> Measurement:
        """One trial in `worker`, its NVML and host RAM peaks sampled from here; marks the worker
        tainted when the trial left anything behind in it."""
        with _nvml_peak(job.target.device, worker.pid, worker.device_baseline_bytes) as sampler, \
                HostPeak(worker.pid) as host:
            answer = worker.request(protocol.Trial(job, str(log_path)), deadline)
        if isinstance(answer, protocol.Unrunnable):  # e.g. the pipeline refuses the call: no trial can run
            self._worker = None
            raise InvalidTargetError(answer.message)
        if not isinstance(answer, protocol.Measured):
            worker.tainted = True
            return Measurement.failure(f"{_message(answer)} (traceback in the trial log)")
        result = answer.measurement
        result.device_info.worker_pid = worker.pid
        sampler.merge_into(result)
        host.merge_into(result)
        clean = result.device_info.worker_clean_after
        if result.status != "ok" or clean is False or leaves_process_state(job.assignment):
            worker.tainted = True
        return result

    # -- interleaved comparison (confirming a winner) --------------------------------------------

    def compare(self, jobs: Sequence[TrialJob], rounds: int, runs_per_round: int, deadline: float,
                groups: Sequence[Sequence[int]] | None = None) -> tuple[dict[int, list[float]], str]:
        """Load the jobs in workers, one per group of job indices in `groups` (by default one per
        job), then time them in interleaved rounds (the order rotates every round). The first
        group goes to the search's warm worker where it can (`_take_warm`); every worker is
        closed at the end, so the next comparison runs in processes of its own. Returns the
        block medians per job index (jobs that failed to load are left out) and a note on
        anything cut short."""
        groups = [[i] for i in range(len(jobs))] if groups is None else groups
        started: list[WorkerProcess] = []
        owner: dict[int, WorkerProcess] = {}
        medians: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
        notes: list[str] = []
        block = StoppingRule(min_runs=runs_per_round, max_runs=runs_per_round, time_cap_s=1e9)
        try:
            for n, group in enumerate(groups):
                warm = self._take_warm([jobs[i] for i in group]) if n == 0 else None
                started.extend(self._load_group(jobs, group, deadline, owner, notes, warm))
            order = list(owner)
            for r in range(rounds):
                if time.monotonic() >= deadline:
                    notes.append(f"time budget reached after {r} of {rounds} rounds")
                    break
                for i in round_order(order, r):
                    answer = owner[i].request(protocol.Runs(block, slot=i), deadline)
                    if not isinstance(answer, protocol.Latencies):
                        raise WorkerGone(f"the worker answered a block of runs with {_message(answer)}")
                    medians[i].append(statistics.median(answer.latencies_s))
        except (WorkerGone, WorkerTimeout) as exc:
            notes.append(f"a worker stopped during the rounds ({str(exc) or 'time budget'})")
        finally:
            for worker in started:
                worker.close()
        return complete_rounds(medians, owner), "; ".join(notes)

    def _take_warm(self, jobs: Sequence[TrialJob]) -> WorkerProcess | None:
        """The warm worker, handed over to a comparison (which closes it), where the next trial
        could have run in it and no job leaves state in its process: it saves a worker's start
        (on this CPU 1.8 s of a 4.4 s session of the README job's confirmation), and a process
        that has run trials is as much a process of its own as a new one."""
        if any(leaves_process_state(job.assignment) for job in jobs):
            return None
        worker, self._worker = self._reusable(jobs[0]), None
        return worker

    def _load_group(self, jobs: Sequence[TrialJob], group: Sequence[int], deadline: float,
                    owner: dict[int, WorkerProcess], notes: list[str],
                    warm: WorkerProcess | None = None) -> list[WorkerProcess]:
        """Load the group's jobs side by side (slot = job index) into `warm` or a worker started
        for them, recording in `owner` each one loaded; returns the worker (to close)."""
        first = jobs[group[0]]
        try:
            worker = warm or self._start(first, self._log_path(first, suffix="-confirm"), deadline)[0]
        except (WorkerGone, WorkerTimeout) as exc:
            notes.extend(f"trial {jobs[i].number} could not be reloaded ({str(exc) or 'time budget'})" for i in group)
            return []
        gone = False
        for i in group:
            job = dataclasses.replace(jobs[i], reference=None, save_reference=None)  # judged in the search
            try:
                answer = worker.request(protocol.Load(job, str(self._log_path(job, suffix="-confirm")), slot=i),
                                        deadline)
            except (WorkerGone, WorkerTimeout) as exc:
                notes.append(f"trial {job.number} could not be reloaded ({str(exc) or 'time budget'})")
                gone = True
                break
            status = answer.measurement.status if isinstance(answer, protocol.Measured) else None
            if status != "ok":
                notes.append(f"trial {job.number} could not be reloaded ({status or _message(answer)})")
                if status is None:  # a failure: the worker exits after saying so
                    gone = True
                    break
                continue  # e.g. out of memory: this arm is out, those beside it stay
            owner[i] = worker
        if gone:  # what the worker loaded before went with it
            for i in group:
                owner.pop(i, None)
        return [worker]


def _message(answer: protocol.Answer) -> str:
    """What an answer that is not the one expected says."""
    return getattr(answer, "message", None) or type(answer).__name__


class _NoSampler:
    def merge_into(self, result: Measurement) -> None:
        return None


@contextlib.contextmanager
def _nvml_peak(device: str, pid: int, baseline_used: int | None = None) -> Iterator[Any]:
    """On CUDA, sample the worker's NVML process usage from this process for the whole trial;
    where NVML does not show the worker's PID, its device-wide usage over `baseline_used` (the
    device's usage before the worker's CUDA context existed)."""
    reader = None
    if device == "cuda":
        from autotune.measure.backends.cuda import open_nvml

        reader = open_nvml()
    if reader is None:
        yield _NoSampler()
        return
    from autotune.measure.backends.cuda import ProcessPeak

    peak = ProcessPeak(reader, pid, baseline_used=baseline_used)
    with peak:
        yield peak


class Comparer(Protocol):
    """A measurer that can also confirm: time loaded candidates side by side in interleaved
    rounds (`SubprocessMeasurer.compare`); the search confirms only with one of these."""

    def compare(self, jobs: Sequence[TrialJob], rounds: int, runs_per_round: int, deadline: float,
                groups: Sequence[Sequence[int]] | None = None) -> tuple[dict[int, list[float]], str]: ...


class InProcessMeasurer:
    """Measures trials in this process, one warm `Worker` per device and ceiling: no isolation
    (an OOM or a compiled model stays in this process), no timeout, but no start-up either.
    For tests, benchmarks and notebooks; searches use `SubprocessMeasurer`."""

    def __init__(self) -> None:
        self._worker: Worker | None = None
        self._key: tuple[str, int | None] | None = None

    def __call__(self, job: TrialJob, *, timeout_s: float | None = None) -> Measurement:
        """Measure one trial; `timeout_s` is not enforced here (nothing can stop a run in-process)."""
        from autotune.measure.backends import get_backend
        from autotune.measure.worker import Worker

        key = (job.target.device, job.target.max_vram)
        worker, spawned = self._worker, Phases()
        if worker is None or self._key != key:
            start = time.monotonic()
            backend = get_backend(*key)
            backend.setup()
            worker = self._worker = Worker(backend)
            self._key = key
            spawned = Phases(device_setup_s=time.monotonic() - start)
            job = new_worker_job(job)
        start = time.monotonic()
        result = worker.trial(job)
        result.phases.fill(spawned)
        result.phases.wall_s = time.monotonic() - start + (spawned.device_setup_s or 0.0)
        result.phases.overhead_s = max(0.0, result.phases.wall_s - result.phases.measured_s)
        return result

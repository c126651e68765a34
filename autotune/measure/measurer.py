"""What a trial measures, and the seam that measures it.

`Measurer` is anything that turns a `TrialJob` into a `Measurement`; the real one
(`SubprocessMeasurer`) runs trials in a worker process of its own, tests inject a fake.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from autotune.measure.backends.host_memory import HostPeak
from autotune.errors import InvalidTargetError
from autotune.target import Target
from autotune.measure.timing import StoppingRule
from autotune.measure.process import WorkerGone, WorkerProcess, WorkerTimeout

log = logging.getLogger(__name__)

Status = Literal["ok", "oom", "failed", "pruned"]


@dataclasses.dataclass(frozen=True)
class TrialJob:
    target: Target
    assignment: dict[str, Any]
    warmup: int = 1
    #: Timed runs: at least `runs`, then more until the median's 95% interval is within
    #: `precision` of it, `time_cap_s` of runs are spent or `max_runs` are made (timing.py).
    runs: int = 6
    seed: int = 0
    number: int | None = None  # the study's trial number, names the trial's log
    precision: float = 0.02
    time_cap_s: float = 10.0
    max_runs: int = 100
    #: Where the reference output is (quality.py): the first run's output is compared with it.
    reference: str | None = None
    #: Save the first run's output here as the reference (the search's reference trial).
    save_reference: str | None = None
    #: The search's best latency so far: a trial surely slower stops at `runs` (racing, timing.py).
    incumbent_s: float | None = None

    def stopping_rule(self) -> StoppingRule:
        return StoppingRule(min_runs=self.runs, max_runs=max(self.max_runs, self.runs),
                            precision=self.precision, time_cap_s=self.time_cap_s,
                            incumbent_s=self.incumbent_s)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target": self.target.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialJob:
        return cls(**{**data, "target": Target.from_dict(data["target"])})


@dataclasses.dataclass
class Measurement:
    """One trial's result. `peak_bytes` is the number the ceiling is checked against; its
    `peak_metric` says what it is (a CPU tensor peak is never a VRAM number)."""

    status: Status
    backend: str
    device_name: str
    peak_metric: str
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    peak_bytes: int | None = None
    memory: dict[str, int] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Facts about the measurement setup (ceiling native or emulated, context size, alloc conf).
    device_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    log_path: str | None = None
    #: The timed runs' statistics (timing.TimingStats.to_dict()): median, 95% interval, spread.
    timing: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Device conditions before and after the timed runs (clocks, temperature), where readable.
    conditions: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The first run's output against the reference: psnr_db, ssim, latent_rel_error (quality.py).
    quality: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def latency_median_s(self) -> float | None:
        return statistics.median(self.latencies_s) if self.latencies_s else None

    @property
    def latency_p90_s(self) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def overhead_s(self) -> float | None:
        """Wall time of the trial that was not warm-up or timed runs: the cost of measuring."""
        return self.timings.get("overhead_s")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def failure(cls, error: str, backend: str = "unknown") -> Measurement:
        return cls(status="failed", backend=backend, device_name="unknown", peak_metric="none",
                   error=error)


class Measurer(Protocol):
    def __call__(self, job: TrialJob, *, timeout_s: float | None = None) -> Measurement: ...


#: The worker's command; the answer pipe's file descriptor is appended.
WORKER_COMMAND = (sys.executable, "-m", "autotune.measure.worker")


def leaves_process_state(assignment: dict[str, Any]) -> bool:
    """True when a trial of `assignment` leaves state in its process that a later trial would
    inherit (the knob says so: e.g. torch.compile's caches)."""
    from autotune import knobs

    return any(assignment.get(k.name, k.default) in k.process_state for k in knobs.all_knobs())


class SubprocessMeasurer:
    """Measures trials in a warm worker process, kept across trials while that is safe.

    The same process measures the next trial unless the last one left state behind in it (a
    knob that says so, an out-of-memory error, a failure, a timeout, a device not clean after
    the release), or the next trial needs another device or ceiling. Then a fresh process is
    started and its start-up is charged to that trial (`spawn_s`). On CUDA the NVML process peak
    is sampled from here, by the worker's PID, so no sampling thread runs inside the measured
    process.
    """

    def __init__(self, timeout_s: float = 600.0, log_dir: Path | None = None,
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
        answer = worker.request({"op": "setup", "device": job.target.device,
                                 "ceiling": job.target.max_vram}, deadline)
        if "unrunnable" in answer:
            worker.close()
            raise InvalidTargetError(answer["unrunnable"])
        if "failed" in answer:
            worker.kill()
            raise WorkerGone(f"worker failed to start: {answer['failed']}")
        worker.startup = {"import_s": answer.get("import_s", 0.0), "device_setup_s": answer.get("setup_s", 0.0)}
        worker.device_baseline_bytes = answer.get("device_baseline_bytes")
        return worker, time.monotonic() - start

    def _worker_for(self, job: TrialJob, log_path: Path, deadline: float) -> tuple[WorkerProcess, dict[str, float]]:
        key = (job.target.device, job.target.max_vram)
        worker = self._worker
        if worker is not None and (not self.reuse or worker.tainted or not worker.alive or self._worker_key != key):
            worker.close()
            worker = self._worker = None
        if worker is not None:
            return worker, {}
        worker, spawn_s = self._start(job, log_path, deadline)
        self._worker, self._worker_key = worker, key
        return worker, {"spawn_s": spawn_s, **worker.startup}

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
        deadline = start + limit
        log_path = self._log_path(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spawned: dict[str, float] = {}
        try:
            worker, spawned = self._worker_for(job, log_path, deadline)
            with _nvml_peak(job.target.device, worker.pid, worker.device_baseline_bytes) as sampler, \
                    HostPeak(worker.pid) as host:
                answer = worker.request({"op": "trial", "job": job.to_dict(), "log": str(log_path)}, deadline)
            if "unrunnable" in answer:  # e.g. the pipeline refuses the call: no trial can run
                self._worker = None
                raise InvalidTargetError(answer["unrunnable"])
            if "failed" in answer:
                worker.tainted = True
                result = Measurement.failure(f"{answer['failed']} (traceback in the trial log)")
            else:
                result = Measurement.from_dict(answer["measurement"])
                result.device_info["worker_pid"] = worker.pid
                sampler.merge_into(result)
                host.merge_into(result)
                if result.status != "ok" or not result.device_info.get("worker_clean_after", True):
                    worker.tainted = True
                if leaves_process_state(job.assignment):
                    worker.tainted = True
        except WorkerTimeout:
            self._worker = None
            result = Measurement.failure(f"{stopped_by} after {limit:.0f} s")
        except WorkerGone as exc:
            self._worker = None
            result = Measurement.failure(str(exc))
        wall = time.monotonic() - start
        result.timings.update(spawned)
        result.timings["wall_s"] = wall
        measured = sum(v for k, v in result.timings.items()
                       if k in ("first_run_s", "timed_s") or k.startswith("warmup_"))
        result.timings["overhead_s"] = max(0.0, wall - measured)
        if self.log_dir:
            result.log_path = str(log_path)
        return result


    # -- interleaved comparison (confirming a winner) --------------------------------------------

    def compare(self, jobs: Sequence[TrialJob], rounds: int, runs_per_round: int,
                deadline: float) -> tuple[dict[int, list[float]], str]:
        """Load each job in a fresh worker of its own, then time them in interleaved rounds
        (the order rotates every round). Returns the block medians per job index (jobs that
        failed to load are left out) and a note on anything cut short."""
        workers: dict[int, WorkerProcess] = {}
        medians: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
        notes: list[str] = []
        block = StoppingRule(min_runs=runs_per_round, max_runs=runs_per_round, time_cap_s=1e9)
        try:
            for i, job in enumerate(jobs):
                log_path = self._log_path(job, suffix="-confirm")
                try:
                    worker, _ = self._start(job, log_path, deadline)
                    workers[i] = worker
                    answer = worker.request({"op": "load", "job": job.to_dict(), "log": str(log_path)}, deadline)
                except (WorkerGone, WorkerTimeout) as exc:
                    workers.pop(i, None)
                    notes.append(f"trial {job.number} could not be reloaded ({str(exc) or 'time budget'})")
                    continue
                status = answer.get("measurement", {}).get("status")
                if status != "ok":
                    notes.append(f"trial {job.number} could not be reloaded ({answer.get('failed') or status})")
                    workers.pop(i).kill()
            order = list(workers)
            for r in range(rounds):
                if time.monotonic() >= deadline:
                    notes.append(f"time budget reached after {r} of {rounds} rounds")
                    break
                rotated = order[r % len(order):] + order[:r % len(order)] if order else []
                for i in rotated:
                    answer = workers[i].request({"op": "runs", "rule": block.to_dict()}, deadline)
                    medians[i].append(statistics.median(answer["latencies_s"]))
        except (WorkerGone, WorkerTimeout) as exc:
            notes.append(f"a worker stopped during the rounds ({str(exc) or 'time budget'})")
        finally:
            for worker in workers.values():
                worker.close()
        complete = min((len(v) for i, v in medians.items() if i in workers), default=0)
        return {i: v[:complete] for i, v in medians.items() if i in workers and complete}, "; ".join(notes)


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

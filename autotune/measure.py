"""What a trial measures, and the seam that measures it.

`Measurer` is anything that turns a `TrialJob` into a `Measurement`; the real one runs each trial
in a fresh worker process (offload hooks, fp8 casting and compile caches are stateful and partly
irreversible, and an OOM leaves allocator state behind), tests inject a fake.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from autotune.errors import InvalidTargetError
from autotune.target import Target

log = logging.getLogger(__name__)

Status = Literal["ok", "oom", "failed", "pruned"]


@dataclasses.dataclass(frozen=True)
class TrialJob:
    target: Target
    assignment: dict[str, Any]
    warmup: int = 1
    runs: int = 3
    seed: int = 0
    number: int | None = None  # the study's trial number, names the trial's log

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)

    @classmethod
    def failure(cls, error: str, backend: str = "unknown") -> Measurement:
        return cls(status="failed", backend=backend, device_name="unknown", peak_metric="none",
                   error=error)


class Measurer(Protocol):
    def __call__(self, job: TrialJob) -> Measurement: ...


class SubprocessMeasurer:
    """Runs `python -m autotune._worker` once per trial; a crash or hang is that trial's FAIL."""

    def __init__(self, timeout_s: float = 600.0, log_dir: Path | None = None,
                 env: dict[str, str] | None = None,
                 worker_command: Sequence[str] = (sys.executable, "-m", "autotune._worker")) -> None:
        self.timeout_s = timeout_s
        self.worker_command = list(worker_command)
        self.log_dir = log_dir
        self.env = env
        self._count = 0

    def _log_name(self, job: TrialJob) -> str:
        if job.number is not None:
            return f"trial-{job.number:04d}.log"
        self._count += 1  # no trial number (benchmarks): the next name not yet taken
        while (self.log_dir / f"run-{self._count:04d}.log").exists():
            self._count += 1
        return f"run-{self._count:04d}.log"

    def __call__(self, job: TrialJob) -> Measurement:
        with tempfile.TemporaryDirectory(prefix="autotune-trial-") as tmp:
            job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
            job_path.write_text(json.dumps(job.to_dict()))
            log_path = (self.log_dir / self._log_name(job)) if self.log_dir else Path(tmp) / "log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            cmd = [*self.worker_command, str(job_path), str(result_path)]
            env = {**os.environ, **(self.env or {})}
            with open(log_path, "w") as log_file:
                try:
                    proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                          timeout=self.timeout_s, check=False)
                except subprocess.TimeoutExpired:
                    result = Measurement.failure(f"timed out after {self.timeout_s:.0f} s")
                else:
                    if proc.returncode == EXIT_TARGET_UNRUNNABLE and result_path.exists():
                        raise InvalidTargetError(json.loads(result_path.read_text())["unrunnable"])
                    if proc.returncode == 0 and result_path.exists():
                        result = Measurement.from_dict(json.loads(result_path.read_text()))
                    else:
                        result = Measurement.failure(_describe_exit(proc.returncode, log_path))
            if self.log_dir:
                result.log_path = str(log_path)
            return result


#: The worker's exit code for a target no trial can run (e.g. a ceiling below the CUDA context):
#: the search stops with that one message instead of failing every trial alike.
EXIT_TARGET_UNRUNNABLE = 3


def _describe_exit(returncode: int, log_path: Path) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker killed by {name}"
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no output"
    return f"worker exited with code {returncode}: {last[:300]}"

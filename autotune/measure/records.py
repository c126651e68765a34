"""The typed records of one trial: what is asked (`TrialJob`) and what was measured (`Measurement`).

`Measurement.to_dict()/from_dict()` is the one codec: the worker pipe and the study storage carry
its dicts, so it writes the keys earlier versions wrote ("timings" for the phases, "timing" for
the statistics...) and reads every dict they wrote. A key it does not know (written by an older
version: `load_s`, `device_total_bytes`) is kept in the record's `extra` and written back as it came.
"""
from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from autotune.knobs import Value
from autotune.measure.backends.math_flags import MathFlags
from autotune.measure import timing
from autotune.measure.timing import StoppingRule, TimingStats
from autotune.target import Target

Status = Literal["ok", "oom", "failed", "pruned"]
#: How a VRAM ceiling was enforced: the card's own size, or PyTorch capped below it (cuda.py).
CeilingMode = Literal["native", "emulated"]

#: A value as JSON carries it (what an unknown key of an older version may hold).
Json = Union[str, int, float, bool, None, list["Json"], dict[str, "Json"]]

_R = TypeVar("_R")
_WARMUP = re.compile(r"warmup_(\d+)_s")


def _known(cls: type[_R], data: Mapping[str, Any] | None) -> _R:
    """`cls` from the keys of `data` it has fields for (None or {}: all defaults); the other keys
    go to its `extra` where it has one, else they are dropped."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}  # type: ignore[arg-type]
    data = data or {}
    known = {k: v for k, v in data.items() if k in names}
    if "extra" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        known["extra"] = {k: v for k, v in data.items() if k not in names}
    return cls(**known)


def _set(record: object) -> dict[str, Any]:
    """The fields of `record` that hold a value (None is "not measured": the key is left out),
    then its `extra` keys."""
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)  # type: ignore[arg-type]
           if f.name != "extra" and getattr(record, f.name) is not None}
    return {**out, **getattr(record, "extra", {})}


def _fill(record: _R, other: _R) -> None:
    """Copy into `record` every field that `other` holds a value for (an empty tuple of runs,
    like None, holds none)."""
    for f in dataclasses.fields(other):  # type: ignore[arg-type]
        value = getattr(other, f.name)
        if f.name == "extra":
            getattr(record, "extra").update(value)
        elif value is not None and value != ():
            setattr(record, f.name, value)


@dataclasses.dataclass(slots=True)
class Phases:
    """Where a trial's wall time went (seconds; None: that phase did not happen). Filled in as the
    trial goes: the worker times its steps, the measurer the process start and the wall."""

    spawn_s: float | None = None
    import_s: float | None = None
    device_setup_s: float | None = None
    load_weights_s: float | None = None
    copy_weights_s: float | None = None
    build_s: float | None = None
    to_device_s: float | None = None
    apply_s: float | None = None
    #: The first (warm-up) run; on CPU without compile, the memory-tracked run of
    #: `worker.MEMORY_RUN_STEPS` steps.
    first_run_s: float | None = None
    #: The warm-up runs after the first (stored as warmup_1_s, warmup_2_s...).
    warmup_s: tuple[float, ...] = ()
    timed_s: float | None = None
    memory_run_s: float | None = None
    compile_s: float | None = None
    release_s: float | None = None
    wall_s: float | None = None
    overhead_s: float | None = None
    #: Phases of older versions (load_s...), kept as they came.
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def measured_s(self) -> float:
        """The runs the trial is for (first run, warm-ups, timed runs); the rest is overhead."""
        return (self.first_run_s or 0.0) + sum(self.warmup_s) + (self.timed_s or 0.0)

    @property
    def load_s(self) -> float:
        """Readying the settings in a started worker: weights read and copied, pipeline built and
        placed, knobs applied, and the first run (a compile included)."""
        return sum(v or 0.0 for v in (self.load_weights_s, self.copy_weights_s, self.build_s, self.to_device_s,
                                      self.apply_s, self.first_run_s))

    def fill(self, other: Phases) -> None:
        _fill(self, other)

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "warmup_s":
                out.update({f"warmup_{i}_s": v for i, v in enumerate(value, 1)})
            elif f.name == "extra":
                out.update(value)
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Phases:
        data = data or {}
        warmups = sorted((int(m.group(1)), v) for k, v in data.items() if (m := _WARMUP.fullmatch(k)))
        plain = {k: v for k, v in data.items() if k != "warmup_s" and not _WARMUP.fullmatch(k)}
        return dataclasses.replace(_known(cls, plain), warmup_s=tuple(v for _, v in warmups))


@dataclasses.dataclass(slots=True)
class MemoryReadings:
    """Memory facts of one trial, in bytes (None: not read on this device). Which one is the
    trial's peak is `Measurement.peak_metric`."""

    # CPU backend
    cpu_live_tensor_peak: int | None = None
    resident_weights: int | None = None
    peak_rss: int | None = None  # since the worker started: informational
    # CUDA backend
    cuda_max_allocated: int | None = None
    cuda_max_reserved: int | None = None
    cuda_context: int | None = None
    nvml_process_peak: int | None = None
    # sampled by the parent, any device
    host_rss_peak: int | None = None
    host_rss_before: int | None = None
    #: The worker's pristine copy of the weights, inside both readings above (not the trial's).
    host_pristine_bytes: int | None = None
    # at an out-of-memory error
    oom_requested_bytes: int | None = None
    oom_excess_bytes: int | None = None
    #: Readings of older versions, kept as they came.
    extra: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def trial_rss_peak(self) -> int | None:
        """The trial's own host RAM peak: the worker's resident-set peak less its pristine copy."""
        if self.host_rss_peak is None:
            return None
        return self.host_rss_peak - (self.host_pristine_bytes or 0)

    def fill(self, other: MemoryReadings) -> None:
        _fill(self, other)

    def to_dict(self) -> dict[str, int]:
        return _set(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MemoryReadings:
        return _known(cls, data)


#: What the CUDA backend's setup writes (ceiling_note only on an emulated ceiling).
_CUDA_SETUP_KEYS = frozenset({
    "device_name", "total_memory_bytes", "cuda_context_bytes", "cuda_context_source", "ceiling_mode",
    "memory_fraction", "emulated_headroom_bytes", "nvml_source", "nvml_baseline_used_bytes", "driver",
    "pytorch_cuda_alloc_conf"})


@dataclasses.dataclass(slots=True)
class DeviceInfo:
    """The measurement's provenance: the device, how its ceiling was enforced, the float flags,
    and the worker that measured (CUDA fills most of it; on CPU most stay None)."""

    device_name: str | None = None
    total_memory_bytes: int | None = None
    cuda_context_bytes: int | None = None
    cuda_context_source: str | None = None
    ceiling_mode: CeilingMode | None = None
    memory_fraction: float | None = None
    emulated_headroom_bytes: int | None = None
    nvml_source: str | None = None
    nvml_baseline_used_bytes: int | None = None
    driver: str | None = None
    pytorch_cuda_alloc_conf: str | None = None
    ceiling_note: str | None = None
    math_flags: MathFlags | None = None
    #: The flags the reference's run computed under (exact fp32), where this trial made it.
    reference_math_flags: MathFlags | None = None
    worker_pid: int | None = None
    worker_clean_after: bool | None = None
    #: Facts of older versions (device_total_bytes...), kept as they came.
    extra: dict[str, Json] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The CUDA setup's keys are written even when None (as the backend always wrote them:
        profile fingerprints keep them); every other key only when it holds a value."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MathFlags):
                out[f.name] = value.to_dict()
            elif f.name == "extra":
                out.update(value)
            elif value is not None or (f.name in _CUDA_SETUP_KEYS and self.ceiling_mode is not None):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DeviceInfo:
        info = _known(cls, data)
        for key in ("math_flags", "reference_math_flags"):
            value = getattr(info, key)
            if isinstance(value, Mapping):
                setattr(info, key, _known(MathFlags, value))
        return info


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceConditions:
    """Readings that explain a slow run, taken before and after the timed runs (None: not offered)."""

    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    throttle_reasons: int | None = None
    load_average_1m: float | None = None

    def to_dict(self) -> dict[str, float]:
        return _set(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DeviceConditions:
        return _known(cls, data)


@dataclasses.dataclass(frozen=True, slots=True)
class QualityScores:
    """The judged output against the reference (quality.py, denoiser_calls.py, decode_calls.py)."""

    psnr_db: float | None = None
    ssim: float | None = None
    data_range: float | None = None
    nonfinite_fraction: float | None = None
    output_std: float | None = None
    reference_std: float | None = None
    latent_rel_error: float | None = None
    #: The denoiser's per-call error against the reference's on the same inputs.
    denoiser_sqnr_db: float | None = None
    #: The VAE decode's error on the reference's own latent (decode_calls.py).
    decode_sqnr_db: float | None = None

    def to_dict(self) -> dict[str, float]:
        return _set(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> QualityScores | None:
        """None for no numbers (an unjudged trial: older storages wrote {})."""
        return _known(cls, data) if data else None


def _stats_from_dict(data: Mapping[str, Any] | None) -> TimingStats | None:
    return _known(TimingStats, data) if data else None  # ci_rel_half_width, spread: derived


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """One trial to measure: the target, the knob assignment and how to time it."""

    target: Target
    assignment: dict[str, Value]
    warmup: int = timing.WARMUP
    #: Timed runs: at least `runs`, then more until the median's 95% interval is within
    #: `precision` of it, `time_cap_s` of runs are spent or `max_runs` are made (timing.py).
    runs: int = timing.RUNS
    seed: int = 0
    number: int | None = None  # the study's trial number, names the trial's log
    precision: float = timing.PRECISION
    time_cap_s: float = timing.TIME_CAP_S
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
    memory: MemoryReadings = dataclasses.field(default_factory=MemoryReadings)
    phases: Phases = dataclasses.field(default_factory=Phases)
    device_info: DeviceInfo = dataclasses.field(default_factory=DeviceInfo)
    error: str | None = None
    log_path: str | None = None
    #: The timed runs' statistics: median, 95% interval, spread (None: no timed runs).
    timing: TimingStats | None = None
    conditions_before: DeviceConditions | None = None
    conditions_after: DeviceConditions | None = None
    #: The judged output against the reference (None: not judged).
    quality: QualityScores | None = None

    @property
    def latency_median_s(self) -> float | None:
        return statistics.median(self.latencies_s) if self.latencies_s else None

    @property
    def latency_p90_s(self) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]

    @property
    def overhead_s(self) -> float | None:
        """Wall time of the trial that was not warm-up or timed runs: the cost of measuring."""
        return self.phases.overhead_s

    def to_dict(self) -> dict[str, Any]:
        conditions = {name: c.to_dict() for name, c in (("before", self.conditions_before),
                                                          ("after", self.conditions_after)) if c is not None}
        return {"status": self.status, "backend": self.backend, "device_name": self.device_name,
                "peak_metric": self.peak_metric, "latencies_s": list(self.latencies_s),
                "peak_bytes": self.peak_bytes, "memory": self.memory.to_dict(),
                "timings": self.phases.to_dict(), "device_info": self.device_info.to_dict(),
                "error": self.error, "log_path": self.log_path,
                "timing": self.timing.to_dict() if self.timing is not None else {},
                "conditions": conditions,
                "quality": self.quality.to_dict() if self.quality is not None else {}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        conditions = data.get("conditions") or {}
        return cls(status=data["status"], backend=data["backend"], device_name=data["device_name"],
                   peak_metric=data["peak_metric"], latencies_s=list(data.get("latencies_s") or []),
                   peak_bytes=data.get("peak_bytes"), memory=MemoryReadings.from_dict(data.get("memory")),
                   phases=Phases.from_dict(data.get("timings")),
                   device_info=DeviceInfo.from_dict(data.get("device_info")),
                   error=data.get("error"), log_path=data.get("log_path"),
                   timing=_stats_from_dict(data.get("timing")),
                   conditions_before=DeviceConditions.from_dict(conditions["before"]) if conditions.get("before") else None,
                   conditions_after=DeviceConditions.from_dict(conditions["after"]) if conditions.get("after") else None,
                   quality=QualityScores.from_dict(data.get("quality")))

    @classmethod
    def failure(cls, error: str, backend: str = "unknown") -> Measurement:
        return cls(status="failed", backend=backend, device_name="unknown", peak_metric="none",
                   error=error)

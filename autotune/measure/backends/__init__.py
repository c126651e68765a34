"""Device backends: how a worker syncs, resets and reads peak memory on one kind of device.

The worker talks to this protocol only, so a CUDA backend (or a fake in tests) slots in without
touching the measurement loop.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # records imports math_flags from this package: no import at run time
    from autotune.measure.records import DeviceConditions, DeviceInfo, MemoryReadings


class MemoryReading(Protocol):
    """Filled in when a `track` block exits."""

    peak_bytes: int | None
    memory: MemoryReadings


class DeviceBackend(Protocol):
    name: str
    peak_metric: str
    #: True when reading peaks is free, so the timed runs are also the memory runs; False when
    #: tracking slows the run (CPU tracker) and memory gets a run of its own.
    track_timed_runs: bool
    #: Facts about the device and the measurement setup, saved with each measurement.
    info: DeviceInfo

    def setup(self) -> None:
        """Called once at the start of the worker, before the pipeline is built."""

    def device_name(self) -> str: ...

    def synchronize(self) -> None: ...

    def prepare(self, pipe: Any) -> None:
        """Called once the pipeline is built and configured, before any run."""

    def track(self, pipe: Any) -> contextlib.AbstractContextManager[MemoryReading]:
        """Measure peak device memory over the runs inside the block."""

    def release(self) -> bool:
        """After a trial's pipeline is dropped: True when the device holds nothing of it."""

    def conditions(self) -> DeviceConditions:
        """Readings that explain a slow run (clocks, temperature, host load), before/after timing."""

    def is_oom(self, exc: BaseException) -> bool: ...

    def oom_details(self, exc: BaseException) -> MemoryReadings:
        """Memory facts known at an out-of-memory error (requested bytes, excess)."""


def get_backend(device: str, ceiling: int | None = None) -> DeviceBackend:
    if device == "cpu":
        from autotune.measure.backends.cpu import CpuBackend

        return CpuBackend()
    if device == "cuda":
        from autotune.measure.backends.cuda import CudaBackend

        return CudaBackend(ceiling)
    raise ValueError(f"no measurement backend for device {device!r}")


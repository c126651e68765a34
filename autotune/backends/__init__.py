"""Device backends: how a worker syncs, resets and reads peak memory on one kind of device.

The worker talks to this protocol only, so a CUDA backend (or a fake in tests) slots in without
touching the measurement loop.
"""
from __future__ import annotations

import contextlib
from typing import Any, Protocol


class MemoryReading(Protocol):
    """Filled in when a `track` block exits."""

    peak_bytes: int | None
    memory: dict[str, int]


class DeviceBackend(Protocol):
    name: str
    peak_metric: str

    def device_name(self) -> str: ...

    def synchronize(self) -> None: ...

    def prepare(self, pipe: Any) -> None:
        """Called once the pipeline is built and configured, before any run."""

    def track(self, pipe: Any) -> contextlib.AbstractContextManager[MemoryReading]:
        """Measure peak device memory over the runs inside the block."""

    def is_oom(self, exc: BaseException) -> bool: ...


def get_backend(device: str) -> DeviceBackend:
    if device == "cpu":
        from autotune.backends.cpu import CpuBackend

        return CpuBackend()
    raise NotImplementedError(f"no measurement backend for device {device!r} yet")


"""CPU backend. Its memory metric is the peak bytes of live tensor storages on the CPU, counted
by a dispatch-mode tracker seeded with the pipeline's weights: it sees exactly the tensors the
pipeline holds, where ru_maxrss is too noisy (allocator caches, imports) to decide with. Peak RSS
is recorded beside it."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from autotune.hardware import cpu_name
from autotune.measure.records import DeviceConditions, DeviceInfo, MemoryReadings

#: CPU allocations are aligned like this (c10 alignment); counting in these units matches what
#: the allocator really hands out for small tensors.
ALIGNMENT = 64


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


class LiveTensorTracker(TorchDispatchMode):
    """Counts each live storage on `device_type` once, from creation to its last reference."""

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type
        self.current = 0
        self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def add(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != self.device_type or tensor.is_meta:
            return
        if is_traceable_wrapper_subclass(tensor):
            # A wrapper (torchao's quantized weights) holds no data of its own: its storage
            # reports the logical size. What it holds is its inner tensors (values, scales).
            inner, _ = tensor.__tensor_flatten__()
            for name in inner:
                self.add(getattr(tensor, name))
            return
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # tensor subclasses without storage
            return
        if storage in self._seen:
            return
        nbytes = _aligned(storage.nbytes())
        self._seen[storage] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        self.current -= nbytes

    def seed(self, modules: list[torch.nn.Module]) -> None:
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                self.add(tensor)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.add(leaf)
        return out


@dataclasses.dataclass
class CpuReading:
    peak_bytes: int | None = None
    memory: MemoryReadings = dataclasses.field(default_factory=MemoryReadings)


class CpuBackend:
    name = "cpu"
    peak_metric = "cpu_live_tensor_peak"
    track_timed_runs = False  # the tracker slows every op: memory gets its own run

    def __init__(self) -> None:
        self.info = DeviceInfo()

    def setup(self) -> None:
        return None

    def device_name(self) -> str:
        return cpu_name()

    def synchronize(self) -> None:
        return None

    def prepare(self, pipe: Any) -> None:
        return None

    def release(self) -> bool:
        return True

    def conditions(self) -> DeviceConditions:
        """The load average: a busy host is the first suspect of a slow CPU run."""
        return DeviceConditions(load_average_1m=os.getloadavg()[0])

    @contextlib.contextmanager
    def track(self, pipe: Any) -> Iterator[CpuReading]:
        reading = CpuReading()
        tracker = LiveTensorTracker("cpu")
        tracker.seed([m for m in pipe.components.values() if isinstance(m, torch.nn.Module)])
        resident = tracker.current
        with tracker:
            yield reading
        reading.peak_bytes = tracker.peak
        reading.memory = MemoryReadings(
            cpu_live_tensor_peak=tracker.peak,
            resident_weights=resident,
            # Since the worker started (it may have measured earlier trials): informational.
            peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)

    def oom_details(self, exc: BaseException) -> MemoryReadings:
        return MemoryReadings()

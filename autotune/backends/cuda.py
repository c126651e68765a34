"""CUDA backend: the measurement protocol a GPU engineer would trust.

Three peaks, recorded side by side, because each answers a different question:
- `cuda_max_allocated`: bytes in live tensors (what the model needs),
- `cuda_max_reserved`: what PyTorch's caching allocator holds (what the process takes from the card),
- `nvml_process_peak`: what the driver sees for the process, CUDA context and workspaces included,
  sampled by the parent process by PID during the whole trial (`ProcessPeak`), so no sampling
  thread competes with the measured process for its interpreter.
The ceiling is checked against the largest of `nvml_process_peak` and reserved + measured context.

Ceiling emulation: on a card larger than `--max-vram`, the worker caps PyTorch with
`set_per_process_memory_fraction` so that reserved memory + the measured context fits the ceiling.
The context lives outside that cap, which is why it is measured first, in this process.

Every CUDA and NVML call goes through `cuda` and `nvml` objects, so tests run this logic against a
fake device on a machine without a GPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from autotune.errors import InvalidTargetError

log = logging.getLogger(__name__)

_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_TRIED = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")


def parse_oom_request(message: str) -> int | None:
    """Bytes the failed allocation asked for, from PyTorch's OOM message (a lower bound of the excess)."""
    match = _TRIED.search(message)
    return int(float(match.group(1)) * _UNIT[match.group(2)]) if match else None


def memory_fraction(ceiling: int, context: int, total: int) -> float | None:
    """Fraction of the card PyTorch may reserve so reserved + context fits the ceiling.

    None when the ceiling is at least the card (native: nothing to emulate).
    """
    if ceiling >= total:
        return None
    budget = ceiling - context
    if budget <= 0:
        raise InvalidTargetError(
            f"--max-vram ({ceiling} bytes) is below this process's CUDA context ({context} bytes): "
            "nothing could run; raise --max-vram"
        )
    return budget / total


class Nvml(Protocol):
    """The three NVML readings the backend needs (the real one wraps pynvml)."""

    def device_used_bytes(self) -> int: ...

    def process_used_bytes(self, pid: int) -> int | None: ...

    def driver(self) -> str | None: ...


def _read_conditions(nvml: Any) -> dict[str, Any]:
    """Clocks, temperature and power, when the reader offers them (fakes may not)."""
    read = getattr(nvml, "conditions", None)
    return read() if read is not None else {}


class PynvmlReader:
    """NVML for one device index. Per-process usage may be invisible inside containers (PID
    namespaces); callers then fall back to the device-wide delta over a baseline."""

    def __init__(self) -> None:
        import pynvml

        from autotune.hardware import nvml_handle_for_cuda0

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = nvml_handle_for_cuda0(pynvml)

    def device_used_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def process_used_bytes(self, pid: int) -> int | None:
        for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        return None

    def driver(self) -> str | None:
        value = self._nvml.nvmlSystemGetDriverVersion()
        return value.decode() if isinstance(value, bytes) else str(value)

    def conditions(self) -> dict[str, Any]:
        """SM/memory clocks (MHz), temperature (C), power (W), throttle reasons: what explains a
        run slower than the last one. A reading the device does not offer is left out."""
        nvml, handle = self._nvml, self._handle
        reads = {
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
            "throttle_reasons": lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle),
        }
        out: dict[str, Any] = {}
        for name, read in reads.items():
            try:
                out[name] = read()
            except (nvml.NVMLError, AttributeError):
                continue
        return out


def open_nvml() -> PynvmlReader | None:
    try:
        import pynvml
    except ImportError:
        log.warning("pynvml is not installed: the process peak falls back to reserved + context")
        return None
    try:
        return PynvmlReader()
    except pynvml.NVMLError as exc:
        log.warning("NVML unavailable (%s): the process peak falls back to reserved + context", exc)
        return None


class PeakSampler:
    """Polls a reading on a thread and keeps the maximum; NVML has no peak counter of its own."""

    def __init__(self, read: Any, interval_s: float = 0.005) -> None:
        self._read, self._interval = read, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nvml-peak")
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        value = self._read()
        if value is not None:
            self.peak = max(self.peak, value)
            self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class ProcessPeak(PeakSampler):
    """The NVML peak of another process (the worker), sampled from this one by PID."""

    def __init__(self, nvml: Nvml, pid: int, interval_s: float = 0.005) -> None:
        super().__init__(lambda: nvml.process_used_bytes(pid), interval_s)

    def merge_into(self, result: Any) -> None:
        """Add the sampled peak to a measurement; the ceiling is checked against the larger of
        it and reserved + context (which the worker computed)."""
        if not self.samples:
            return
        result.memory["nvml_process_peak"] = self.peak
        result.device_info["nvml_source"] = "process (sampled by the parent)"
        if result.status == "ok":
            result.peak_bytes = max(self.peak, result.peak_bytes or 0)


@dataclasses.dataclass
class CudaReading:
    peak_bytes: int | None = None
    memory: dict[str, int] = dataclasses.field(default_factory=dict)


class CudaBackend:
    name = "cuda"
    peak_metric = "cuda_process_peak"
    #: Reading CUDA peaks costs nothing, so the timed runs double as the memory runs.
    track_timed_runs = True

    def __init__(self, ceiling: int | None = None, *, cuda: Any = None, nvml: Nvml | None = None,
                 pid: int | None = None, sample_interval_s: float = 0.01,
                 sample_in_process: bool = False) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.cuda = cuda
        self.nvml = nvml
        self.ceiling = ceiling
        self.pid = os.getpid() if pid is None else pid
        self.sample_interval_s = sample_interval_s
        #: False in workers (the parent samples NVML by PID); True for in-process measuring.
        self.sample_in_process = sample_in_process
        self.context_bytes = 0
        self.fraction: float | None = None
        self._baseline_used = 0
        self._nvml_source = "none"
        self.info: dict[str, Any] = {}

    # -- setup, before the model is loaded ------------------------------------------------------

    def setup(self) -> None:
        """Create the CUDA context, measure it, then cap PyTorch to emulate the ceiling."""
        if self.nvml is None:
            self.nvml = open_nvml()
        self._baseline_used = self.nvml.device_used_bytes() if self.nvml else 0
        self.cuda.init()
        self.cuda.synchronize()
        props = self.cuda.get_device_properties(0)
        self.total_bytes = int(props.total_memory)
        self.context_bytes = self._measure_context()
        if self.ceiling is not None:
            self.fraction = memory_fraction(self.ceiling, self.context_bytes, self.total_bytes)
            if self.fraction is not None:
                self.cuda.set_per_process_memory_fraction(self.fraction, 0)
        self.info = {
            "device_name": props.name,
            "total_memory_bytes": self.total_bytes,
            "cuda_context_bytes": self.context_bytes,
            "ceiling_mode": "native" if self.fraction is None else "emulated",
            "memory_fraction": self.fraction,
            "nvml_source": self._nvml_source,
            "driver": self.nvml.driver() if self.nvml else None,
            "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        }
        log.info("cuda setup: %s", self.info)

    def _process_used(self) -> int | None:
        """The process's device memory: per-process NVML if visible, else device delta."""
        if self.nvml is None:
            return None
        used = self.nvml.process_used_bytes(self.pid)
        if used is not None:
            self._nvml_source = "process"
            return used
        self._nvml_source = "device_delta"
        return max(0, self.nvml.device_used_bytes() - self._baseline_used)

    def _measure_context(self) -> int:
        used = self._process_used()
        if used is None:
            return 0
        return max(0, used - int(self.cuda.memory_reserved()))

    # -- the DeviceBackend protocol ---------------------------------------------------------------

    def device_name(self) -> str:
        return str(self.info.get("device_name") or self.cuda.get_device_properties(0).name)

    def synchronize(self) -> None:
        self.cuda.synchronize()

    def prepare(self, pipe: Any) -> None:
        gc.collect()
        self.cuda.empty_cache()
        self.cuda.reset_peak_memory_stats()

    def release(self) -> bool:
        """After a trial's pipeline is dropped: give cached blocks back; True when no tensor of it
        is left on the device (else the parent replaces this process)."""
        self.cuda.synchronize()
        self.cuda.empty_cache()
        allocated = getattr(self.cuda, "memory_allocated", None)
        return allocated is None or int(allocated()) == 0

    def conditions(self) -> dict[str, Any]:
        return _read_conditions(self.nvml) if self.nvml is not None else {}

    @contextlib.contextmanager
    def track(self, pipe: Any) -> Iterator[CudaReading]:
        reading = CudaReading()
        self.cuda.synchronize()
        self.cuda.reset_peak_memory_stats()
        sampler = PeakSampler(self._process_used, self.sample_interval_s) if self.sample_in_process else None
        try:
            with sampler or contextlib.nullcontext():
                yield reading
                self.cuda.synchronize()
        finally:
            allocated = int(self.cuda.max_memory_allocated())
            reserved = int(self.cuda.max_memory_reserved())
            reading.memory = {"cuda_max_allocated": allocated, "cuda_max_reserved": reserved,
                              "cuda_context": self.context_bytes}
            peak = reserved + self.context_bytes
            if sampler is not None and sampler.samples:
                reading.memory["nvml_process_peak"] = sampler.peak
                peak = max(peak, sampler.peak)
            reading.peak_bytes = peak

    def is_oom(self, exc: BaseException) -> bool:
        oom_type = getattr(self.cuda, "OutOfMemoryError", None)
        return oom_type is not None and isinstance(exc, oom_type)

    def oom_details(self, exc: BaseException) -> dict[str, int]:
        requested = parse_oom_request(str(exc))
        details = {"cuda_max_reserved": int(self.cuda.max_memory_reserved()),
                   "cuda_context": self.context_bytes}
        if requested is not None:
            details["oom_requested_bytes"] = requested
            if self.ceiling is not None:
                # A lower bound: the run would have needed at least this much more.
                needed = details["cuda_max_reserved"] + self.context_bytes + requested
                excess = needed - self.ceiling
                details["oom_excess_bytes"] = excess if excess > 0 else requested
        return details

"""NVML, read defensively and from outside the measured process.

Containers, MIG and vGPU answer NO_PERMISSION or NOT_SUPPORTED, and in a PID namespace no listed
process has the worker's PID. A failed read is "no reading" (one warning per kind and process),
and a process's usage falls back to the device-wide usage over a baseline taken before its CUDA
context existed. `ProcessPeak` samples the worker by PID from the parent, so no sampling thread
runs inside the measured process.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from autotune.measure.backends.sampling import PeakSampler

if TYPE_CHECKING:
    from autotune.measure.records import Measurement

log = logging.getLogger(__name__)

_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    """NVML failures repeat every sample and every trial: say each kind once per process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


class Nvml(Protocol):
    """The three NVML readings the backend needs (the real one wraps pynvml); None: no reading."""

    def device_used_bytes(self) -> int | None: ...

    def process_used_bytes(self, pid: int) -> int | None: ...

    def driver(self) -> str | None: ...


def read_conditions(nvml: object) -> dict[str, float]:
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

    def device_used_bytes(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        except self._nvml.NVMLError as exc:
            warn_once("device", "NVML cannot read the device's memory (%s): no NVML peak", exc)
            return None

    def process_used_bytes(self, pid: int) -> int | None:
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._nvml.NVMLError as exc:
            warn_once("processes", "NVML cannot list the processes on the GPU (%s, as in containers, "
                       "MIG or vGPU): the peak is the device's usage over its baseline", exc)
            return None
        for proc in processes:
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        if processes and all(proc.pid != pid for proc in processes):
            warn_once("pid", "NVML lists no process with PID %d (a PID namespace?): the peak is the "
                       "device's usage over its baseline", pid)
        return None

    def driver(self) -> str | None:
        try:
            value = self._nvml.nvmlSystemGetDriverVersion()
        except self._nvml.NVMLError:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def conditions(self) -> dict[str, float]:
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
        out: dict[str, float] = {}
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


def used_by(nvml: Nvml, pid: int, baseline_used: int | None) -> tuple[int | None, str]:
    """A process's device memory and where the number came from: NVML's per-process usage where
    the PID is visible, else the device-wide usage over `baseline_used` (taken before the
    process's CUDA context existed), else no reading."""
    used = nvml.process_used_bytes(pid)
    if used is not None:
        return used, "process"
    if baseline_used is None:
        return None, "none"
    device = nvml.device_used_bytes()
    if device is None:
        return None, "none"
    return max(0, device - baseline_used), "device_delta"


class ProcessPeak(PeakSampler):
    """The NVML peak of another process (the worker), sampled from this one by PID; where the PID
    is not visible, the device-wide delta over the worker's baseline."""

    def __init__(self, nvml: Nvml, pid: int, interval_s: float = 0.005,
                 baseline_used: int | None = None) -> None:
        self._nvml, self._pid, self._baseline_used = nvml, pid, baseline_used
        self.source = "none"
        super().__init__(self._read_worker, interval_s)

    def _read_worker(self) -> int | None:
        used, source = used_by(self._nvml, self._pid, self._baseline_used)
        if used is not None:
            self.source = source
        return used

    def merge_into(self, result: Measurement) -> None:
        """Add the sampled peak to a measurement; the ceiling is checked against the larger of
        it and reserved + context (which the worker computed)."""
        if not self.samples:
            return
        result.memory.nvml_process_peak = self.peak
        result.device_info.nvml_source = f"{self.source} (sampled by the parent)"
        if result.status == "ok":
            result.peak_bytes = max(self.peak, result.peak_bytes or 0)

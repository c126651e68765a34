"""CUDA backend: the measurement protocol a GPU engineer would trust.

Three peaks, recorded side by side, because each answers a different question:
- `cuda_max_allocated`: bytes in live tensors (what the model needs),
- `cuda_max_reserved`: what PyTorch's caching allocator holds (what the process takes from the card),
- `nvml_process_peak`: what the driver sees for the process, CUDA context and workspaces included,
  sampled by the parent process by PID during the whole trial (`ProcessPeak`), so no sampling
  thread competes with the measured process for its interpreter.
The ceiling is checked against the largest of `nvml_process_peak` and reserved + measured context.

Ceiling emulation: on a card larger than `--max-vram`, the worker caps PyTorch with
`set_per_process_memory_fraction` so that reserved memory + the measured context fits the ceiling,
less the headroom a real card of that size lacks (`REAL_CARD_HEADROOM_BYTES`). The context lives
outside that cap, which is why it is measured first, in this process; where NVML cannot see it,
a calibrated floor stands in (`CONTEXT_FLOOR_BYTES`), never 0.

NVML is read defensively: containers, MIG and vGPU answer NO_PERMISSION or NOT_SUPPORTED, and in
a PID namespace no listed process has our PID. A failed read is "no reading" (one warning), and the
process peak falls back to the device-wide usage over the baseline taken before the worker's CUDA
context existed.

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
from collections.abc import Callable, Iterator
from typing import Any

from autotune.errors import InvalidTargetError
from autotune.measure.backends.nvml import Nvml, ProcessPeak, PynvmlReader, open_nvml, read_conditions, used_by, warn_once
from autotune.measure.backends.sampling import PeakSampler
from autotune.measure.records import DeviceConditions, DeviceInfo, MemoryReadings

#: Re-exported: the measurer samples the worker with these (nvml.py holds them).
__all__ = ["CudaBackend", "Nvml", "ProcessPeak", "PynvmlReader", "memory_fraction", "open_nvml",
           "parse_oom_request", "used_by"]

log = logging.getLogger(__name__)

_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_TRIED = re.compile(r"Tried to allocate ([0-9.]+) (B|KiB|MiB|GiB|TiB)")
_MiB = 2**20

#: The CUDA context when NVML cannot measure it: 518 MiB was measured on both GPUs these
#: searches ran on (H200: benchmarks/results/2026-11-26-nvidia-h200.json; H100: 2026-11-27),
#: rounded down. Published contexts are 300-600 MiB a process; counting 0 let a process pass a
#: ceiling it exceeded by that much.
CONTEXT_FLOOR_BYTES = 512 * _MiB
#: A measured context below this is a misreading (no CUDA context is that small): use the floor.
_CONTEXT_PLAUSIBLE_BYTES = 64 * _MiB
#: What an emulated ceiling keeps free for what a real card of that size lacks. PyTorch's own OOM
#: messages, as published in diffusers/PyTorch issues, give a card's usable total below its label:
#: 3.78-3.95 GiB for 4 GB cards, 10.92 for 11 GB, 11.91 for 12 GB, 23.65-23.70 for 24 GB (up to
#: 0.35 GiB less), before any display takes its share. 384 MiB covers the largest of those.
REAL_CARD_HEADROOM_BYTES = 384 * _MiB
#: Library workspaces (cuBLAS/cuBLASLt keep 32 MiB a handle on Hopper) may stay allocated after a
#: release when they cannot be cleared; a residue up to this, seen after the worker's first
#: release, is the worker's baseline rather than a tensor the trial left behind.
WORKSPACE_RESIDUE_LIMIT_BYTES = 256 * _MiB

def parse_oom_request(message: str) -> int | None:
    """Bytes the failed allocation asked for, from PyTorch's OOM message (a lower bound of the excess)."""
    match = _TRIED.search(message)
    return int(float(match.group(1)) * _UNIT[match.group(2)]) if match else None


def memory_fraction(ceiling: int, context: int, total: int, headroom: int = 0) -> float | None:
    """Fraction of the card PyTorch may reserve so reserved + context + headroom fits the ceiling.

    None when the ceiling is at least the card (native: nothing to emulate).
    """
    if ceiling >= total:
        return None
    budget = ceiling - context - headroom
    if budget <= 0:
        raise InvalidTargetError(
            f"--max-vram ({ceiling} bytes) leaves nothing once this process's CUDA context ({context} bytes) "
            f"and the {headroom} bytes a real card of that size lacks are kept: raise --max-vram"
        )
    return budget / total


def _torch_clear_workspaces() -> None:
    """Free the cuBLAS/cuBLASLt workspaces PyTorch keeps after a matmul (private API, so looked up)."""
    import torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


@dataclasses.dataclass
class CudaReading:
    peak_bytes: int | None = None
    memory: MemoryReadings = dataclasses.field(default_factory=MemoryReadings)


class CudaBackend:
    name = "cuda"
    peak_metric = "cuda_process_peak"
    #: Reading CUDA peaks costs nothing, so the timed runs double as the memory runs.
    track_timed_runs = True

    def __init__(self, ceiling: int | None = None, *, cuda: Any = None, nvml: Nvml | None = None,
                 pid: int | None = None, sample_interval_s: float = 0.01,
                 sample_in_process: bool = False,
                 clear_workspaces: Callable[[], None] | None = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
            clear_workspaces = clear_workspaces or _torch_clear_workspaces
        self.cuda = cuda
        self.nvml = nvml
        self.ceiling = ceiling
        self.pid = os.getpid() if pid is None else pid
        self.sample_interval_s = sample_interval_s
        #: False in workers (the parent samples NVML by PID); True for in-process measuring.
        self.sample_in_process = sample_in_process
        self._clear_workspaces = clear_workspaces
        self.context_bytes = CONTEXT_FLOOR_BYTES
        self.fraction: float | None = None
        self._baseline_used: int | None = None
        self._nvml_source = "none"
        #: What a release may leave allocated (set after the first trial's release); None: not yet.
        self._residue_baseline: int | None = None
        self._trial_since_release = False
        self.info = DeviceInfo()

    # -- setup, before the model is loaded ------------------------------------------------------

    def setup(self) -> None:
        """Create the CUDA context, measure it, then cap PyTorch to emulate the ceiling."""
        if self.nvml is None:
            self.nvml = open_nvml()
        self._baseline_used = self.nvml.device_used_bytes() if self.nvml else None
        self.cuda.init()
        self.cuda.synchronize()
        props = self.cuda.get_device_properties(0)
        self.total_bytes = int(props.total_memory)
        self.context_bytes, context_source = self._measure_context()
        headroom = 0
        if self.ceiling is not None and self.ceiling < self.total_bytes:
            headroom = REAL_CARD_HEADROOM_BYTES
            self.fraction = memory_fraction(self.ceiling, self.context_bytes, self.total_bytes, headroom)
            if self.fraction is not None:
                self.cuda.set_per_process_memory_fraction(self.fraction, 0)
        note = None
        if headroom:
            note = (f"emulated on a {self.total_bytes / 2**30:.1f} GiB card: PyTorch may reserve the ceiling less "
                    f"the CUDA context and {headroom // _MiB} MiB that a real card of this size does not offer")
        self.info = DeviceInfo(
            device_name=props.name, total_memory_bytes=self.total_bytes,
            cuda_context_bytes=self.context_bytes, cuda_context_source=context_source,
            ceiling_mode="native" if self.fraction is None else "emulated",
            memory_fraction=self.fraction, emulated_headroom_bytes=headroom, ceiling_note=note,
            nvml_source=self._nvml_source, nvml_baseline_used_bytes=self._baseline_used,
            driver=self.nvml.driver() if self.nvml else None,
            pytorch_cuda_alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
        log.info("cuda setup: %s", self.info)

    def _process_used(self) -> int | None:
        """The process's device memory: per-process NVML if visible, else device delta."""
        if self.nvml is None:
            return None
        used, source = used_by(self.nvml, self.pid, self._baseline_used)
        if used is not None:
            self._nvml_source = source
        return used

    def _measure_context(self) -> tuple[int, str]:
        """The CUDA context's bytes and how they were known: measured through NVML, else the
        calibrated floor. Never 0: the context counts against the ceiling like any tensor."""
        used = self._process_used()
        if used is None:
            return CONTEXT_FLOOR_BYTES, "floor (NVML gave no reading)"
        measured = used - int(self.cuda.memory_reserved())
        if measured < _CONTEXT_PLAUSIBLE_BYTES:
            warn_once("context", "NVML put the CUDA context at %d bytes, too small to be true: "
                       "counting %d bytes instead", measured, CONTEXT_FLOOR_BYTES)
            return CONTEXT_FLOOR_BYTES, f"floor (NVML read {measured} bytes)"
        return measured, f"nvml ({self._nvml_source})"

    # -- the DeviceBackend protocol ---------------------------------------------------------------

    def device_name(self) -> str:
        return str(self.info.device_name or self.cuda.get_device_properties(0).name)

    def synchronize(self) -> None:
        self.cuda.synchronize()

    def prepare(self, pipe: Any) -> None:
        gc.collect()
        self.cuda.empty_cache()
        self.cuda.reset_peak_memory_stats()
        self._trial_since_release = True

    def release(self) -> bool:
        """After a trial's pipeline is dropped: clear library workspaces, give cached blocks back;
        True when the device holds no more than after the worker's first trial (else the parent
        replaces this process). cuBLAS keeps its workspaces allocated after any matmul: where they
        cannot be cleared, a small first residue is the baseline, not a leak."""
        self.cuda.synchronize()
        if self._clear_workspaces is not None:
            self._clear_workspaces()
        self.cuda.empty_cache()
        residue = int(self.cuda.memory_allocated())
        if self._residue_baseline is None and self._trial_since_release:
            self._residue_baseline = residue if residue <= WORKSPACE_RESIDUE_LIMIT_BYTES else 0
        self._trial_since_release = False
        clean = residue <= (self._residue_baseline or 0)
        if not clean:
            log.info("%d bytes still allocated after the release (baseline %d): a fresh worker measures next",
                     residue, self._residue_baseline or 0)
        return clean

    def conditions(self) -> DeviceConditions:
        return DeviceConditions.from_dict(read_conditions(self.nvml) if self.nvml is not None else {})

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
            reading.memory = MemoryReadings(cuda_max_allocated=allocated, cuda_max_reserved=reserved,
                                            cuda_context=self.context_bytes)
            peak = reserved + self.context_bytes
            if sampler is not None and sampler.samples:
                reading.memory.nvml_process_peak = sampler.peak
                peak = max(peak, sampler.peak)
            reading.peak_bytes = peak

    def is_oom(self, exc: BaseException) -> bool:
        oom_type = getattr(self.cuda, "OutOfMemoryError", None)
        return oom_type is not None and isinstance(exc, oom_type)

    def oom_details(self, exc: BaseException) -> MemoryReadings:
        requested = parse_oom_request(str(exc))
        reserved = int(self.cuda.max_memory_reserved())
        details = MemoryReadings(cuda_max_reserved=reserved, cuda_context=self.context_bytes)
        if requested is not None:
            details.oom_requested_bytes = requested
            if self.ceiling is not None:
                # A lower bound: the run would have needed at least this much more.
                excess = reserved + self.context_bytes + requested - self.ceiling
                details.oom_excess_bytes = excess if excess > 0 else requested
        return details

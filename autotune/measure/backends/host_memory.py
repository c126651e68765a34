"""Host RAM of a worker, read from outside it: its resident set, sampled by the parent.

Offloading moves weights into host RAM, and the OOM killer, not CUDA, ends a run that takes too
much of it. `ru_maxrss` inside the worker is the process's lifetime maximum, so a warm worker
cannot tell one trial's peak from an earlier one's; the parent samples `/proc/<pid>/status` during
each trial instead (the same way it samples NVML), and records the peak and the resident set the
trial started from. The warm worker's own pristine copy of the weights is in both numbers: it is
memory the machine really spends while that trial runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.measure.backends.sampling import PeakSampler

if TYPE_CHECKING:
    from autotune.measure.records import Measurement


def resident_bytes(pid: int) -> int | None:
    """VmRSS of process `pid` in bytes; None where /proc is not there or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


class HostPeak(PeakSampler):
    """The worker's resident-set peak over one trial, and where it started."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.before = resident_bytes(pid)
        super().__init__(lambda: resident_bytes(pid), interval_s, name="host-rss")

    def merge_into(self, result: Measurement) -> None:
        if not self.samples:
            return
        result.memory.host_rss_peak = self.peak
        if self.before is not None:
            result.memory.host_rss_before = self.before

"""The worker's host RAM, sampled from the parent by PID (autotune/measure/backends/host_memory.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from autotune.measure.records import MemoryReadings
from autotune.measure.backends.host_memory import HostPeak, resident_bytes
from autotune.measure.measurer import Measurement

MiB = 2**20


def test_resident_bytes_reads_a_live_process_and_none_for_a_gone_one():
    assert resident_bytes(os.getpid()) > 10 * MiB
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert resident_bytes(gone.pid) is None


def test_the_peak_of_a_process_that_grows_and_shrinks_is_kept():
    grow = ("import sys, time; sys.stdin.readline(); x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); "
            "time.sleep(0.5); del x; time.sleep(0.3)")
    child = subprocess.Popen([sys.executable, "-c", grow], stdin=subprocess.PIPE)
    with HostPeak(child.pid, interval_s=0.005) as peak:
        child.stdin.write(b"go\n")
        child.stdin.flush()
        child.wait(timeout=30)
    assert peak.before is not None and peak.before < 100 * MiB
    assert peak.peak >= peak.before + 250 * MiB  # the 300 MiB it held for half a second
    m = Measurement(status="ok", backend="cpu", device_name="x", peak_metric="cpu_live_tensor_peak")
    peak.merge_into(m)
    assert m.memory == MemoryReadings(host_rss_peak=peak.peak, host_rss_before=peak.before)

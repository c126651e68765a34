"""A peak read by polling: NVML and /proc have no peak counter of their own."""
from __future__ import annotations

import threading
from collections.abc import Callable


class PeakSampler:
    """Polls `read` on a thread and keeps the maximum; a None reading is no sample."""

    def __init__(self, read: Callable[[], int | None], interval_s: float = 0.005, name: str = "peak") -> None:
        self._read, self._interval = read, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"{name}-sampler")
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

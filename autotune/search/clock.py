"""The search's clock: every deadline of the loop reads it here, so a benchmark can run the real
loop on a simulated clock (benchmarks/decision_quality.py replaces `time` in this module)."""
from __future__ import annotations

import time


def now() -> float:
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)

"""planner/seeding.py: predictably slow values (half precision on a CPU without it) come last."""
from __future__ import annotations

import pytest

from autotune import hardware
from autotune.knobs import all_knobs
from autotune.planner.seeding import predictably_slow, seed_order

DEFAULTS = {k.name: k.default for k in all_knobs()}
CANDIDATES = [{**DEFAULTS, "dtype": d, "channels_last": c} for d in ("fp32", "bf16", "fp16") for c in (False, True)]


def test_without_native_half_the_fp32_candidates_come_first_and_half_precision_still_follows(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_lacks_native_half", lambda flags=None: True)
    order = seed_order(CANDIDATES, "cpu", k=6)
    assert [a["dtype"] for a in order] == ["fp32", "fp32", "bf16", "bf16", "fp16", "fp16"]
    assert predictably_slow(order[2], "cpu") and not predictably_slow(order[1], "cpu")


def test_with_native_half_every_dtype_is_covered_first(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_lacks_native_half", lambda flags=None: False)
    order = seed_order(CANDIDATES, "cpu", k=3)
    assert [a["dtype"] for a in order] == ["fp32", "bf16", "fp16"]
    assert not any(predictably_slow(a, "cpu") for a in CANDIDATES)


@pytest.mark.parametrize("lacks", [True, False])
def test_cuda_is_never_predictably_slow(monkeypatch, lacks):
    monkeypatch.setattr(hardware, "cpu_lacks_native_half", lambda flags=None: lacks)
    assert [a["dtype"] for a in seed_order(CANDIDATES, "cuda", k=3)] == ["bf16", "fp16", "fp32"]

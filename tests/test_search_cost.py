"""benchmarks/search_cost.py: the regret is measured side by side, and the long search is named by
what it measured."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from autotune.target import Target

TARGET = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**31, device="cpu")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_cost.py"


@pytest.fixture(scope="module")
def search_cost():
    spec = importlib.util.spec_from_file_location("search_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_cost"] = module
    spec.loader.exec_module(module)
    return module


class FakeComparer:
    """`compare` as the measurer answers it: block medians per job index, each arm at its own speed
    times a per-session offset (a slow worker shifts all its rounds)."""

    def __init__(self, speeds: dict[str, float], offsets: list[float]) -> None:
        self.speeds, self.offsets, self.orders = speeds, offsets, []

    def compare(self, jobs, rounds, runs_per_round, deadline):
        session = len(self.orders)
        self.orders.append([j.assignment["dtype"] for j in jobs])
        return {i: [self.speeds[j.assignment["dtype"]] * self.offsets[session] for _ in range(rounds)]
                for i, j in enumerate(jobs)}, ""


def _best(dtype: str, latency: float) -> dict:
    return {"assignment": {"dtype": dtype}, "latency_median_s": latency, "peak_bytes": 1, "settings": f"dtype={dtype}"}


def test_regret_is_the_side_by_side_ratio_not_the_search_medians(search_cost):
    # The searches read the short winner 20% faster; side by side it is 10% slower.
    fake = FakeComparer({"fp32": 1.10, "bf16": 1.00}, offsets=[1.0, 1.3, 0.9, 1.1])
    side = search_cost.side_by_side(TARGET, _best("fp32", 0.8), _best("bf16", 1.0),
                                    sessions=4, log_dir=Path("unused"), time_cap_s=1.0, measurer=fake)
    assert side["sessions"] == 4 and not side["same_settings"]
    assert side["regret"] == pytest.approx(0.10)
    low, high = side["regret_ci"]
    assert low == pytest.approx(0.10) and high == pytest.approx(0.10)  # the same ratio in every session
    assert fake.orders == [["fp32", "bf16"], ["bf16", "fp32"]] * 2  # new workers, alternating order
    assert side["confirmation"]["winner"] == 1


def test_the_interval_widens_with_disagreeing_sessions(search_cost):
    class Noisy(FakeComparer):
        def compare(self, jobs, rounds, runs_per_round, deadline):
            medians, note = super().compare(jobs, rounds, runs_per_round, deadline)
            if len(self.orders) % 2:  # the short winner's worker reads slow in odd sessions
                first = next(i for i, j in enumerate(jobs) if j.assignment["dtype"] == "fp32")
                medians[first] = [v * 1.2 for v in medians[first]]
            return medians, note

    side = search_cost.side_by_side(TARGET, _best("fp32", 0.8), _best("bf16", 1.0),
                                    sessions=4, log_dir=Path("unused"), time_cap_s=1.0,
                                    measurer=Noisy({"fp32": 1.0, "bf16": 1.0}, offsets=[1.0] * 4))
    low, high = side["regret_ci"]
    assert low < side["regret"] < high and low < 0.1 < high
    assert math.exp(sum(side["session_log_ratios"]) / 4) - 1 == pytest.approx(side["regret"])


def test_the_same_settings_are_not_measured_again(search_cost):
    fake = FakeComparer({}, offsets=[])
    side = search_cost.side_by_side(TARGET, _best("fp32", 0.8), _best("fp32", 1.0),
                                    sessions=4, log_dir=Path("unused"), time_cap_s=1.0, measurer=fake)
    assert side["same_settings"] and side["regret"] == 0.0 and fake.orders == []


def test_the_long_search_is_named_by_its_trials_and_coverage(search_cost):
    whole = {"measured": 96, "distinct_measured": 96, "pruned": 0, "stopped_by": "space exhausted"}
    part = {"measured": 48, "distinct_measured": 48, "pruned": 0, "stopped_by": "sampler"}
    assert search_cost.covers_space(whole, 96) and not search_cost.covers_space(part, 96)
    assert search_cost.long_search_name({**whole, "covers_space": True}, 96) == (
        "96-trial search (every one of the 96 valid combinations; stopped by space exhausted)")
    assert search_cost.long_search_name({**part, "covers_space": False}, 96) == (
        "48-trial search (48 of the 96 valid combinations; stopped by sampler)")

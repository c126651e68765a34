"""benchmarks/decision_quality.py: the simulated device tells the truth it was given, and one
seeded search through the real `Search` is scored against it."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import random
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


@pytest.fixture(scope="module")
def dq():
    spec = importlib.util.spec_from_file_location("decision_quality", ROOT / "benchmarks" / "decision_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["decision_quality"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["decision_quality"]


def test_the_table_multiplies_latencies_and_adds_peaks(dq):
    table = dq.Table()
    latency, peak, noise = table.truth({"dtype": "fp16", "compile": "full", "channels_last": True})
    assert latency == pytest.approx(0.94 * 0.71 * 0.62 * 0.995)
    assert peak == int((7.00 - 3.14 + 0.01 - 0.39) * GiB)
    assert noise == table.compiled_noise and table.truth({})[2] == table.eager_noise
    # a compile mode the table does not name runs as a full compile
    assert table.truth({"compile": "full-cuda-graphs"})[0] == table.truth({"compile": "full"})[0]
    # decisions are scored on the median run, noise included: eager reads 1 + 0.3 ln 2 its floor
    assert table.typical({}) == pytest.approx(0.94 * (1 + 0.30 * math.log(2)))


def test_a_new_worker_reads_slow_and_settles(dq):
    clock = dq.Clock()
    quiet = dq.Noise(process_sd=0.0, drift_sd=0.0, slow_start=(1.3, 1.3))
    device = dq.SimDevice(dataclasses.replace(dq.Table(), eager_noise=1e-9), quiet, seed=0, clock=clock)
    worker = dq._Worker(random.Random(0), quiet)
    runs = [device.run(worker, {}, math.inf) for _ in range(20)]
    assert runs[0] == pytest.approx(0.94 * 1.3, rel=1e-6)
    assert runs[-1] == pytest.approx(0.94, rel=0.01) and runs == sorted(runs, reverse=True)
    assert clock.now == pytest.approx(sum(runs))


def test_one_seeded_search_is_scored_against_the_truth(dq, tmp_path):
    scenario = next(s for s in dq.SCENARIOS if s.name == "tight budget")
    best = dq.space_best(scenario.table, scenario.ceiling)
    outcome = dq.run_one(scenario, 0, dq.Noise(), best, tmp_path)
    again = dq.run_one(scenario, 0, dq.Noise(), best, tmp_path)
    assert outcome == again  # seeded: the same search, the same decision
    assert outcome.regret >= 0 and outcome.regret_space >= outcome.regret - 1e-12
    assert outcome.within_2pct == (outcome.regret <= 0.02 + 1e-12)
    assert outcome.time_s <= scenario.budget_s + 1e-6
    summary = dq.summarize([outcome, again])
    assert summary["searches"] == 2 and summary["misses_confirmed"] + summary["misses_not_confirmed"] \
        == 2 * (not outcome.within_2pct)


def test_arms_sharing_a_simulated_worker_share_its_offset(dq):
    # a large process offset, no other noise: in one worker the ratio is the truth, in two it moves
    quiet = dq.Noise(process_sd=0.2, load_sd=0.0, drift_sd=0.0, slow_start=(1.0, 1.0))
    table = dataclasses.replace(dq.Table(), eager_noise=1e-9)
    jobs = [types.SimpleNamespace(number=n, assignment=a) for n, a in ((1, {}), (2, {"dtype": "fp16"}))]

    def ratio(groups):
        device = dq.SimDevice(table, quiet, seed=3, clock=dq.Clock())
        medians, note = dq.SimMeasurer(device).compare(jobs, rounds=2, runs_per_round=1, deadline=math.inf,
                                                       groups=groups)
        assert note == "" and sorted(medians) == [0, 1]
        return medians[1][-1] / medians[0][-1]

    assert ratio([[0, 1]]) == pytest.approx(0.71, rel=1e-6)
    assert ratio(None) != pytest.approx(0.71, rel=0.01)

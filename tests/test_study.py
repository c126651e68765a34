"""The search loop, driven by a deterministic fake measurer (no processes, no pipelines)."""
from __future__ import annotations

import math

import optuna
import pytest
from conftest import FakeMeasurer, fake_measurement

from autotune.errors import NoFeasibleTrialError, StudyError
from autotune.knobs import Context
from autotune.measure import Measurement
from autotune.space import SearchSpace, assignment_key
from autotune.study import Search, classify
from autotune.target import Target
from autotune.tune import profile_from

MiB = 2**20
CTX = Context(device="cpu", components=frozenset({"unet", "vae", "text_encoder"}))


def target(ceiling: int = 100 * MiB) -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=ceiling)


def small_space() -> SearchSpace:
    """dtype x vae_slicing only: 6 assignments."""
    return SearchSpace(CTX, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling"])


def cost(a):
    """fp16/bf16 are faster and smaller; slicing saves memory, costs time."""
    latency = {"fp32": 2.0, "fp16": 1.0, "bf16": 1.1}[a["dtype"]] + (0.3 if a["vae_slicing"] else 0)
    peak = {"fp32": 80, "fp16": 40, "bf16": 40}[a["dtype"]] * MiB - (10 * MiB if a["vae_slicing"] else 0)
    return latency, peak


def new_search(tmp_path, measurer, ceiling=100 * MiB, **kw):
    return Search(target(ceiling), small_space(), measurer, storage=tmp_path / "s.journal", **kw)


def test_first_trial_is_the_default_baseline(tmp_path):
    fake = FakeMeasurer(cost)
    new_search(tmp_path, fake).run(1)
    assert fake.jobs[0].assignment == small_space().default()


def test_each_assignment_measured_once_and_search_stops_when_space_is_exhausted(tmp_path):
    fake = FakeMeasurer(cost)
    result = new_search(tmp_path, fake).run(50)
    keys = [assignment_key(j.assignment) for j in fake.jobs]
    assert len(keys) == len(set(keys)) == small_space().size() == 6
    assert len(result.records) == 6


def test_best_is_fastest_feasible_and_alternatives_are_pareto(tmp_path):
    fake = FakeMeasurer(cost)
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    assert result.best.assignment["dtype"] == "fp16" and not result.best.assignment["vae_slicing"]
    assert all(r.feasible for r in result.pareto)
    assert [r.assignment["dtype"] for r in result.alternatives] == ["fp16"]  # fp16 + slicing: 30 MiB
    assert result.count("over_ceiling") == 2  # both fp32 assignments exceed 60 MiB
    profile = profile_from(result)
    assert profile.best.settings == result.best.assignment
    assert profile.search["trials_measured"] == 6 and profile.search["feasible"] == 4


def test_nothing_feasible_raises_with_counts(tmp_path):
    result = new_search(tmp_path, FakeMeasurer(cost), ceiling=1 * MiB).run(3)
    assert result.best is None
    with pytest.raises(NoFeasibleTrialError, match="no trial fits.*3 measured \\(3 over it"):
        profile_from(result)


def test_oom_is_complete_and_infeasible_failure_is_fail(tmp_path):
    def outcomes(a):
        if a["dtype"] == "fp32":
            return Measurement(status="oom", backend="fake", device_name="fake", peak_metric="p",
                               memory={"oom_excess_bytes": 50 * MiB}, error="OutOfMemoryError")
        if a["dtype"] == "bf16":
            return Measurement.failure("worker killed by SIGKILL")
        return cost(a)

    search = new_search(tmp_path, FakeMeasurer(outcomes))
    result = search.run(6)
    states = {t.number: t.state for t in search.study.trials}
    for record in result.records:
        if record.outcome == "oom":
            assert states[record.number] == optuna.trial.TrialState.COMPLETE
            assert record.constraint == pytest.approx(0.5)
        elif record.outcome == "failed":
            assert states[record.number] == optuna.trial.TrialState.FAIL
    assert {r.outcome for r in result.records} == {"oom", "failed", "feasible"}
    assert result.best.assignment["dtype"] == "fp16"


def test_classify():
    ok = fake_measurement(None, latency=1.0, peak=150)
    assert classify(ok, 100) == ("over_ceiling", 0.5)
    assert classify(fake_measurement(None, peak=100), 100) == ("feasible", 0.0)
    outcome, value = classify(Measurement.failure("x"), 100)
    assert outcome == "failed" and math.isnan(value)


def test_resume_continues_without_remeasuring(tmp_path):
    first = FakeMeasurer(cost)
    new_search(tmp_path, first).run(3)
    second = FakeMeasurer(cost)
    resumed = new_search(tmp_path, second, resume=True)
    result = resumed.run(3)
    assert len(result.records) == 6
    measured_before = {assignment_key(j.assignment) for j in first.jobs}
    assert not measured_before & {assignment_key(j.assignment) for j in second.jobs}


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    with pytest.raises(StudyError, match="nothing to resume"):
        new_search(tmp_path, FakeMeasurer(cost), resume=True)


def test_without_resume_a_new_study_starts_and_the_old_one_is_kept(tmp_path):
    a = new_search(tmp_path, FakeMeasurer(cost))
    a.run(1)
    b = new_search(tmp_path, FakeMeasurer(cost))
    assert a.study_name != b.study_name
    names = optuna.get_all_study_names(optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))))
    assert set(names) == {a.study_name, b.study_name}


def test_interrupted_trial_is_failed_on_resume(tmp_path):
    search = new_search(tmp_path, FakeMeasurer(cost))
    search.run(1)
    search.study.ask()  # a trial left RUNNING, as after a crash mid-measurement
    resumed = new_search(tmp_path, FakeMeasurer(cost), resume=True)
    assert not resumed.study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_sqlite_storage_url(tmp_path):
    search = Search(target(), small_space(), FakeMeasurer(cost), storage=f"sqlite:///{tmp_path}/s.db")
    assert len(search.run(2).records) == 2


def test_resume_with_another_space_is_refused_before_any_trial(tmp_path):
    new_search(tmp_path, FakeMeasurer(cost)).run(2)
    other = SearchSpace(CTX, exclude=["layerwise_fp8", "channels_last", "attention", "vae_tiling", "dtype=fp16"])
    with pytest.raises(StudyError, match="other choices for dtype"):
        Search(target(), other, FakeMeasurer(cost), storage=tmp_path / "s.journal", resume=True)


@pytest.mark.parametrize("storage, fragment", [
    ("foo://bar", "cannot open the study storage"),
    ("sqlite:////proc/no/such.db", "cannot open the study storage"),
    ("/proc/no/such/s.journal", "cannot open the study storage"),
])
def test_unusable_storage_is_one_study_error(storage, fragment):
    with pytest.raises(StudyError, match=fragment):
        Search(target(), small_space(), FakeMeasurer(cost), storage=storage)


def test_resume_without_a_journal_creates_nothing(tmp_path):
    with pytest.raises(StudyError, match="nothing to resume"):
        Search(target(), small_space(), FakeMeasurer(cost), storage=tmp_path / "none.journal", resume=True)
    assert not (tmp_path / "none.journal").exists()

"""The search loop, driven by a deterministic fake measurer (no processes, no pipelines)."""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

import optuna
import pytest
from helpers.searches import CTX, SEARCHED, MiB, cost, small_space, target
from helpers.fakes import FakeMeasurer, fake_measurement

from autotune.measure.records import MemoryReadings, QualityScores
from autotune.search import confirm_plan
from autotune.errors import NoFeasibleTrialError, StudyError
from autotune.measure.measurer import Measurement
from autotune.knobs.space import SearchSpace, assignment_key
from autotune.search.study import Search
from autotune.search.trials import classify
from autotune.jobs import profile_from


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
    space = small_space()
    assert tuple(space.searched_knobs) == SEARCHED
    assert len(keys) == len(set(keys)) == space.size() == len(space.choices["dtype"]) * len(space.choices["vae_slicing"])
    assert len(result.records) == space.size()


def test_best_is_fastest_feasible_and_alternatives_are_pareto(tmp_path):
    fake = FakeMeasurer(cost)
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    assert result.best.assignment["dtype"] == "fp16" and not result.best.assignment["vae_slicing"]
    assert all(r.feasible for r in result.pareto)
    assert [r.assignment["dtype"] for r in result.alternatives] == ["fp16"]  # fp16 + slicing: 30 MiB
    assert result.count("over_ceiling") == 2  # both fp32 assignments exceed 60 MiB
    profile = profile_from(result)
    assert profile.best.settings == result.best.assignment
    assert profile.search.trials_measured == 6 and profile.search.feasible == 4


def test_nothing_feasible_raises_with_counts(tmp_path):
    result = new_search(tmp_path, FakeMeasurer(cost), ceiling=1 * MiB).run(3)
    assert result.best is None
    with pytest.raises(NoFeasibleTrialError, match="no trial fits.*3 measured \\(3 over it"):
        profile_from(result)


def test_oom_is_complete_and_infeasible_failure_is_fail(tmp_path):
    def outcomes(a):
        if a["dtype"] == "fp32":
            return Measurement(status="oom", backend="fake", device_name="fake", peak_metric="p",
                               memory=MemoryReadings(oom_excess_bytes=50 * MiB), error="OutOfMemoryError")
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
    ("foo://bar", "unknown database 'foo'"),
    ("sqlite:////proc/no/such.db", "cannot open the study storage"),
    ("/proc/no/such/s.journal", "cannot open the study journal"),
])
def test_unusable_storage_is_one_study_error(storage, fragment):
    with pytest.raises(StudyError, match=fragment):
        Search(target(), small_space(), FakeMeasurer(cost), storage=storage)


def test_resume_without_a_journal_creates_nothing(tmp_path):
    with pytest.raises(StudyError, match="nothing to resume"):
        Search(target(), small_space(), FakeMeasurer(cost), storage=tmp_path / "none.journal", resume=True)
    assert not (tmp_path / "none.journal").exists()


# ---- honest bookkeeping, the time budget, the confirmed winner ----------------------------------

def test_duplicate_proposals_are_not_complete_trials(tmp_path):
    search = new_search(tmp_path, FakeMeasurer(cost))
    result = search.run(50)
    complete = search.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(result.records) == 6  # no phantom COMPLETE trial per duplicate


def with_wall(seconds):
    def measured(a):
        latency, peak = cost(a)
        m = fake_measurement(None, latency=latency, peak=peak)
        m.phases.wall_s = seconds
        return m
    return measured


def test_no_trial_starts_unless_its_expected_duration_fits(tmp_path):
    fake = FakeMeasurer(with_wall(30.0))  # each trial has taken 30 s
    search = new_search(tmp_path, fake)
    result = search.run(6, time_budget_s=20.0)
    # the first trial has no history and runs; the next is expected to take 30 s of the 20
    assert len(fake.jobs) == 1 and result.stop_reason == "nothing fits the time left"
    assert fake.timeouts[0] is not None and fake.timeouts[0] <= 20.0  # stopped at the deadline


def test_a_compile_mode_not_tried_yet_is_expected_to_take_the_longest_trial(tmp_path):
    walls = iter([10.0, 30.0, 20.0])

    def measured(a):
        m = fake_measurement(None, latency=cost(a)[0], peak=cost(a)[1])
        m.phases.wall_s = next(walls)
        return m

    search = new_search(tmp_path, FakeMeasurer(measured))
    search.run(3)
    plain = search.space.default()
    assert search.expected_duration_s(plain) == pytest.approx(20.0)  # the median of its class
    # a compile needs a fresh process and has no history: the longest trial, not "unknown"
    assert search.expected_duration_s({**plain, "compile": "full"}) == pytest.approx(30.0)


def test_without_a_budget_trials_have_no_deadline(tmp_path):
    fake = FakeMeasurer(cost)
    new_search(tmp_path, fake).run(2)
    assert fake.timeouts == [None, None]


def test_durations_add_up_over_resumed_runs(tmp_path):
    first = new_search(tmp_path, FakeMeasurer(cost))
    first.run(2)
    resumed = new_search(tmp_path, FakeMeasurer(cost), resume=True)
    result = resumed.run(1)
    assert result.duration_s > first.duration_s > 0


def test_interrupted_trials_are_counted(tmp_path):
    search = new_search(tmp_path, FakeMeasurer(cost))
    search.run(1)
    search.study.ask()
    assert new_search(tmp_path, FakeMeasurer(cost), resume=True).run(1).interrupted == 1


def test_the_winner_is_confirmed_side_by_side(tmp_path):
    # fp16 (1.0 s) and bf16 (1.1 s) are within 10%; re-measured, fp16 is faster in every round of
    # every session: significant, and the profile says so.
    fake = FakeMeasurer(cost, rounds_cost=lambda a, r: {"fp16": 1.0, "bf16": 1.2}.get(a["dtype"], 2.0))
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    # three sessions (the fewest that decide) in new workers, each in the other order
    assert [[j.assignment["dtype"] for j in jobs] for jobs in fake.compared] == [
        ["fp16", "bf16"], ["bf16", "fp16"], ["fp16", "bf16"]]
    conf = result.confirmation
    assert conf.winner == result.best.number and result.best.assignment["dtype"] == "fp16"
    assert conf.significant and conf.margin == pytest.approx(0.2)
    sessions = confirm_plan.DECIDING_SESSIONS
    rounds = confirm_plan.rounds("cpu")  # on CPU: fewer, of one run each
    assert rounds < confirm_plan.ROUNDS and conf.runs_per_round == 1 == confirm_plan.runs_per_round("cpu")
    assert conf.sessions == sessions and conf.rounds == sessions * rounds  # warm-up rounds dropped
    profile = profile_from(result)
    assert profile.confirmation.significant and profile.confirmation.rounds == sessions * rounds
    assert fake.groups == [[[0], [1]]] * 3  # 40 + 40 MiB do not fit under 60 MiB together: a worker each


def test_finalists_that_fit_under_the_ceiling_together_share_a_worker(tmp_path):
    fake = FakeMeasurer(cost, rounds_cost=lambda a, r: {"fp16": 1.0, "bf16": 1.2}.get(a["dtype"], 2.0))
    new_search(tmp_path, fake, ceiling=90 * MiB).run(6)
    # fp16 and bf16 (40 MiB each) share one; the defaults (fp32, 80 MiB), the reference arm of
    # the first two sessions, need a worker of their own
    dtypes = [[[jobs[i].assignment["dtype"] for i in g] for g in groups] for jobs, groups in zip(fake.compared, fake.groups)]
    assert dtypes == [[["fp16", "bf16"], ["fp32"]], [["fp32"], ["bf16", "fp16"]], [["fp16", "bf16"]]]


def test_a_confirmation_cut_to_one_session_decides_nothing(tmp_path):
    # the second session's workers could not load in time: one session is one process per arm,
    # so a process offset could decide it; the search order stands, and the reason is kept
    fake = FakeMeasurer(cost, rounds_cost=lambda a, r: {"fp16": 1.2, "bf16": 1.0}.get(a["dtype"], 2.0))
    first = fake._compare

    def compare(jobs, rounds, runs_per_round, deadline, groups=None):
        if fake.compared:
            fake.compared.append(list(jobs))
            return {}, "trial 2 could not be reloaded (time budget)"
        return first(jobs, rounds, runs_per_round, deadline, groups)

    fake.compare = compare
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    assert len(fake.compared) == 2 and result.confirmation is None
    assert result.best.assignment["dtype"] == "fp16"  # the search's order, not the one session's
    assert "did not complete (1 of 2 sessions completed)" in result.confirmation_skipped
    assert "could not be reloaded" in result.confirmation_skipped


def cost_tie(a):
    latency, peak = cost(a)
    return (latency, peak - (5 * MiB if a["dtype"] == "bf16" else 0))


def test_an_equivalent_candidate_with_less_memory_wins(tmp_path):
    noise = [0.004, 0.002, 0.006, 0.001, 0.003, 0.005, 0.002]  # bf16 0.1-0.6% slower, every round
    fake = FakeMeasurer(cost_tie, rounds_cost=lambda a, r: 1.0 + (noise[r % 7] if a["dtype"] == "bf16" else 0))
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    assert result.best.assignment["dtype"] == "bf16"
    assert result.confirmation.decided_by.startswith("memory (latency equivalent")


def test_a_difference_within_the_noise_keeps_the_faster(tmp_path):
    # bf16 needs less memory, but its worker runs -1% to +5% off fp16's from one session to the
    # next: it is not shown within 2%, so it is no tie; more sessions run while it is undecided
    offsets = [0.04, -0.01, 0.03, 0.0, 0.05, -0.01, 0.03, 0.02]
    fake = FakeMeasurer(cost_tie, rounds_cost=lambda a, r: 1.0 + (offsets[len(fake.compared) - 1]
                                                                   if a["dtype"] == "bf16" else 0))
    result = new_search(tmp_path, fake, ceiling=60 * MiB).run(6)
    assert result.best.assignment["dtype"] == "fp16"
    assert result.confirmation.decided_by.startswith("latency")
    # ...up to the CPU's cap (this search is on CPU, where every session starts fresh workers)
    assert len(fake.compared) == confirm_plan.max_sessions("cpu") > confirm_plan.SESSIONS
    assert result.confirmation.sessions == len(fake.compared)


def test_the_defaults_are_a_reference_arm_of_the_confirmation(tmp_path):
    # under 100 MiB the fp32 defaults fit: they are re-measured beside the finalists, last
    fake = FakeMeasurer(cost, rounds_cost=lambda a, r: {"fp16": 1.0, "bf16": 1.2}.get(a["dtype"], 2.0))
    result = new_search(tmp_path, fake, ceiling=100 * MiB).run(6)
    assert [j.assignment["dtype"] for j in fake.compared[0]] == ["fp16", "bf16", "fp32"]
    conf = result.confirmation
    assert conf.reference == result.records[0].number and conf.speedup == pytest.approx(2.0)
    assert result.best.assignment["dtype"] == "fp16"


def test_an_underpowered_confirmation_is_not_run_and_the_reason_is_recorded(tmp_path):
    # two candidates x 2 sessions x 3 rounds of 1 s runs (+ loads) need ~68 s; 30 s are given:
    # no confirmation fits, so the search does not stop early to keep time for one; at the end
    # none runs (no underpowered rounds), and the search says why
    fake = FakeMeasurer(cost, rounds_cost=lambda a, r: 1.0)
    search = new_search(tmp_path, fake, ceiling=60 * MiB)
    result = search.run(6, time_budget_s=30)
    assert result.stop_reason == "trials" and result.confirmation is None and not fake.compared
    assert "no time to confirm" in result.confirmation_skipped
    assert search.study.user_attrs["autotune:confirmation_skipped"] == result.confirmation_skipped


def test_racing_passes_the_incumbent_to_each_trial(tmp_path):
    fake = FakeMeasurer(cost)
    new_search(tmp_path, fake).run(3)
    assert fake.jobs[0].incumbent_s is None  # nothing measured yet
    assert fake.jobs[1].incumbent_s == pytest.approx(2.0)  # the fp32 defaults came first


# ---- the quality guard ---------------------------------------------------------------------------

def smooth_image(shift: float = 0.0):
    y, x = np.mgrid[0:16, 0:16] / 16
    return np.stack([x, y, np.clip(x * y + shift, 0, 1)], axis=-1)[None].astype(np.float32)


def with_quality(psnr_by_dtype):
    """fp16 is the fastest but drifts; bf16 keeps close to the reference."""
    def measured(a):
        latency, peak = cost(a)
        m = fake_measurement(None, latency=latency, peak=peak)
        m.quality = QualityScores(psnr_db=psnr_by_dtype[a["dtype"]], ssim=0.9)
        return m
    return measured


class JudgingMeasurer(FakeMeasurer):
    """The fake measurer, judging as the worker does: the reference job writes `image(settings)`
    as the reference; a trial given a reference compares `image(settings)` with it
    (quality.compare). With `enforce_ceiling`, a peak over the job's ceiling runs out of memory,
    as under an emulated ceiling on a GPU; `reference_fails` makes the reference run fail."""

    def __init__(self, cost_fn=cost, image=lambda a: smooth_image(), enforce_ceiling=False, reference_fails=False):
        super().__init__(cost_fn)
        self.image, self.enforce_ceiling, self.reference_fails = image, enforce_ceiling, reference_fails

    def __call__(self, job, *, timeout_s=None):
        from autotune.measure import quality

        self.jobs.append(job)
        latency, peak = self.cost(job.assignment)
        if job.save_reference and self.reference_fails:
            return fake_measurement(job, status="failed", error="RuntimeError: no")
        if self.enforce_ceiling and peak > job.target.max_vram:
            return fake_measurement(job, status="oom", error="OutOfMemoryError")
        m = fake_measurement(job, latency=latency, peak=peak)
        images = self.image(job.assignment)
        if job.save_reference:
            quality.save_reference(Path(job.save_reference), images, None)
        elif job.reference:
            m.quality = quality.compare(images, None, quality.load_reference(Path(job.reference)))
        return m

    @property
    def reference_jobs(self):
        return [j for j in self.jobs if j.save_reference]


def drifting(psnr_by_dtype):
    """Images that are the reference's plus noise sized to score about `psnr_by_dtype[dtype]`."""
    def image(a):
        rms = 10 ** (-psnr_by_dtype[a["dtype"]] / 20)
        noise = np.random.default_rng(1).choice([-rms, rms], size=smooth_image().shape)
        return (smooth_image() + noise).astype(np.float32)
    return image


def test_a_lossy_winner_below_the_floor_is_rejected_and_an_exact_knob_passes(tmp_path):
    fake = JudgingMeasurer(image=drifting({"fp32": 100.0, "fp16": 22.0, "bf16": 45.0}))
    search = new_search(tmp_path, fake, min_psnr=30.0, reference_dir=tmp_path / "refs")
    result = search.run(6)
    by_dtype = {(r.assignment["dtype"], r.assignment["vae_slicing"]): r for r in result.records}
    assert by_dtype[("fp16", False)].outcome == "below_quality"   # fastest, but lossy and far off
    assert by_dtype[("bf16", False)].outcome == "feasible"
    assert result.best.assignment["dtype"] == "bf16"
    assert by_dtype[("fp32", True)].outcome == "feasible"  # an exact knob within float noise
    profile = profile_from(result)
    assert profile.best.quality["psnr_db"] == pytest.approx(45.0, abs=0.5)
    assert "fp32 reference" in profile.best.quality_against
    summary = profile.search.quality
    assert summary.min_psnr_db == 30.0 and summary.reference == search.reference_assignment()
    assert summary.reference_dtype == "fp32" and summary.problem is None


def test_an_exact_setting_far_from_the_reference_is_a_bug_in_the_knob_not_a_pass():
    from autotune.search.summary import ReferenceInfo
    from autotune.search.trials import QualityGuard, quality_verdict

    guard = QualityGuard(30.0, ReferenceInfo(reference_dtype="fp32", made="without the memory ceiling"))
    noisy = fake_measurement(None)
    noisy.quality = QualityScores(psnr_db=12.0, ssim=0.3)
    constraint, issue = quality_verdict({"dtype": "fp32", "vae_slicing": True}, noisy, guard)
    assert constraint > 0 and issue.kind == "exact_changed"
    assert issue.message.startswith("vae_slicing=True changed the output: PSNR 12.0 dB")
    assert quality_verdict({"dtype": "fp16"}, noisy, guard)[0] > 0  # lossy: under the floor
    noisy.quality = QualityScores(psnr_db=99.0, ssim=1.0)
    assert quality_verdict({"dtype": "fp32", "vae_slicing": True}, noisy, guard) == (0.0, None)
    assert quality_verdict({"dtype": "fp32", "vae_slicing": True}, noisy, None) == (0.0, None)


def test_a_lossy_setting_is_judged_per_call_and_a_cache_on_its_image():
    from autotune.search.options import DEFAULT_MIN_PSNR, DEFAULT_MIN_SQNR
    from autotune.search.summary import ReferenceInfo
    from autotune.search.trials import QualityGuard, quality_verdict

    guard = QualityGuard(DEFAULT_MIN_PSNR, ReferenceInfo(reference_dtype="fp32", made="without the memory ceiling"),
                         min_sqnr=DEFAULT_MIN_SQNR)
    trial = fake_measurement(None)
    # per call as layerwise fp8 on the structured built-in at 30 steps (26.7 dB); the image under
    # its 30 dB floor: per call passes
    trial.quality = QualityScores(psnr_db=28.0, ssim=0.98, denoiser_sqnr_db=26.7, decode_sqnr_db=100.0)
    constraint, issue = quality_verdict({"dtype": "fp32", "layerwise_fp8": True}, trial, guard)
    assert constraint < 0 and issue is None
    # the same numbers from a cache: its calls replay exactly, its image is what it changes
    assert quality_verdict({"dtype": "fp32", "cache": "first-block-0.12"}, trial, guard)[0] > 0
    # ... and from a quantized text encoder, whose prompt embeddings the replay replaces
    assert quality_verdict({"dtype": "fp32", "quantize_text": "int8-weight-only"}, trial, guard)[0] > 0
    # a guard stored before the per-call floor judges the image, as it did
    old = QualityGuard.from_dict({"min_psnr": 30.0, "reference": guard.reference.to_dict()})
    assert old.min_sqnr is None and quality_verdict({"dtype": "fp32", "layerwise_fp8": True}, trial, old)[0] > 0
    assert QualityGuard.from_dict(guard.to_dict()) == guard


def test_an_exact_setting_that_returns_nan_is_reported_as_a_bug_not_feasible(tmp_path):
    def image(a):
        return np.full_like(smooth_image(), np.nan) if a["vae_slicing"] and a["dtype"] == "fp32" else smooth_image()

    fake = JudgingMeasurer(image=image)
    result = new_search(tmp_path, fake, min_psnr=30.0, reference_dir=tmp_path / "refs").run(6)
    broken = next(r for r in result.records if r.assignment["vae_slicing"] and r.assignment["dtype"] == "fp32")
    assert broken.outcome == "below_quality" and broken.quality_issue.kind == "exact_changed"
    assert "vae_slicing=True changed the output: 100% of its output is NaN" in broken.quality_issue.message
    assert broken not in result.pareto and result.best is not broken
    issues = profile_from(result).search.quality.issues
    assert [i.trial for i in issues] == [broken.number] and issues[0].kind == "exact_changed"


def test_at_a_ceiling_the_exact_reference_does_not_fit_a_lossy_winner_is_still_judged(tmp_path, monkeypatch):
    """fp32 (80 MiB) runs out of memory under 60 MiB on a GPU: the reference is made without the ceiling."""
    fake = JudgingMeasurer(image=drifting({"fp32": 100.0, "fp16": 22.0, "bf16": 45.0}), enforce_ceiling=True)
    from autotune import hardware

    monkeypatch.setattr(hardware, "device_name", lambda device: "Fake GPU")  # no GPU here
    monkeypatch.setattr(hardware, "fingerprint", lambda device: hardware.Fingerprint(device_name="Fake GPU"))
    gpu_target = dataclasses.replace(target(60 * MiB), device="cuda")
    search = Search(gpu_target, small_space(), fake, storage=tmp_path / "s.journal", min_psnr=30.0,
                    reference_dir=tmp_path / "refs")
    result = search.run(6)
    [made] = fake.reference_jobs
    assert made.target.max_vram > 80 * MiB and made.assignment == search.reference_assignment()
    assert result.count("oom") == 2 and search.has_reference
    assert result.best.assignment["dtype"] == "bf16" and result.best.measurement.quality.psnr_db > 40
    entries = [profile_from(result).best, *profile_from(result).alternatives]
    assert all(e.quality and "fp32 reference" in e.quality_against for e in entries)


def test_the_reference_is_made_once_per_target_whatever_the_ceiling(tmp_path):
    fake = JudgingMeasurer()
    first = new_search(tmp_path, fake, ceiling=100 * MiB, min_psnr=30.0, reference_dir=tmp_path / "refs")
    first.run(2)
    second = new_search(tmp_path, fake, ceiling=50 * MiB, min_psnr=30.0, reference_dir=tmp_path / "refs")
    second.run(2)
    assert len(fake.reference_jobs) == 1 and second.reference_path == first.reference_path
    assert first.study_name != second.study_name
    trials = [j for j in fake.jobs if not j.save_reference]
    assert all(j.reference == str(first.reference_path) for j in trials)


def test_without_a_reference_lossy_trials_are_not_feasible_unless_allowed(tmp_path):
    fake = JudgingMeasurer(reference_fails=True)
    result = new_search(tmp_path / "a", fake, min_psnr=30.0, reference_dir=tmp_path / "a" / "refs").run(6)
    assert result.best.assignment["dtype"] == "fp32"  # only the exact settings are trusted
    lossy = [r for r in result.records if r.assignment["dtype"] != "fp32"]
    assert lossy and all(r.outcome == "below_quality" and r.quality_issue.kind == "unjudged" for r in lossy)
    profile = profile_from(result)
    assert "reference run without the memory ceiling ended in failed" in profile.search.quality.problem
    assert profile.best.quality_against.startswith("not judged:")
    allowed = new_search(tmp_path / "b", JudgingMeasurer(reference_fails=True), min_psnr=30.0,
                         reference_dir=tmp_path / "b" / "refs", allow_unjudged=True).run(6)
    assert allowed.best.assignment["dtype"] == "fp16" and profile_from(allowed).search.quality.allow_unjudged


def test_a_search_reusing_trials_judges_every_entry_it_stores(tmp_path):
    """Trials an earlier search could not judge (its reference failed) are measured again, not
    stored unjudged; judged ones are reused as they are."""
    refs = tmp_path / "refs"
    new_search(tmp_path, JudgingMeasurer(reference_fails=True), ceiling=100 * MiB, min_psnr=30.0,
               reference_dir=refs).run(6)
    fake = JudgingMeasurer(image=drifting({"fp32": 100.0, "fp16": 40.0, "bf16": 45.0}))
    second = new_search(tmp_path, fake, ceiling=60 * MiB, min_psnr=30.0, reference_dir=refs)
    assert second.reused == 0  # nothing the failed search stored was judged
    result = second.run(6)
    assert all(r.measurement.quality for r in result.records)
    third_fake = JudgingMeasurer()
    third = new_search(tmp_path, third_fake, ceiling=50 * MiB, min_psnr=30.0, reference_dir=refs)
    assert third.reused == 6 and not third_fake.jobs  # judged against the same reference: reused
    result = third.run(0)
    profile = profile_from(result)
    for entry in [profile.best, *profile.alternatives]:
        assert entry.quality["psnr_db"] > 30 and "fp32 reference" in entry.quality_against
    assert all(r.measurement.quality and r.quality_issue is None for r in result.records)


def test_amortize_ranks_by_latency_plus_compile_share(tmp_path):
    def compiled(a):
        latency, peak = cost(a)
        m = fake_measurement(None, latency=latency, peak=peak)
        m.phases.compile_s = 60.0 if a["dtype"] == "fp16" else 0.0  # fp16 stands for "compiled"
        return m

    assert new_search(tmp_path / "a", FakeMeasurer(compiled), ceiling=60 * MiB).run(6).best.assignment["dtype"] == "fp16"
    short_job = new_search(tmp_path / "b", FakeMeasurer(compiled), ceiling=60 * MiB, amortize=10).run(6)
    assert short_job.best.assignment["dtype"] == "bf16"  # 1.0 + 60/10 > 1.1
    long_job = new_search(tmp_path / "c", FakeMeasurer(compiled), ceiling=60 * MiB, amortize=10_000).run(6)
    assert long_job.best.assignment["dtype"] == "fp16"


def test_measurements_are_reused_under_another_ceiling(tmp_path):
    first = new_search(tmp_path, FakeMeasurer(cost), ceiling=100 * MiB)
    first.run(6)  # everything measured, peaks 30-80 MiB
    second = FakeMeasurer(cost)
    search = new_search(tmp_path, second, ceiling=50 * MiB)
    result = search.run(6)
    assert second.jobs == [] and search.reused == 6 == len(result.records)  # nothing measured again
    by_dtype = {(r.assignment["dtype"], r.assignment["vae_slicing"]): r.outcome for r in result.records}
    assert by_dtype[("fp32", False)] == "over_ceiling" and by_dtype[("fp16", False)] == "feasible"
    assert result.best.assignment["dtype"] == "fp16"
    complete = search.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all(t.user_attrs["reused_from"].startswith(first.study_name + "#") for t in complete)


def test_an_out_of_memory_result_is_not_reused_under_a_higher_ceiling(tmp_path):
    def oom_fp32(a):
        if a["dtype"] == "fp32":
            return Measurement(status="oom", backend="fake", device_name="fake", peak_metric="fake_peak")
        return cost(a)

    new_search(tmp_path, FakeMeasurer(oom_fp32), ceiling=50 * MiB).run(6)
    again = FakeMeasurer(cost)
    new_search(tmp_path, again, ceiling=100 * MiB).run(6)
    assert sorted(j.assignment["dtype"] for j in again.jobs) == ["fp32", "fp32"]  # measured again


# -- several processes, one study: the claim protocol (shared_study.py) ----------------------------
# Each "process" here is a trial of one study; the protocol only reads and writes the storage.

def _claims_study(tmp_path) -> optuna.Study:
    return optuna.create_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))))


def _claim(study, trial, key, limit=None, measured=frozenset()):
    from autotune.search import shared_study

    return shared_study.claim(study, trial, key, lambda trials: set(measured), limit, poll_s=0.05)


def test_a_claim_that_holds_is_ahead_of_an_earlier_trial_that_claims_after_it(tmp_path):
    """Trial numbers do not order claims: a trial asked first may claim last, after a later one
    read no other claim and holds. The earlier one must then yield: it may neither measure the
    same settings again nor take the last slot."""
    study = _claims_study(tmp_path)
    first, middle, last = study.ask(), study.ask(), study.ask()
    assert _claim(study, last, "a", limit=2) is None
    assert _claim(study, first, "a", limit=2) == "duplicate"
    study.tell(first, state=optuna.trial.TrialState.PRUNED)
    assert _claim(study, middle, "b", limit=2, measured={"m"}) == "no slot"
    assert _claim(study, middle, "b", limit=3, measured={"m"}) is None


@pytest.mark.parametrize("decision", ["holds", "yields"])
def test_a_claim_waits_for_a_later_claimant_that_has_not_decided(tmp_path, decision):
    """A later trial whose claim is written but not decided may have read before this claim was
    written (and then holds) or after it (and then yields to it): wait for its decision."""
    import threading
    import time

    from autotune.search import shared_study

    study = _claims_study(tmp_path)
    first, second = study.ask(), study.ask()
    second.set_user_attr(shared_study.CLAIM, "a")
    decide = ((lambda: second.set_user_attr(shared_study.HOLDS, second.number)) if decision == "holds"
              else (lambda: study.tell(second, state=optuna.trial.TrialState.PRUNED)))
    timer = threading.Timer(0.5, decide)
    timer.start()
    start = time.monotonic()
    verdict = _claim(study, first, "a")
    timer.join()
    assert time.monotonic() - start >= 0.4
    assert verdict == ("duplicate" if decision == "holds" else None)


def test_a_dead_workers_queued_retry_keeps_its_settings_and_its_slot(tmp_path):
    """The retry Optuna queues for a dead worker's trial copies its claim: until a worker takes it,
    no other trial measures those settings or takes its slot, and the worker that takes it (even
    late, with a higher number) measures it."""
    from autotune.search import shared_study

    study = _claims_study(tmp_path)
    dead = study.ask()
    dead.suggest_categorical("dtype", ["fp32", "bf16"])
    assert _claim(study, dead, "k", limit=2) is None
    fresh = study.ask()
    # what optuna.storages.fail_stale_trials does once the dead worker's heartbeat is stale
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[dead.number])
    assert _claim(study, fresh, "k", limit=2) == "duplicate"
    assert _claim(study, fresh, "other", limit=2, measured={"m"}) == "no slot"
    study.tell(fresh, state=optuna.trial.TrialState.PRUNED)
    retry = study.ask()
    assert retry.params == dead.params and retry.number > fresh.number
    assert _claim(study, retry, "k", limit=2, measured={"m"}) is None
    assert study.trials[retry.number].user_attrs[shared_study.HOLDS] == retry.number

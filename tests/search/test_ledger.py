"""The ledger (search/ledger.py): the keys stay the strings older searches stored, and what it
writes reads back the same."""
from __future__ import annotations

import math

import optuna
import pytest

from autotune.knobs.space import assignment_key
from autotune.measure.measurer import Measurement
from autotune.planner.prediction import Prediction
from autotune.search import ledger
from autotune.search.stop import StopReason
from autotune.search.ledger import open_storage
from autotune.search.trials import TrialRecord
from autotune.target import Target

MiB = 2**20


def target(ceiling: int = 100 * MiB) -> Target:
    return Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=ceiling)


def measurement(latency: float, peak: int) -> Measurement:
    return Measurement(status="ok", backend="fake", device_name="fake", peak_metric="fake",
                       latencies_s=[latency] * 3, peak_bytes=peak)


def test_the_keys_are_the_stored_strings():
    """Old storages and Optuna's dashboard read these names: they never change."""
    assert (ledger.ATTR_MEASUREMENT, ledger.ATTR_ASSIGNMENT, ledger.ATTR_OUTCOME, ledger.ATTR_PREDICTION,
            ledger.ATTR_DUPLICATE, ledger.ATTR_INVALID, ledger.ATTR_SKIPPED, ledger.ATTR_REUSED_FROM) == (
        "measurement", "assignment", "outcome", "prediction", "duplicate_of", "invalid", "skipped", "reused_from")
    assert (ledger.ATTR_TARGET, ledger.ATTR_TARGET_KEY, ledger.ATTR_MEASUREMENT_KEY, ledger.ATTR_SPACE) == (
        "target", "target_key", "measurement_key", "space")
    assert ledger.ATTR_MIN_PSNR == "autotune:min_psnr" and ledger.ATTR_REFERENCE == "autotune:reference"
    assert ledger.ATTR_GUARD == "autotune:quality_guard" and ledger.ATTR_DURATION == "autotune:duration_s"
    assert ledger.ATTR_CONFIRMATION == "autotune:confirmation"
    assert ledger.ATTR_CONFIRMATION_SKIPPED == "autotune:confirmation_skipped"
    assert ledger.ATTR_JUDGED_AGAINST == "autotune:judged_against"
    assert (ledger.ATTR_CLAIM, ledger.ATTR_HOLDS, ledger.ATTR_WORKER) == (
        "autotune:claim", "autotune:holds", "autotune:worker")
    assert (ledger.CONSTRAINT_MEMORY, ledger.CONSTRAINT_QUALITY) == ("memory_over_ceiling", "quality_below_floor")


def _old_study(path) -> optuna.Study:
    """A study as an older autotune stored it: literal keys, no guard, no amortize attribute."""
    study = optuna.create_study(study_name="old", storage=open_storage(path), directions=["minimize", "minimize"])
    study.set_user_attr("target", target().to_dict())
    study.set_user_attr("target_key", target().key())
    study.set_user_attr("autotune:min_psnr", None)
    study.set_user_attr("autotune:reference", None)
    dist = {"dtype": optuna.distributions.CategoricalDistribution(["fp32", "fp16"])}
    for number, (dtype, latency, peak) in enumerate([("fp32", 2.0, 80 * MiB), ("fp16", 1.0, 40 * MiB)]):
        study.add_trial(optuna.trial.create_trial(
            params={"dtype": dtype}, distributions=dist, values=[latency, float(peak)],
            user_attrs={"assignment": {"dtype": dtype}, "measurement": measurement(latency, peak).to_dict(),
                        "outcome": "feasible"},
            constraints={"memory_over_ceiling": (peak - 100 * MiB) / (100 * MiB), "quality_below_floor": 0.0}))
    study.add_trial(optuna.trial.create_trial(params={"dtype": "fp16"}, distributions=dist,
                                              state=optuna.trial.TrialState.PRUNED, user_attrs={"duplicate_of": 1}))
    return study


def test_an_old_stored_study_reads_back(tmp_path):
    _old_study(tmp_path / "s.journal")
    result = ledger.read_result(tmp_path / "s.journal", "old")
    assert [r.number for r in result.records] == [0, 1]  # the duplicate is not a record
    assert result.best.assignment == {"dtype": "fp16"} and result.guard is None and result.amortize is None
    assert result.stop_reason is StopReason.EXPORTED and result.proposals == 3
    assert [r.number for r in result.pareto] == [1]


def test_an_old_study_judged_under_a_lower_ceiling(tmp_path):
    study = _old_study(tmp_path / "s.journal")
    records = ledger.records_of(study, target(50 * MiB), None)
    assert [r.outcome for r in records] == ["over_ceiling", "feasible"]


def test_what_is_written_reads_back(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"), directions=["minimize", "minimize"])
    trial = study.ask()
    trial.suggest_categorical("dtype", ["fp32", "fp16"])
    prediction = Prediction(total_bytes=41 * MiB, peak_phase="VAE decode", resident_weights_bytes=20 * MiB,
                            activation_bytes=21 * MiB, workspace_bytes=0, allocator_bytes=0, runtime_bytes=0,
                            phases={"VAE decode": 41 * MiB}, metric="fake")
    written = TrialRecord(trial.number, {"dtype": "fp16"}, measurement(1.0, 40 * MiB), "feasible", -0.6,
                          prediction)
    ledger.write_measured(study, trial, written, judged_against="ref-key")
    stored = study.trials[trial.number]
    assert stored.state == optuna.trial.TrialState.COMPLETE and stored.values == [1.0, 40.0 * MiB]
    assert stored.user_attrs["autotune:judged_against"] == "ref-key"
    assert stored.user_attrs["prediction"] == prediction.to_dict()
    (read,) = ledger.records_of(study, target(), None)
    assert (read.assignment, read.outcome, read.prediction) == (written.assignment, "feasible", written.prediction)
    assert read.constraint == pytest.approx(-0.6)
    assert ledger.measured_keys(study.trials) == {assignment_key({"dtype": "fp16"})}


def test_gate_answers_are_stored_as_pruned_with_their_reason(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"), directions=["minimize", "minimize"])
    for write in (lambda t: ledger.write_duplicate(study, t, 0), lambda t: ledger.write_invalid(study, t),
                  lambda t: ledger.write_skipped(study, t, "expected 9 s, 1 s left")):
        write(study.ask())
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert [ledger.not_measured_kind(t) for t in study.trials] == ["duplicate", "invalid", "skipped (time budget)"]
    assert math.isinf(ledger.values(Measurement.failure("x"))[0])

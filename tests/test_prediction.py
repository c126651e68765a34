"""The planner's prediction (planner/prediction.py): one codec, the keys every version stored, and
predictions stored by older versions read back as they were."""
from __future__ import annotations

import logging

import optuna
import pytest

from autotune.planner.prediction import Prediction
from autotune.search import ledger
from autotune.search.ledger import open_storage
from autotune.target import Target

MiB = 2**20

#: What `autotune plan --json` prints and the study storage holds, in this order.
KEYS = ["total_bytes", "peak_phase", "resident_weights_bytes", "activation_bytes", "workspace_bytes",
        "allocator_bytes", "runtime_bytes", "phases", "metric", "context_floor_bytes", "host_bytes",
        "lower_bound_bytes"]

#: A prediction as the first planner stored it (46296b3): no context floor; its lower bound
#: counted the CUDA runtime term.
FIRST_STORED = {"total_bytes": 3200 * MiB, "peak_phase": "denoiser step", "resident_weights_bytes": 1700 * MiB,
                "activation_bytes": 900 * MiB, "workspace_bytes": 0, "allocator_bytes": 100 * MiB,
                "runtime_bytes": 500 * MiB, "phases": {"text encoder": 1800 * MiB, "denoiser step": 3200 * MiB,
                                                       "VAE decode": 2900 * MiB},
                "metric": "cuda_process_peak", "lower_bound_bytes": 3100 * MiB}


def gpu_prediction() -> Prediction:
    return Prediction(total_bytes=3200 * MiB, peak_phase="denoiser step", resident_weights_bytes=1700 * MiB,
                      activation_bytes=900 * MiB, workspace_bytes=0, allocator_bytes=100 * MiB,
                      runtime_bytes=500 * MiB, phases={"denoiser step": 3200 * MiB, "VAE decode": 2900 * MiB},
                      metric="cuda_process_peak", context_floor_bytes=300 * MiB, host_bytes=1700 * MiB)


def test_to_dict_writes_the_stored_keys_and_reads_back():
    p = gpu_prediction()
    stored = p.to_dict()
    assert list(stored) == KEYS
    assert stored["lower_bound_bytes"] == (1700 + 900 + 300) * MiB and stored["phases"] == dict(p.phases)
    assert Prediction.from_dict(stored) == p


def test_a_prediction_stored_before_the_context_floor_reads_back_as_stored():
    p = Prediction.from_dict(FIRST_STORED)
    assert p.lower_bound_bytes == FIRST_STORED["lower_bound_bytes"]  # prunes as it did then
    assert p.context_floor_bytes == 500 * MiB and p.total_bytes == 3200 * MiB
    assert p.host_bytes is None and not p.surely_over_ram(1, 0.0)  # host RAM was not predicted then
    again = p.to_dict()
    assert {k: again[k] for k in FIRST_STORED} == FIRST_STORED  # the keys it had, the values it had


def test_a_cpu_prediction_without_floor_or_bound_reads_back_with_no_floor():
    stored = {k: v for k, v in gpu_prediction().to_dict().items() if k not in ("context_floor_bytes", "lower_bound_bytes")}
    assert Prediction.from_dict(stored).context_floor_bytes == 0


def test_a_stored_prediction_missing_a_key_says_which():
    with pytest.raises(ValueError, match="no peak_phase, metric"):
        Prediction.from_dict({k: v for k, v in FIRST_STORED.items() if k not in ("peak_phase", "metric")})


def _study_with(tmp_path, stored_prediction) -> optuna.Study:
    """A trial stored with this prediction attribute, as any version of autotune wrote it."""
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"), study_name="old",
                                directions=["minimize", "minimize"])
    dist = {"dtype": optuna.distributions.CategoricalDistribution(["fp32", "fp16"])}
    measurement = {"status": "ok", "backend": "cuda", "device_name": "NVIDIA H200", "peak_metric": "cuda_process_peak",
                   "latencies_s": [1.0, 1.0, 1.0], "peak_bytes": 3000 * MiB}
    study.add_trial(optuna.trial.create_trial(
        params={"dtype": "fp16"}, distributions=dist, values=[1.0, 3000.0 * MiB],
        user_attrs={"measurement": measurement, "assignment": {"dtype": "fp16"}, "outcome": "feasible",
                    "prediction": stored_prediction},
        constraints={"memory_over_ceiling": -0.5, "quality_below_floor": 0.0}))
    return study


def test_an_old_stored_prediction_reads_back_through_the_ledger_and_the_report(tmp_path):
    from autotune.report.trials import study_rows

    study = _study_with(tmp_path, FIRST_STORED)
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=8000 * MiB, device="cuda")
    (record,) = ledger.records_of(study, target, None)
    assert record.prediction == Prediction.from_dict(FIRST_STORED)
    (row,) = study_rows(study).rows
    assert row.predicted_bytes == 3200 * MiB


def test_an_unreadable_stored_prediction_is_left_out_and_the_trial_still_reads(tmp_path, caplog):
    study = _study_with(tmp_path, {"total_bytes": 1})
    target = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=8000 * MiB, device="cuda")
    with caplog.at_level(logging.WARNING, logger="autotune.search.ledger"):
        (record,) = ledger.records_of(study, target, None)
    assert record.prediction is None and record.outcome == "feasible"
    assert "trial 0: its stored prediction is left out" in caplog.text

"""The measurement codec: what today's worker and study storages write comes back key for key,
and what older versions wrote still reads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.measure.backends.math_flags import MathFlags
from autotune.measure.records import DeviceInfo, Measurement, Phases, QualityScores
from autotune.measure.timing import timing_stats

FLAGS = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": True, "float32_matmul_precision": "highest",
         "fp16_reduced_precision_reduction": True, "bf16_reduced_precision_reduction": True,
         "cudnn_benchmark": False, "cudnn_deterministic": False}

#: A CPU trial as the worker and the measurer wrote it before the records were typed.
CPU_TRIAL = {
    "status": "ok", "backend": "cpu", "device_name": "AMD EPYC", "peak_metric": "cpu_live_tensor_peak",
    "latencies_s": [0.5, 0.4, 0.6], "peak_bytes": 9000,
    "memory": {"cpu_live_tensor_peak": 9000, "resident_weights": 4000, "peak_rss": 90000,
               "host_rss_peak": 100000, "host_rss_before": 80000},
    "timings": {"load_weights_s": 1.0, "copy_weights_s": 0.1, "build_s": 1.2, "apply_s": 0.2,
                "to_device_s": 0.0, "first_run_s": 0.7, "warmup_1_s": 0.5, "warmup_2_s": 0.45,
                "timed_s": 1.6, "compile_s": 0.2, "release_s": 0.01, "spawn_s": 3.0, "import_s": 2.5,
                "device_setup_s": 0.01, "wall_s": 8.0, "overhead_s": 4.75},
    "device_info": {"math_flags": FLAGS, "reference_math_flags": {**FLAGS, "cudnn_allow_tf32": False},
                    "worker_clean_after": True, "worker_pid": 4242},
    "error": None, "log_path": "/tmp/trial-0001.log",
    "timing": timing_stats([0.5, 0.4, 0.6]).to_dict(),
    "conditions": {"before": {"load_average_1m": 1.5}, "after": {"load_average_1m": 1.75}},
    "quality": {"psnr_db": 41.2, "ssim": 0.99, "data_range": 1.0, "nonfinite_fraction": 0.0,
                "output_std": 0.2, "reference_std": 0.21, "latent_rel_error": 0.01, "denoiser_sqnr_db": 38.0},
}

#: A CUDA out-of-memory trial: the backend wrote its setup keys even when they were None.
CUDA_OOM = {
    "status": "oom", "backend": "cuda", "device_name": "NVIDIA H200", "peak_metric": "cuda_process_peak",
    "latencies_s": [], "peak_bytes": None,
    "memory": {"cuda_max_reserved": 7 * 2**30, "cuda_context": 2**29, "oom_requested_bytes": 2**30,
               "oom_excess_bytes": 2**29},
    "timings": {"build_s": 1.0, "apply_s": 0.5, "to_device_s": 0.4, "release_s": 0.1, "wall_s": 2.0,
                "overhead_s": 2.0},
    "device_info": {"device_name": "NVIDIA H200", "total_memory_bytes": 150 * 2**30,
                    "cuda_context_bytes": 2**29, "cuda_context_source": "floor (NVML gave no reading)",
                    "ceiling_mode": "native", "memory_fraction": None, "emulated_headroom_bytes": 0,
                    "nvml_source": "none", "nvml_baseline_used_bytes": None, "driver": None,
                    "pytorch_cuda_alloc_conf": "", "math_flags": FLAGS, "worker_clean_after": False},
    "error": "OutOfMemoryError: CUDA out of memory.", "log_path": None,
    "timing": {}, "conditions": {}, "quality": {},
}


@pytest.mark.parametrize("stored", [CPU_TRIAL, CUDA_OOM], ids=["cpu", "cuda-oom"])
def test_what_today_writes_comes_back_key_for_key(stored):
    m = Measurement.from_dict(json.loads(json.dumps(stored)))
    assert json.loads(json.dumps(m.to_dict())) == stored


def test_a_load_counts_every_phase_between_the_worker_start_and_the_timed_runs():
    phases = Phases(spawn_s=9.0, load_weights_s=1.0, copy_weights_s=2.0, build_s=4.0, to_device_s=8.0,
                    apply_s=16.0, first_run_s=32.0, warmup_s=(64.0,), timed_s=128.0)
    assert phases.load_s == 63.0  # not the start, the warm-ups after the first run, the timed runs
    assert Phases().load_s == 0.0


def test_the_records_are_typed():
    m = Measurement.from_dict(CPU_TRIAL)
    assert m.phases.warmup_s == (0.5, 0.45) and m.phases.spawn_s == 3.0
    assert m.phases.measured_s == pytest.approx(0.7 + 0.5 + 0.45 + 1.6)
    assert m.memory.host_rss_peak == 100000 and m.memory.cuda_context is None
    assert m.device_info.math_flags == MathFlags(**FLAGS) and m.device_info.worker_pid == 4242
    assert m.timing.median_s == 0.5 and m.timing.runs == 3
    assert m.conditions_before.load_average_1m == 1.5 and m.conditions_after.load_average_1m == 1.75
    assert m.quality == QualityScores(**CPU_TRIAL["quality"])
    assert m.overhead_s == 4.75


def test_an_unjudged_untimed_trial_has_no_statistics_and_no_scores():
    m = Measurement.from_dict(CUDA_OOM)
    assert m.timing is None and m.quality is None and m.conditions_before is None
    assert m.memory.oom_excess_bytes == 2**29 and m.device_info.ceiling_mode == "native"


def test_an_older_version_reads_and_keeps_the_keys_it_had():
    """A measurement of an earlier version (benchmarks/results, 2026-11-26): `load_s` and
    `device_total_bytes` are no fields today; they read, and are written back as they came."""
    path = Path(__file__).parents[2] / "benchmarks/results/2026-11-26-nvidia-h200.json"
    stored = json.loads(path.read_text())["ladder"][0]["measurement"]
    m = Measurement.from_dict(stored)
    assert m.phases.first_run_s == stored["timings"]["first_run_s"] and m.phases.extra == {"load_s": stored["timings"]["load_s"]}
    assert m.device_info.extra == {"device_total_bytes": stored["device_info"]["device_total_bytes"]}
    assert m.memory.nvml_process_peak == stored["peak_bytes"]
    written = m.to_dict()
    for key, value in stored.items():
        if isinstance(value, dict):
            assert {k: written[key].get(k) for k in value} == value, key
        else:
            assert written[key] == value, key
    assert Measurement.from_dict(written) == m


def test_a_device_info_without_cuda_setup_writes_only_what_it_holds():
    assert DeviceInfo(worker_pid=1).to_dict() == {"worker_pid": 1}
    assert Phases().to_dict() == {} and Phases(warmup_s=(1.0,)).to_dict() == {"warmup_1_s": 1.0}


def test_fill_takes_what_the_other_holds():
    mine = Phases(build_s=1.0, warmup_s=(0.5,), wall_s=5.0)
    mine.fill(Phases(spawn_s=2.0, wall_s=None))  # no warm-up runs: the ones measured stay
    assert mine == Phases(spawn_s=2.0, build_s=1.0, warmup_s=(0.5,), wall_s=5.0)

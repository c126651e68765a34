"""The profile's typed sections (plain_record.py and its records): a profile written before
they were typed reads back and writes the same YAML; read as leniently as the free mappings were."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from autotune.errors import ProfileError
from autotune.hardware import Fingerprint
from autotune.measure.timing import TimingRecord, timing_stats
from autotune.profiles.profile import Profile
from autotune.search.confirm import Confirmation, ConfirmedCandidate
from autotune.search.summary import QualitySummary, RefusedTrial, SearchSummary

#: Written by the code before the sections were typed (r-typed-profile's base, f8d32c0): a faked
#: search with an emulated ceiling, a quality guard that refused a trial, and a confirmation.
BEFORE = """\
schema_version: 2
created: '2026-12-01T00:00:00+00:00'
target:
  model: builtin:tiny-sd
  height: 64
  width: 64
  batch: 1
  steps: 2
  max_vram: 62914560
  device: cpu
  pipeline_class: null
  prompt: a photo of an astronaut riding a horse on mars
  frames: null
  call_args: {}
  max_ram: null
fingerprint:
  device: cuda
  device_name: null
  total_memory_bytes: null
  compute_capability: '9.0'
  driver: null
  versions:
    python: 3.11.7
    torch: 2.13.0+cpu
    diffusers: 0.42.1
    transformers: 5.24.0
    accelerate: 1.15.0
    optuna: 5.0.0
    xformers: not installed
    autotune: 0.1.0
  model_identity: builtin:tiny-sd
  cuda_context_bytes: 524288000
  cuda_context_source: null
  ceiling_mode: emulated
  memory_fraction: 0.25
  emulated_headroom_bytes: null
  nvml_source: null
  nvml_baseline_used_bytes: null
  pytorch_cuda_alloc_conf: expandable_segments:True
  math_flags:
    tf32_matmul: false
    cudnn_benchmark: true
settings:
  dtype: fp16
  fuse_qkv: false
  layerwise_fp8: false
  channels_last: false
  quantize: none
  offload: none
  attention: sdpa
  attention_backend: native
  cache: none
  vae_slicing: false
  vae_tiling: false
  compile: none
measurements:
  latency_median_s: 1.0
  latency_p90_s: 1.0
  peak_bytes: 41943040
  peak_metric: fake_peak
  runs: 3
  memory: {}
  predicted_peak_bytes: null
  timing:
    runs: 5
    median_s: 1.0
    ci_low_s: null
    ci_high_s: null
    min_s: 0.9
    max_s: 1.1
    iqr_s: 0.12500000000000022
    ci_rel_half_width: null
    spread: 0.12500000000000022
  phases:
    spawn_s: 0.512
    build_s: 1.25
    warmup_1_s: 0.9
  quality:
    psnr_db: 41.5
    ssim: 0.98
  quality_against: 'not judged: the search had no quality guard'
search:
  trials_measured: 6
  feasible: 4
  over_ceiling: 2
  over_ram: 0
  below_quality: 0
  oom: 0
  failed: 0
  pruned_by_planner: 0
  proposals: 11
  interrupted: 0
  reused: 0
  stopped_by: trials
  median_overhead_s: null
  amortize_images: null
  quality:
    min_psnr_db: 30.0
    reference:
      dtype: fp32
    against: the fp32 reference (every knob at its exact default, without the memory
      ceiling)
    reference_dtype: fp32
    reference_made: without the memory ceiling
    problem: null
    allow_unjudged: false
    issues:
    - trial: 10
      kind: exact_changed
      issue: 'vae_slicing=True changed the output: 100% of its output is NaN or infinite;
        these settings are declared exact, so this is a bug in the knob (or the device),
        not a trade-off'
  sampler: TPESampler
  seed: 0
  duration_s: 0.35
  study_name: builtin-tiny-sd-64x64-b1-2e104d69-20261202T013949716707
  storage: runs/studies.db
confirmation:
  rounds: 12
  runs_per_round: 3
  candidates:
  - number: 1
    settings:
      dtype: fp16
    search_latency_s: 1.0
    confirmed_latency_s: 1.0
    peak_bytes: 41943040
    vs_winner: 1.0
    sessions: 2
    p_value_holm: null
    round_medians_s:
    - 1.0
    - 1.0
  - number: 2
    settings:
      dtype: bf16
    search_latency_s: 1.1
    confirmed_latency_s: 1.2
    peak_bytes: 41943040
    vs_winner: 1.2
    sessions: 2
    p_value_holm: 0.00048828125
    round_medians_s:
    - 1.2
    - 1.2
  winner: 1
  runner_up: 2
  margin: 0.19999999999999996
  p_value: 0.00048828125
  significant: true
  decided_by: latency
  note: ''
  sessions: 2
  reference: 0
  speedup: 1.8
  speedup_ci:
  - 1.6
  - 2.0
  equivalence_margin: 0.02
compile_artifacts: null
alternatives:
- settings:
    dtype: fp16
    fuse_qkv: false
    layerwise_fp8: false
    channels_last: false
    quantize: none
    offload: none
    attention: sdpa
    attention_backend: native
    cache: none
    vae_slicing: true
    vae_tiling: false
    compile: none
  measurements:
    latency_median_s: 1.3
    latency_p90_s: 1.3
    peak_bytes: 31457280
    peak_metric: fake_peak
    runs: 3
    memory: {}
    predicted_peak_bytes: null
    timing: {}
    phases: {}
    quality: {}
    quality_against: 'not judged: the search had no quality guard'
"""


def test_a_profile_written_before_the_typed_sections_writes_the_same_yaml():
    profile = Profile.from_dict(yaml.safe_load(BEFORE))
    assert profile.to_yaml() == BEFORE
    assert Profile.from_dict(yaml.safe_load(profile.to_yaml())).to_yaml() == BEFORE


def test_the_sections_read_as_typed_records():
    profile = Profile.from_dict(yaml.safe_load(BEFORE))
    fp = profile.fingerprint
    assert isinstance(fp, Fingerprint) and fp.device == "cuda" and fp.emulated and fp.memory_fraction == 0.25
    assert fp.model_identity == "builtin:tiny-sd" and fp.versions["autotune"]
    assert fp.extra["math_flags"] == {"tf32_matmul": False, "cudnn_benchmark": True}  # unknown: kept
    search = profile.search
    assert isinstance(search, SearchSummary) and search.trials_measured == 6 and search.stopped_by == "trials"
    assert isinstance(search.quality, QualitySummary) and search.quality.min_psnr_db == 30.0
    assert search.quality.issues == (RefusedTrial(trial=10, kind="exact_changed", issue=search.quality.issues[0].issue),)
    conf = profile.confirmation
    assert isinstance(conf, Confirmation) and conf.winner == 1 and conf.significant
    assert [c.number for c in conf.candidates] == [1, 2] and isinstance(conf.candidates[1], ConfirmedCandidate)
    assert conf.candidate(2).vs_winner == pytest.approx(1.2) and conf.candidate(None) is None
    timing = profile.best.timing
    assert isinstance(timing, TimingRecord) and timing.runs == 5 and timing.median_s == 1.0
    assert not profile.alternatives[0].timing  # written `timing: {}`


def test_a_section_made_in_code_writes_what_its_writer_wrote():
    stats = timing_stats([0.9, 1.0, 1.1])
    assert stats.record().to_dict() == stats.to_dict()
    conf = Confirmation(rounds=6, runs_per_round=3, candidates=(ConfirmedCandidate(number=1, settings={}),),
                        winner=1)
    data = conf.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(Confirmation) if f.name not in ("extra", "layout")]
    assert data["candidates"][0]["number"] == 1 and isinstance(data["candidates"], list)
    assert Confirmation.from_dict(data) == conf


def test_a_field_set_after_the_read_is_written():
    fp = Fingerprint.from_dict({"device": "cpu"})
    assert dataclasses.replace(fp, device_name="Other CPU").to_dict() == {"device": "cpu", "device_name": "Other CPU"}
    mistyped = Fingerprint.from_dict({"device_name": 5, "device": "cpu"})
    assert mistyped.to_dict() == {"device_name": 5, "device": "cpu"}
    assert dataclasses.replace(mistyped, device_name="CPU").to_dict() == {"device_name": "CPU", "device": "cpu"}


@pytest.mark.parametrize("section, value", [
    ("fingerprint", {"device_name": 5, "total_memory_bytes": "8GB", "versions": ["torch"]}),
    ("search", {"trials_measured": "many", "quality": "yes", "stopped_by": None}),
    ("confirmation", {}),
    ("confirmation", {"winner": "1", "candidates": [1, 2], "significant": "yes"}),
    ("confirmation", {"candidates": [{"number": "one", "new_key": 1}]}),
])
def test_a_value_of_an_unexpected_type_is_kept_as_it_came(section, value):
    data = yaml.safe_load(BEFORE)
    data[section] = value
    profile = Profile.from_dict(data)
    assert profile.to_dict()[section] == value
    assert Profile.from_dict(yaml.safe_load(profile.to_yaml())).to_dict()[section] == value


def test_a_mistyped_field_reads_as_unknown():
    data = yaml.safe_load(BEFORE)
    data["fingerprint"]["device_name"] = 5
    data["search"]["trials_measured"] = "many"
    profile = Profile.from_dict(data)
    assert profile.fingerprint.device_name is None and profile.search.trials_measured is None


@pytest.mark.parametrize("section, value", [
    ("fingerprint", None), ("fingerprint", 3), ("confirmation", [1]), ("confirmation", "yes"),
])
def test_a_section_that_is_no_mapping_is_refused_as_before(section, value):
    data = yaml.safe_load(BEFORE)
    data[section] = value
    with pytest.raises(ProfileError):
        Profile.from_dict(data)

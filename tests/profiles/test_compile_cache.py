"""Compiled profiles: the artifacts' key, the fallback, and (slow tier) the first call they save."""
from __future__ import annotations

import dataclasses
import warnings

import pytest

from autotune.profiles import compile_cache
from autotune.profiles.profile import CompileArtifacts
from autotune.target import Target

TARGET = Target(model="builtin:tiny-sd", height=64, width=64, batch=1, steps=2, max_vram=2**31)


def test_the_key_names_what_compiled_code_depends_on():
    key = compile_cache.artifact_key({"dtype": "fp32", "compile": "full"}, TARGET, "cpu")
    assert {"torch", "triton", "device_name", "dtype", "compile", "height", "width", "batch"} <= set(key)
    other = compile_cache.artifact_key({"dtype": "fp32", "compile": "full"}, dataclasses.replace(TARGET, height=128), "cpu")
    assert compile_cache.differences(key, other) == ["height (64 there, 128 here)"]


def test_a_key_that_differs_falls_back_with_one_warning(tmp_path):
    key = compile_cache.artifact_key({"dtype": "fp32", "compile": "full"}, TARGET, "cpu")
    record = CompileArtifacts(file="p.compile.bin", sha256="x", key={**key, "torch": "0.0"})
    with pytest.warns(UserWarning, match=r"first call compiles cold: torch \('0.0' there"):
        assert not compile_cache.load(record, tmp_path / "p.yaml", key)


def test_a_tampered_sidecar_is_not_loaded(tmp_path):
    key = compile_cache.artifact_key({"dtype": "fp32", "compile": "full"}, TARGET, "cpu")
    (tmp_path / "p.compile.bin").write_bytes(b"not what was saved")
    record = CompileArtifacts(file="p.compile.bin", sha256="0" * 64, key=key)
    with pytest.warns(UserWarning, match="does not match the profile's hash"):
        assert not compile_cache.load(record, tmp_path / "p.yaml", key)


@pytest.mark.slow
def test_a_second_process_with_the_artifacts_reaches_its_first_image_sooner(tmp_path):
    """tiny-sd, compile=full, CPU: cold compile vs the artifacts, each in a fresh process with an
    empty inductor cache; then a changed key falls back with the warning."""
    from autotune import apply_profile, load_pipeline
    from autotune.profiles.profile import Profile, ProfileEntry
    from autotune.profiles.warmup import warmup

    entry = ProfileEntry(settings={"compile": "full"}, latency_median_s=0.1, latency_p90_s=0.1,
                         peak_bytes=1, peak_metric="cpu_live_tensor_peak", runs=1)
    path = tmp_path / "compiled.yaml"
    Profile(target=TARGET, fingerprint={"device": "cpu"}, best=entry).save(path)
    record = warmup(path).compile_artifacts
    assert (tmp_path / record.file).stat().st_size == record.bytes > 0
    first = record.first_call_s
    assert first["with_artifacts"] < first["cold"], first
    profile = Profile.load(path)
    profile.compile_artifacts.key["torch"] = "0.0"
    profile.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_profile(load_pipeline(path), path)
    assert any("compiles cold: torch" in str(w.message) for w in caught)

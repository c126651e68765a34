"""Profiles: saved as versioned safe YAML, atomically; read back strictly."""
from __future__ import annotations

import os

import pytest
import yaml

from autotune import knobs
from autotune.errors import AutotuneError, ProfileError
from autotune.profiles.profile import SCHEMA_VERSION, Profile, ProfileEntry, atomic_write_text
from autotune.target import Target


def default_settings():
    return {k.name: k.default for k in knobs.all_knobs()}


def make_profile(**settings) -> Profile:
    target = Target(model="builtin:tiny-sd", height=128, width=128, batch=1, steps=4,
                    max_vram=8 * 2**30, device="cpu", pipeline_class="StableDiffusionPipeline")
    best = ProfileEntry(settings={**default_settings(), **settings}, latency_median_s=0.5,
                        latency_p90_s=0.6, peak_bytes=123 * 2**20, peak_metric="rss_delta", runs=5,
                        memory={"weights": 40 * 2**20})
    alt = ProfileEntry(settings={**default_settings(), "dtype": "bf16"}, latency_median_s=0.7,
                       latency_p90_s=0.8, peak_bytes=100 * 2**20, peak_metric="rss_delta", runs=5)
    return Profile(target=target, fingerprint={"device_name": "Test CPU", "torch": "2.x"}, best=best,
                   search={"trials": 12, "objective": "latency"}, alternatives=[alt])


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "tiny.yaml"
    profile = make_profile(vae_slicing=True, attention="sliced")
    assert profile.save(path) == path
    return profile, path


def write_variant(tmp_path, mutate, name="variant.yaml"):
    data = make_profile().to_dict()
    mutate(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- round trip ------------------------------------------------------------------------------------

def test_save_load_round_trip(saved):
    profile, path = saved
    loaded = Profile.load(path)
    assert loaded.to_dict() == profile.to_dict()
    assert loaded.target == profile.target
    assert loaded.settings == profile.settings
    assert loaded.settings["vae_slicing"] is True and loaded.settings["attention"] == "sliced"
    assert loaded.best == profile.best
    assert loaded.alternatives == profile.alternatives
    assert loaded.schema_version == SCHEMA_VERSION == 2


def test_saved_file_is_plain_safe_yaml(saved):
    profile, path = saved
    text = path.read_text()
    assert "!!python" not in text and "!!" not in text
    data = yaml.safe_load(text)
    assert data == profile.to_dict()
    assert data["schema_version"] == 2
    assert list(data["settings"]) == [k.name for k in knobs.all_knobs()]
    assert data["target"]["height"] == 128
    assert text == profile.to_yaml()


def test_to_yaml_uses_safe_dump(monkeypatch):
    calls = []
    real = yaml.safe_dump

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    def forbidden(*args, **kwargs):  # pragma: no cover - only runs if the code uses unsafe dump
        raise AssertionError("yaml.dump used instead of yaml.safe_dump")

    monkeypatch.setattr(yaml, "safe_dump", spy)
    monkeypatch.setattr(yaml, "dump", forbidden)
    text = make_profile().to_yaml()
    assert calls
    assert yaml.safe_load(text)["schema_version"] == 2


def test_settings_are_canonical_order_after_load(tmp_path):
    def shuffle(data):
        data["settings"] = dict(reversed(list(data["settings"].items())))

    loaded = Profile.load(write_variant(tmp_path, shuffle))
    assert list(loaded.settings) == [k.name for k in knobs.all_knobs()]


def test_load_refuses_python_tags(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text(make_profile().to_yaml() + "extra: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ProfileError):
        Profile.load(path)


# ---- strict load -----------------------------------------------------------------------------------

def test_load_rejects_corrupt_yaml(tmp_path):
    path = tmp_path / "corrupt.yaml"
    path.write_text("schema_version: 1\nsettings: {dtype: fp16\n  - : ][\n")
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert "not valid YAML" in str(info.value)
    assert str(path) in str(info.value)


def test_load_reads_schema_version_1(tmp_path):
    """A version-1 profile (no timing, phases or confirmation) is still read, as version 2."""
    def as_v1(d):
        d["schema_version"] = 1
        d.pop("confirmation", None)
        for key in ("timing", "phases"):
            d["measurements"].pop(key, None)

    loaded = Profile.load(write_variant(tmp_path, as_v1))
    assert loaded.schema_version == 2 and loaded.confirmation is None
    assert not loaded.best.timing and loaded.best.timing.to_dict() == {} and loaded.best.phases == {}


def test_load_rejects_a_schema_from_the_future(tmp_path):
    path = write_variant(tmp_path, lambda d: d.update(schema_version=3))
    with pytest.raises(ProfileError, match="schema_version 3"):
        Profile.load(path)


def test_load_rejects_missing_schema_version(tmp_path):
    path = write_variant(tmp_path, lambda d: d.pop("schema_version"))
    with pytest.raises(ProfileError, match="schema_version"):
        Profile.load(path)


def test_load_rejects_missing_settings(tmp_path):
    path = write_variant(tmp_path, lambda d: d.pop("settings"))
    with pytest.raises(ProfileError, match="settings"):
        Profile.load(path)


@pytest.mark.parametrize("bad", [None, ["dtype", "fp16"], "fp16"])
def test_load_rejects_non_mapping_settings(tmp_path, bad):
    path = write_variant(tmp_path, lambda d: d.update(settings=bad))
    with pytest.raises(ProfileError, match="settings"):
        Profile.load(path)


def test_load_rejects_unknown_knob(tmp_path):
    path = write_variant(tmp_path, lambda d: d["settings"].update(warp_drive=True))
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert "warp_drive" in str(info.value)
    assert str(path) in str(info.value)


def test_load_rejects_unknown_knob_in_alternatives(tmp_path):
    path = write_variant(tmp_path, lambda d: d["alternatives"][0]["settings"].update(warp_drive=1))
    with pytest.raises(ProfileError, match="warp_drive"):
        Profile.load(path)


@pytest.mark.parametrize(("knob", "value"), [("dtype", "fp64"), ("vae_slicing", "yes"),
                                             ("layerwise_fp8", 1), ("offload", "everywhere")])
def test_load_rejects_bad_value(tmp_path, knob, value):
    path = write_variant(tmp_path, lambda d: d["settings"].update({knob: value}))
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert knob in str(info.value)


def test_load_rejects_conflicting_settings(tmp_path):
    path = write_variant(tmp_path, lambda d: d["settings"].update(compile="full", offload="sequential"))
    with pytest.raises(ProfileError, match="conflicts"):
        Profile.load(path)


def test_load_rejects_bad_target(tmp_path):
    path = write_variant(tmp_path, lambda d: d["target"].update(height=100))
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert "multiple of 8" in str(info.value)


def test_load_rejects_unknown_target_field(tmp_path):
    path = write_variant(tmp_path, lambda d: d["target"].update(colour="red"))
    with pytest.raises(ProfileError, match="colour"):
        Profile.load(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_load_rejects_non_mapping_top_level(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match="mapping"):
        Profile.load(path)


def test_load_rejects_missing_measurements(tmp_path):
    path = write_variant(tmp_path, lambda d: d["measurements"].pop("latency_median_s"))
    with pytest.raises(ProfileError, match="latency_median_s"):
        Profile.load(path)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert "does not exist" in str(info.value)
    assert "nope.yaml" in str(info.value)


def test_load_directory(tmp_path):
    with pytest.raises(ProfileError):
        Profile.load(tmp_path)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d.update(target=5), id="target-int"),
        pytest.param(lambda d: d.update(fingerprint=None), id="fingerprint-none"),
        pytest.param(lambda d: d.update(measurements="fast"), id="measurements-str"),
        pytest.param(lambda d: d.update(alternatives=7), id="alternatives-int"),
        pytest.param(lambda d: d["target"].pop("height"), id="target-missing-height"),
    ],
)
def test_load_rejects_malformed_sections_as_profile_error(tmp_path, mutate):
    with pytest.raises(ProfileError):
        Profile.load(write_variant(tmp_path, mutate))


@pytest.mark.parametrize("section", ["target", "fingerprint"])
def test_load_rejects_string_section_as_profile_error(tmp_path, section):
    # dict("abc") raises ValueError, not TypeError: it must still come out as a ProfileError.
    path = write_variant(tmp_path, lambda d: d.update({section: "abc"}))
    with pytest.raises(ProfileError) as info:
        Profile.load(path)
    assert str(path) in str(info.value)


def test_profile_error_is_autotune_error(tmp_path):
    with pytest.raises(AutotuneError):
        Profile.load(tmp_path / "missing.yaml")


# ---- atomic write ----------------------------------------------------------------------------------

def test_atomic_write_leaves_no_temp_files(tmp_path):
    folder = tmp_path / "profiles"
    path = folder / "a.yaml"
    make_profile().save(path)  # creates the folder
    make_profile(dtype="bf16").save(path)  # overwrites
    assert sorted(p.name for p in folder.iterdir()) == ["a.yaml"]
    assert Profile.load(path).settings["dtype"] == "bf16"


def test_failing_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.yaml"
    make_profile(dtype="fp32").save(path)
    before = path.read_text()

    def broken_replace(src, dst, *args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        make_profile(dtype="bf16").save(path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]
    assert Profile.load(path).settings["dtype"] == "fp32"


def test_failing_write_midway_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def broken_fsync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_text_returns_path_and_writes(tmp_path):
    path = tmp_path / "deep" / "er" / "x.txt"
    assert atomic_write_text(path, "hello\n") == path
    assert path.read_text() == "hello\n"


@pytest.mark.parametrize("field, value", [
    ("latency_median_s", "fast"), ("latency_p90_s", True), ("peak_bytes", 1.5), ("runs", -1),
    ("peak_bytes", "2GB"), ("memory", [1, 2]),
])
def test_load_rejects_non_numeric_measurements(tmp_path, field, value):
    path = write_variant(tmp_path, lambda d: d["measurements"].update({field: value}))
    with pytest.raises(ProfileError, match=field if field != "memory" else "'memory' must be a mapping"):
        Profile.load(path)


# ---- quality per entry -------------------------------------------------------------------------------

def test_each_entry_keeps_its_quality_and_what_it_is_against(tmp_path):
    profile = make_profile()
    against = "the fp32 reference (every knob at its exact default, without the memory ceiling)"
    for entry in (profile.best, *profile.alternatives):
        entry.quality, entry.quality_against = {"psnr_db": 51.2, "ssim": 0.999}, against
    loaded = Profile.load(profile.save(tmp_path / "q.yaml"))
    assert [(e.quality["psnr_db"], e.quality_against) for e in (loaded.best, *loaded.alternatives)] == [(51.2, against)] * 2


def test_a_profile_written_before_quality_against_still_loads(tmp_path):
    def drop(data):
        data["measurements"].pop("quality_against")
        for alt in data["alternatives"]:
            alt["measurements"].pop("quality_against")

    loaded = Profile.load(write_variant(tmp_path, drop))
    assert loaded.best.quality_against is None and loaded.alternatives[0].quality_against is None


def test_load_rejects_a_quality_against_that_is_not_text(tmp_path):
    path = write_variant(tmp_path, lambda d: d["measurements"].update(quality_against=[1]))
    with pytest.raises(ProfileError, match="quality_against"):
        Profile.load(path)


def test_compile_artifacts_are_a_typed_record_that_writes_the_same_yaml(tmp_path):
    from autotune.profiles.profile import CompileArtifacts

    record = {"file": "p.compile.bin", "sha256": "ab" * 32, "bytes": 123, "key": {"torch": "2.x"},
              "first_call_s": {"cold": 9.5, "with_artifacts": 1.5}}
    profile = make_profile()
    profile.compile_artifacts = CompileArtifacts.from_dict(record)
    loaded = Profile.load(profile.save(tmp_path / "p.yaml"))
    assert loaded.compile_artifacts.file == "p.compile.bin" and loaded.compile_artifacts.bytes == 123
    assert loaded.compile_artifacts.first_call_s["with_artifacts"] == 1.5
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["compile_artifacts"] == record


def test_compile_artifacts_are_read_as_leniently_as_before(tmp_path):
    """A hand-edited record still reads (as it did when it was a free mapping): what is not of the
    expected type is kept as written."""
    from autotune.profiles.profile import CompileArtifacts

    odd = CompileArtifacts.from_dict({"file": "p.bin", "bytes": "many", "note": [1, 2]})
    assert odd.file == "p.bin" and odd.bytes == 0 and odd.key == {}
    assert odd.to_dict()["bytes"] == "many" and odd.to_dict()["note"] == [1, 2]

"""Model identity: one name for every spelling of a model, and what a profile matches by."""
from __future__ import annotations

from helpers.zoo import zoo  # noqa: F401  (session fixture: tiny pipelines saved as folders)

from autotune.models.identity import (
    MODEL_IDENTITY_KEY,
    matches_model,
    model_identity,
    profile_identities,
    same_model,
    split_identity,
)
from autotune.profiles.profile import Profile, ProfileEntry
from autotune.target import Target

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_identity_is_the_same_for_every_spelling_of_a_folder(zoo, monkeypatch):  # noqa: F811
    folder = zoo["sd"]
    monkeypatch.chdir(folder.parent)
    spellings = ["sd", "./sd", f"../{folder.parent.name}/sd", str(folder), str(folder) + "/"]
    assert {model_identity(s) for s in spellings} == {str(folder.resolve())}
    assert model_identity("builtin:tiny-sd") == "builtin:tiny-sd"
    assert model_identity("sd-other") == "sd-other"  # no such folder: a hub id, no commit known


def test_same_model_compares_commits_only_where_both_are_known():
    assert same_model(f"org/m@{SHA}", "org/m")
    assert same_model(f"org/m@{SHA}", f"org/m@{SHA}")
    assert not same_model(f"org/m@{SHA}", "org/m@" + "f" * 40)
    assert not same_model("org/m", "org/n")
    assert same_model("/abs/path@x", "/abs/path@x") and not same_model("/abs/a", "/abs/b")


def test_split_identity_finds_a_commit_only_on_hub_ids():
    assert split_identity(f"org/m@{SHA}") == ("org/m", SHA)
    assert split_identity("org/m@main") == ("org/m@main", None)
    assert split_identity("/abs/m@" + SHA) == ("/abs/m@" + SHA, None)
    assert split_identity("builtin:tiny-sd") == ("builtin:tiny-sd", None)


def test_a_profile_matches_by_its_model_or_the_identity_it_recorded():
    profile = Profile(target=Target(model="rel/sd", height=64, width=64, batch=1, steps=2, max_vram=2**30),
                      fingerprint={MODEL_IDENTITY_KEY: "/abs/sd"},
                      best=ProfileEntry(settings={}, latency_median_s=1.0, latency_p90_s=1.0, peak_bytes=1,
                                        peak_metric="cpu_live_tensor_peak", runs=1))
    assert profile_identities(profile) == ["rel/sd", "/abs/sd"]
    assert matches_model(profile, "/abs/sd") and matches_model(profile, f"rel/sd@{SHA}")
    assert not matches_model(profile, "/abs/other")
